"""Foundation benchmark: ashjobs beside Huey's SqliteHuey doing the same work, in one run on one machine.

Measures single enqueues/s (one durable commit each), batched enqueues/s, end-to-end no-op jobs/s (enqueue
20,000, run all to completion with the default durable settings), then idle daemon RSS, `ashjobs --version`
wall time, `ashjobs status` wall time with 1,000,000 jobs, and enqueue/claim rates at 1M rows vs an empty
table. Prints each figure and one JSON line (prefix `BENCH `).

    python bench/bench_queue.py            # full run (~1-2 minutes)
    python bench/bench_queue.py --quick    # smaller counts, for a smoke check
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ashjobs import config  # noqa: E402
from ashjobs.client import Client  # noqa: E402
from ashjobs.clock import SYSTEM  # noqa: E402
from ashjobs.executor import LocalExecutor  # noqa: E402
from ashjobs.services import Services  # noqa: E402
from ashjobs.store import Store, Writer  # noqa: E402
from ashjobs.store import jobs as sql  # noqa: E402


def cfg_for(d: Path, queues: dict[str, int] | None = None) -> config.Config:
    return config.from_dict({"node": {"name": "bench", "data_dir": str(d)}, "queues": queues or {"default": 10}})


def ours_single(d: Path, n: int) -> float:
    with Client(cfg_for(d)) as c:
        t = time.perf_counter()
        for i in range(n):
            c.enqueue("noop", {"i": i})
        return n / (time.perf_counter() - t)


def sqlite_floor_single(d: Path, n: int) -> float:
    """The disk's own ceiling: bare sqlite3, one-column table, WAL + FULL, one commit per insert."""
    import sqlite3

    d.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(d / "raw.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    t = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (v) VALUES (?)", (str(i),))
        conn.execute("COMMIT")
    conn.close()
    return n / (time.perf_counter() - t)


def ours_batched(d: Path, n: int) -> float:
    with Client(cfg_for(d)) as c:
        items = [("noop", {"i": i}) for i in range(n)]
        t = time.perf_counter()
        c.enqueue_many(items)
        return n / (time.perf_counter() - t)


def ours_end_to_end(d: Path, n: int, limit: int) -> float:
    cfg = cfg_for(d, {"default": limit})
    with Client(cfg) as c:
        t0 = time.perf_counter()
        for start in range(0, n, 5000):
            c.enqueue_many([("noop", {"i": i}) for i in range(start, min(n, start + 5000))])
    store = Store.from_config(cfg)
    writer = Writer(store)

    async def main() -> None:
        svc = Services(cfg=cfg, store=store, writer=writer, clock=SYSTEM, node="bench",
                       log=logging.getLogger("bench"))
        ex = LocalExecutor(svc)
        runner = asyncio.create_task(ex.run())
        while ex.finished < n:
            await asyncio.sleep(0.005)
        runner.cancel()

    asyncio.run(main())
    elapsed = time.perf_counter() - t0
    done = store.conn.execute("SELECT count(*) FROM jobs WHERE state = 'completed'").fetchone()[0]
    writer.close()
    store.close()
    assert done == n, f"only {done} of {n} completed"
    return n / elapsed


def huey_rates(d: Path, single_n: int, e2e_n: int) -> dict[str, float]:
    from huey import SqliteHuey

    huey = SqliteHuey(filename=str(d / "huey.db"), fsync=True, results=False)

    @huey.task()
    def noop(i: int) -> None:
        return None

    t = time.perf_counter()
    for i in range(single_n):
        noop(i)
    single = single_n / (time.perf_counter() - t)
    huey.flush()
    t0 = time.perf_counter()
    for i in range(e2e_n):  # Huey has no batch insert: each enqueue is its own commit
        noop(i)
    t_enq = time.perf_counter() - t0
    ran = 0
    while (task := huey.dequeue()) is not None:  # the consumer's loop without its polling delays
        huey.execute(task)
        ran += 1
    e2e = ran / (time.perf_counter() - t0)
    return {"single": single, "batched": e2e_n / t_enq, "end_to_end": e2e}


def cli(*args: str, env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ashjobs", *args], env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def rss_idle(d: Path, env: dict[str, str]) -> float:
    p = subprocess.Popen([sys.executable, "-m", "ashjobs", "run"], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        time.sleep(3.0)
        for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(20)


def wake_latency(d: Path, env: dict[str, str], n: int = 20) -> tuple[float, float]:
    """An idle daemon picking up a job enqueued by another process: inserted_at → attempted_at (ms)."""
    p = subprocess.Popen([sys.executable, "-m", "ashjobs", "run"], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        time.sleep(2.0)
        gaps = []
        with Client(cfg_for(d)) as c:
            for _ in range(n):
                time.sleep(0.2)  # idle between jobs: each one must be noticed, not found by a poll
                r = c.enqueue("noop")
                while (job := c.get(r.id)) is None or job.attempted_at is None:
                    time.sleep(0.002)
                gaps.append((job.attempted_at - job.inserted_at) * 1000)
        return statistics.median(gaps), max(gaps)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(20)


def fill(d: Path, n: int) -> None:
    store = Store(d / "ashjobs.db")
    now = SYSTEM.now()
    states = ["completed"] * 8 + ["available", "discarded"]
    chunk = 100_000
    for start in range(0, n, chunk):
        with store.tx() as conn:
            conn.executemany(
                "INSERT INTO jobs (state, queue, task, args, scheduled_at, inserted_at, completed_at) "
                "VALUES (?, 'default', 'noop', ?, ?, ?, ?)",
                [(states[i % 10], json.dumps({"i": i}), now, now, now) for i in range(start, min(n, start + chunk))])
    store.close()


def claim_rate(d: Path, n: int) -> float:
    store = Store(d / "ashjobs.db")
    t = time.perf_counter()
    claimed = 0
    while claimed < n:
        with store.tx() as conn:
            rows = sql.claim(conn, "default", 10, "bench", SYSTEM.now(), 30)
            sql.finish(conn, [sql.Result(r["id"], r["lease_token"], "success", "bench", 0, 0) for r in rows],
                       SYSTEM.now())
        claimed += len(rows)
        if not rows:
            break
    store.close()
    return claimed / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--limit", type=int, default=10, help="queue concurrency limit for end-to-end (default 10)")
    a = ap.parse_args()
    single_n, batch_n, e2e_n, big_n = (500, 20_000, 5_000, 100_000) if a.quick else (3_000, 100_000, 20_000,
                                                                                      1_000_000)
    tmp = Path(tempfile.mkdtemp(prefix="ashjobs-bench-"))
    out: dict[str, Any] = {"bench": "queue", "python": sys.version.split()[0], "cores": os.cpu_count()}
    try:
        out["sqlite_bare_single_commit_per_s"] = sqlite_floor_single(tmp / "raw", single_n)
        out["ours_single_enqueue_per_s"] = ours_single(tmp / "s", single_n)
        out["ours_batched_enqueue_per_s"] = ours_batched(tmp / "b", batch_n)
        out["ours_end_to_end_per_s"] = ours_end_to_end(tmp / "e", e2e_n, a.limit)
        out["ours_end_to_end_limit100_per_s"] = ours_end_to_end(tmp / "e100", e2e_n, 100)
        (tmp / "h").mkdir()
        h = huey_rates(tmp / "h", single_n, e2e_n)
        out.update({"huey_single_enqueue_per_s": h["single"], "huey_batched_enqueue_per_s": h["batched"],
                    "huey_end_to_end_per_s": h["end_to_end"]})
        out["ratio_single"] = out["ours_single_enqueue_per_s"] / h["single"]
        out["ratio_batched"] = out["ours_batched_enqueue_per_s"] / h["batched"]
        out["ratio_end_to_end"] = out["ours_end_to_end_per_s"] / h["end_to_end"]

        env = {**os.environ, "PYTHONPATH": str(ROOT), "ASHJOBS_DATA_DIR": str(tmp / "cli")}
        env.pop("ASHJOBS_CONFIG", None)
        out["version_wall_ms"] = statistics.median(cli("--version", env=env) for _ in range(10)) * 1000
        out["idle_daemon_rss_mb"] = rss_idle(tmp / "cli", env)
        out["wake_latency_ms_p50"], out["wake_latency_ms_max"] = wake_latency(tmp / "cli", env)

        big = tmp / "big"
        big.mkdir()
        fill(big, big_n)
        big_env = {**env, "ASHJOBS_DATA_DIR": str(big)}
        cli("status", "--json", env=big_env)  # warm the page cache
        out["status_wall_ms_at_1m"] = statistics.median(cli("status", "--json", env=big_env) for _ in range(5)) * 1000
        out["status_rows"] = big_n
        empty = tmp / "empty"
        out["enqueue_per_s_empty"] = ours_single(empty, single_n)
        out["enqueue_per_s_at_1m"] = ours_single(big, single_n)
        out["claim_per_s_empty"] = claim_rate(empty, single_n)
        out["claim_per_s_at_1m"] = claim_rate(big, single_n)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rows = [
        ("single enqueue/s (commit each, FULL)", "ours_single_enqueue_per_s", "huey_single_enqueue_per_s", "ratio_single"),
        ("batched enqueue/s", "ours_batched_enqueue_per_s", "huey_batched_enqueue_per_s", "ratio_batched"),
        (f"end-to-end no-op jobs/s ({e2e_n}, limit {a.limit})", "ours_end_to_end_per_s", "huey_end_to_end_per_s",
         "ratio_end_to_end"),
    ]
    print(f"{'figure':48} {'ashjobs':>12} {'huey-sqlite':>12} {'ratio':>7}")
    for label, ours, theirs, ratio in rows:
        print(f"{label:48} {out[ours]:12,.0f} {out[theirs]:12,.0f} {out[ratio]:6.1f}x")
    print(f"{'end-to-end no-op jobs/s (queue limit 100)':48} {out['ours_end_to_end_limit100_per_s']:12,.0f}")
    print(f"bare sqlite3 insert with a commit each on this disk (the ceiling): "
          f"{out['sqlite_bare_single_commit_per_s']:,.0f}/s")
    print(f"idle daemon RSS: {out['idle_daemon_rss_mb']:.1f} MB")
    print(f"idle daemon picks up a job enqueued by another process: p50 {out['wake_latency_ms_p50']:.1f} ms, "
          f"max {out['wake_latency_ms_max']:.1f} ms")
    print(f"ashjobs --version: {out['version_wall_ms']:.0f} ms")
    print(f"ashjobs status with {big_n:,} jobs: {out['status_wall_ms_at_1m']:.0f} ms")
    print(f"enqueue/s empty vs {big_n:,} rows: {out['enqueue_per_s_empty']:,.0f} vs {out['enqueue_per_s_at_1m']:,.0f}")
    print(f"claim+complete/s empty vs {big_n:,} rows: {out['claim_per_s_empty']:,.0f} vs {out['claim_per_s_at_1m']:,.0f}")
    print("BENCH " + json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}))


if __name__ == "__main__":
    main()
