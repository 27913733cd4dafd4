"""Cron through the real daemon: `ashjobs run` fires a per-second entry; kill -9 and a restart never fire a
slot twice, and the jobs it enqueues are run to completion."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import Cli, Daemon, write_config


def cron_jobs(cli: Cli) -> list[dict[str, Any]]:
    return [j for j in cli.json("jobs", "list", "--limit", "100000") if j["meta"].get("cron") == "tick"]


def test_daemon_fires_each_slot_once_across_kill_and_restart(tmp_path: Path, data_dir: Path,
                                                             daemons: list[Daemon]) -> None:
    cfg = write_config(tmp_path / "ashjobs.toml", """
[node]
roles = ["scheduler"]

[[cron]]
name = "tick"
task = "noop"
schedule = "* * * * * *"
missed = "all"
max_catchup = 3
""")
    cli = Cli(data_dir, cfg)
    first = Daemon(cli)
    daemons.append(first)
    first.start()
    cli.wait_for(lambda: len([j for j in cron_jobs(cli) if j["state"] == "completed"]) >= 3, 30, "3 cron jobs")
    first.kill()
    before = {j["meta"]["slot"] for j in cron_jobs(cli)}
    second = Daemon(cli)
    daemons.append(second)
    second.start()
    cli.wait_for(lambda: len(cron_jobs(cli)) >= len(before) + 3, 30, "3 more cron jobs")
    second.terminate()
    jobs = sorted(cron_jobs(cli), key=lambda j: j["id"])
    slots = [j["meta"]["slot"] for j in jobs]
    assert len(slots) == len(set(slots)), "a slot fired twice"
    assert before <= set(slots)
    assert all(j["task"] == "noop" and j["actor"] == "system:scheduler" for j in jobs)
    assert not {j["state"] for j in jobs} & {"discarded", "cancelled", "retryable"}
    # slots are whole seconds, in order of their jobs
    assert slots == sorted(slots) and all(s.endswith(".000Z") for s in slots)
    json.dumps(jobs)
