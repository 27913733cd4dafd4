"""Trace summaries refresh cost: an hour of attempts (default 200,000, i.e. ~55 jobs/s across 20 tasks) in a
real SQLite file; times the first run (one hour backfill) and a steady run (the 7-minute window of a run two
minutes later), split into the read side (off the writer) and the write side (holding the write lock).

    python bench/bench_trace_summaries.py [--attempts 200000]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ashjobs.apps import trace_summaries as ts
from ashjobs.store import Store

T0 = 1_767_225_600.0


def timed_run(store: Store, now: float) -> tuple[float, float, int]:
    t = time.perf_counter()
    start, summaries = ts.compute(store.conn, now)
    read = time.perf_counter() - t
    t = time.perf_counter()
    with store.tx() as conn:
        ts.apply(conn, now, start, summaries)
    return read, time.perf_counter() - t, len(summaries)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--attempts", type=int, default=200_000)
    n = ap.parse_args().attempts
    with tempfile.TemporaryDirectory() as d:
        store = Store(Path(d) / "ashjobs.db")
        rng = random.Random(7)
        with store.tx() as conn:
            conn.executemany(
                "INSERT INTO attempts (job_id, attempt, task, queue, node, started_at, finished_at, outcome, "
                "error, duration) VALUES (?, 1, ?, 'default', 'n', ?, ?, ?, NULL, ?)",
                [(i, f"task{i % 20}", T0, T0 - 3600 + i * 3600 / n, "success" if rng.random() < 0.95 else "failure",
                  rng.expovariate(20)) for i in range(n)])
        backfill = timed_run(store, T0)
        steady = timed_run(store, T0 + 120)
        store.close()
    print(f"attempts in the last hour: {n}")
    print(f"first run (1 h backfill): read {backfill[0] * 1000:.0f} ms, write {backfill[1] * 1000:.0f} ms, "
          f"{backfill[2]} buckets")
    print(f"steady run (7 min window): read {steady[0] * 1000:.0f} ms, write {steady[1] * 1000:.0f} ms, "
          f"{steady[2]} buckets")
    print(json.dumps({"bench": "trace_summaries", "attempts_per_hour": n,
                      "backfill_read_ms": round(backfill[0] * 1000, 1), "backfill_write_ms": round(backfill[1] * 1000, 1),
                      "steady_read_ms": round(steady[0] * 1000, 1), "steady_write_ms": round(steady[1] * 1000, 1)}))


if __name__ == "__main__":
    main()
