"""Operations figures: online backup speed, /metrics scrape time and the single-file program's start-up.

    python bench/bench_ops.py [--jobs 1000000]

Prints each figure and one JSON line. Builds dist/ashjobs first if it is missing (packaging/build).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def fill(db: Path, n: int) -> None:
    """n finished jobs, each with one attempt, written directly (the figures here are about reading them)."""
    from ashjobs.store import Store

    store = Store(db, synchronous="normal")
    now = time.time()
    with store.tx() as conn:
        conn.executemany(
            "INSERT INTO jobs (state, queue, task, args, scheduled_at, inserted_at, attempt, completed_at) "
            "VALUES ('completed', ?, 'noop', '{\"i\": 1}', ?, ?, 1, ?)",
            ((f"q{i % 4}", now, now, now) for i in range(n)))
        conn.executemany(
            "INSERT INTO attempts (job_id, attempt, task, queue, node, started_at, finished_at, outcome, duration) "
            "VALUES (?, 1, 'noop', ?, 'n1', ?, ?, 'success', ?)",
            ((i + 1, f"q{i % 4}", now, now, (i % 1000) / 1000) for i in range(n)))
    store.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=1_000_000)
    a = ap.parse_args()
    out: dict[str, float] = {"jobs": a.jobs}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        db = data / "ashjobs.db"
        data.mkdir()
        fill(db, a.jobs)

        from ashjobs.store import backup

        info = backup.backup(db, Path(tmp) / "copy.db")
        out["backup_s"] = round(info.seconds, 3)
        out["backup_mb"] = round(info.bytes / 1e6, 1)
        out["backup_mb_per_s"] = round(info.bytes / 1e6 / info.seconds, 1)
        print(f"backup of {a.jobs} jobs + attempts: {info.bytes / 1e6:.1f} MB in {info.seconds:.2f}s "
              f"({out['backup_mb_per_s']} MB/s, integrity check included)")

        from ashjobs import config
        from ashjobs.clock import SYSTEM
        from ashjobs.metrics import MetricsServer
        from ashjobs.services import Services
        from ashjobs.store import Store, Writer

        cfg = config.from_dict({"metrics": {"listen": "127.0.0.1:0"}}, data_dir=str(data))
        store = Store(db)
        writer = Writer(store)
        svc = Services(cfg=cfg, store=store, writer=writer, clock=SYSTEM, node="n1", log=logging.getLogger())
        server = MetricsServer(svc)
        url = f"http://127.0.0.1:{server.port}/metrics"
        for name in ("scrape_first_s", "scrape_next_s"):
            t = time.perf_counter()
            with urllib.request.urlopen(url) as r:
                r.read()
            out[name] = round(time.perf_counter() - t, 4)
        print(f"/metrics over {a.jobs} jobs: first scrape {out['scrape_first_s'] * 1000:.0f} ms, "
              f"next {out['scrape_next_s'] * 1000:.1f} ms (mostly counting jobs by state and queue)")
        server.close()
        writer.close()
        store.close()

    app = ROOT / "dist" / "ashjobs"
    if not app.exists():
        subprocess.run([str(ROOT / "packaging" / "build")], check=True, env={**os.environ, "PYTHON": sys.executable})
    with tempfile.TemporaryDirectory() as shiv_root:
        env = {"PATH": "/usr/bin:/bin", "SHIV_ROOT": shiv_root}
        t = time.perf_counter()
        subprocess.run([str(app), "--version"], check=True, env=env, capture_output=True)
        out["zipapp_first_run_s"] = round(time.perf_counter() - t, 3)  # unpacks into SHIV_ROOT once
        runs = []
        for _ in range(5):
            t = time.perf_counter()
            subprocess.run([str(app), "--version"], check=True, env=env, capture_output=True)
            runs.append(time.perf_counter() - t)
        out["zipapp_version_s"] = round(min(runs), 3)
    out["zipapp_mb"] = round(app.stat().st_size / 1e6, 1)
    print(f"dist/ashjobs: {out['zipapp_mb']} MB; --version {out['zipapp_version_s'] * 1000:.0f} ms "
          f"(first run, unpacking: {out['zipapp_first_run_s'] * 1000:.0f} ms)")
    print(json.dumps({"bench": "ops", **out}))


if __name__ == "__main__":
    main()
