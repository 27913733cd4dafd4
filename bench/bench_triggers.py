"""Trigger scheduler throughput: 100,000 records of which 10,000 match; time from the scheduler's start to
every worker job committed.

Runs a real Store (temp dir, synchronous=full) and the daemon's Writer; the scheduler pages through the
matching ids (keyset pagination) and enqueues each page's worker jobs with one executemany, one writer
unit per page, exactly as the scheduler task does. A second run (nothing new to enqueue: the workers are
still incomplete, so uniqueness keeps them) shows the cost of a slot that finds only queued records.

    python bench/bench_triggers.py [--records 100000] [--matching 10000]
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

from ashjobs import config, triggers
from ashjobs.resources import ActionCall, Resource, Transition
from ashjobs.store import Store, Writer
from ashjobs.store import resources as rsql

FLOOR_S = 2.0
NOW = 1_800_000_000.0

device = Resource("bench_device", fields={"site": "text", "last_seen_at": "timestamp", "level": "int"},
                  states=["ok", "stale"], initial="ok", transitions=[Transition("mark", ["ok"], "stale")],
                  indexes=[("status", "last_seen_at")])


@device.action("mark")
def _mark(call: ActionCall) -> None:
    call.transition("mark")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--matching", type=int, default=10_000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config.from_dict({"trigger": [{"name": "stale_devices", "resource": "bench_device", "action": "mark",
                                             "where": {"status": "ok", "last_seen_at": {"older_than": "1h"}}}]},
                               data_dir=tmp)
        store = Store.from_config(cfg)
        rng = random.Random(7)
        stale = set(rng.sample(range(a.records), a.matching))
        with store.tx() as conn:
            rsql.ensure(conn, device)
            conn.executemany(
                'INSERT INTO "res_bench_device" (status, site, last_seen_at, level) VALUES (?, ?, ?, ?)',
                [("ok", f"site-{i % 97}", NOW - (7200 if i in stale else 60), i % 10) for i in range(a.records)])
        trig = triggers.get(cfg, "stale_devices")
        writer = Writer(store)
        try:
            t0 = time.perf_counter()
            fire = triggers.run_scheduler(writer.call, trig, NOW)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            again = triggers.run_scheduler(writer.call, trig, NOW)
            second = time.perf_counter() - t0
        finally:
            writer.close()
        queued = store.conn.execute("SELECT count(*) FROM jobs WHERE task = ?", (triggers.WORK_TASK,)).fetchone()[0]
        store.close()
    assert fire.enqueued == a.matching == queued, (fire, queued)
    assert again.enqueued == 0 and again.matched == a.matching
    ok = first <= FLOOR_S
    print(f"trigger scheduler: {a.records:,} records, {fire.matched:,} matching → {fire.enqueued:,} worker jobs "
          f"enqueued in {first:.3f} s ({fire.enqueued / first:,.0f} jobs/s; floor {FLOOR_S} s: "
          f"{'ok' if ok else 'MISSED'}); re-run with all still queued: {second:.3f} s")
    print(json.dumps({"bench": "trigger_scheduler", "records": a.records, "matching": fire.matched,
                      "enqueued": fire.enqueued, "seconds": round(first, 4), "rerun_seconds": round(second, 4),
                      "jobs_per_second": round(fire.enqueued / first), "floor_seconds": FLOOR_S, "ok": ok}))
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
