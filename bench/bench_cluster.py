"""Cluster benchmark on loopback: a scheduler and 3 pollers, each a real `ashjobs run` process.

1. Throughput: no-op routed jobs dispatched through RPC to the pollers and completed, jobs/s.
   (floor 5,000/s on 2 cores)
2. Failover: a poller running a job is SIGKILLed; latency until the job runs on another poller.
   p50, p99 (floor p99 <= lease_ttl + 1 s) and jobs lost (floor 0).

    python bench/bench_cluster.py [--jobs 20000] [--kills 50] [--lease-ttl 2]

Prints the figures and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from cluster_harness import Node, make_secret, start_all  # noqa: E402

from ashjobs import presence  # noqa: E402
from ashjobs.store import Store  # noqa: E402
from ashjobs.store import jobs as sj  # noqa: E402


def _wait(pred, timeout: float, what: str, step: float = 0.01):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(step)


def _available(store: Store, names: set[str]) -> bool:
    rows = store.conn.execute("SELECT node FROM peers WHERE state = 'available'").fetchall()
    return names <= {r[0] for r in rows}


def cluster(root: Path, ttl: float, capacity: int) -> tuple[Node, list[Node]]:
    make_secret(root)
    pollers = [Node(root, f"poller{i}", ["poller"], "p1", capacity=capacity, lease_ttl=f"{ttl:g}s")
               for i in range(1, 4)]
    sched = Node(root, "sched", ["scheduler"], peers=[p.address for p in pollers], lease_ttl=f"{ttl:g}s",
                 extra='\n[store]\nsynchronous = "normal"\n')
    start_all([*pollers, sched])
    return sched, pollers


def throughput(root: Path, n_jobs: int, ttl: float) -> dict[str, float]:
    sched, pollers = cluster(root / "tp", ttl, capacity=2000)
    try:
        store = Store(sched.dir / "ashjobs.db")
        _wait(lambda: _available(store, {p.name for p in pollers}), 30, "pollers available", 0.05)
        with store.tx() as conn:
            sj.insert_many(conn, [sj.NewJob("noop", partition="p1") for _ in range(n_jobs)], time.time())
        t0 = time.monotonic()
        presence.wake(sched.dir)

        def done() -> bool:
            n = store.conn.execute("SELECT count(*) FROM jobs WHERE state = 'completed'").fetchone()[0]
            return bool(n >= n_jobs)

        _wait(done, 600, "all jobs completed", 0.1)
        elapsed = time.monotonic() - t0
        per_node = dict(store.conn.execute("SELECT node, count(*) FROM attempts GROUP BY node").fetchall())
        store.close()
        return {"jobs": n_jobs, "seconds": round(elapsed, 3), "jobs_per_s": round(n_jobs / elapsed),
                **{f"ran_on_{k}": v for k, v in per_node.items()}}
    finally:
        for n in [sched, *pollers]:
            n.stop()


def failover(root: Path, kills: int, ttl: float) -> dict[str, float]:
    sched, pollers = cluster(root / "fo", ttl, capacity=4)
    by_name = {p.name: p for p in pollers}
    latencies: list[float] = []
    job_ids: list[int] = []
    try:
        store = Store(sched.dir / "ashjobs.db")
        for i in range(kills):
            # At least two pollers up, so the job has somewhere to go.
            _wait(lambda: sum(_available(store, {p.name}) for p in pollers) >= 2, 60, "two pollers available")
            with store.tx() as conn:
                job_id, _, _ = sj.insert(conn, sj.NewJob("sleep", {"seconds": 1.0}, partition="p1"), time.time())
            job_ids.append(job_id)
            presence.wake(sched.dir)

            def owner(job_id: int = job_id) -> str | None:
                row = store.conn.execute("SELECT lease_owner FROM jobs WHERE id = ? AND state = 'executing'",
                                         (job_id,)).fetchone()
                return row[0] if row else None

            victim = _wait(owner, 30, f"job {job_id} to start")
            by_name[victim].daemon.kill()
            t0 = time.monotonic()
            _wait(lambda victim=victim: owner() not in (None, victim), 30, f"job {job_id} to move")
            latencies.append(time.monotonic() - t0)
            by_name[victim].start(wait=False)  # back for the next rounds
            print(f"  kill {i + 1}/{kills}: {victim} → moved in {latencies[-1]:.3f}s", file=sys.stderr)

        def finished() -> bool:
            marks = ",".join("?" * len(job_ids))
            n = store.conn.execute(f"SELECT count(*) FROM jobs WHERE id IN ({marks}) AND state = 'completed'",
                                   job_ids).fetchone()[0]
            return bool(n == len(job_ids))

        try:
            _wait(finished, 30, "failover jobs to complete", 0.1)
        except SystemExit:
            pass
        marks = ",".join("?" * len(job_ids))
        completed = store.conn.execute(f"SELECT count(*) FROM jobs WHERE id IN ({marks}) AND state = 'completed'",
                                       job_ids).fetchone()[0]
        store.close()
    finally:
        for n in [sched, *pollers]:
            n.stop()
    lat = sorted(latencies)
    p99 = lat[min(len(lat) - 1, max(0, round(0.99 * len(lat)) - 1))]
    return {"kills": kills, "p50_s": round(statistics.median(lat), 3), "p99_s": round(p99, 3),
            "max_s": round(lat[-1], 3), "jobs_lost": len(job_ids) - completed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=20000)
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--lease-ttl", type=float, default=2.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ashjobs-bench-cluster-") as tmp:
        root = Path(tmp)
        tp = throughput(root, args.jobs, args.lease_ttl)
        print(f"throughput: {tp['jobs']} no-op jobs through RPC to 3 pollers in {tp['seconds']}s = "
              f"{tp['jobs_per_s']} jobs/s (floor 5000)")
        fo = failover(root, args.kills, args.lease_ttl) if args.kills else {}
        if fo:
            print(f"failover over {fo['kills']} SIGKILLs (lease_ttl {args.lease_ttl:g}s): p50 {fo['p50_s']}s, "
                  f"p99 {fo['p99_s']}s (floor {args.lease_ttl + 1:g}s), max {fo['max_s']}s, "
                  f"jobs lost {fo['jobs_lost']} (floor 0)")
    ok = tp["jobs_per_s"] >= 5000 and (not fo or (fo["p99_s"] <= args.lease_ttl + 1 and fo["jobs_lost"] == 0))
    print(json.dumps({"bench": "cluster", "cores": os.cpu_count(), "lease_ttl_s": args.lease_ttl,
                      "throughput": tp, "failover": fo, "floors_met": ok}))


if __name__ == "__main__":
    main()
