"""`triggers run --wait` with a daemon running: the daemon runs the worker jobs; the CLI waits and reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import Cli, Daemon, write_config


def test_triggers_run_wait_is_served_by_the_running_daemon(tmp_path: Path, data_dir: Path,
                                                           daemons: list[Daemon]) -> None:
    cli = Cli(data_dir, write_config(tmp_path / "ashjobs.toml",
                                     '[node]\nname = "solo"\n[queues]\ndefault = 4\nalerts = 2\n'
                                     # the built-in */5 slot must not escalate the alert before our run does
                                     '[[trigger]]\nname = "auto_escalate"\nschedule = "0 0 1 1 *"\n'))
    d = Daemon(cli)
    daemons.append(d)
    d.start()
    ago = (datetime.now(UTC) - timedelta(minutes=40)).isoformat()
    aid = cli.json("alerts", "raise", "--severity", "emergency", "--source", "edge-1", "--triggered-at", ago)["id"]
    out = cli.json("triggers", "run", "auto_escalate", "--wait", "--timeout", "30s")
    assert [(j["record_id"], j["state"]) for j in out["jobs"]] == [(aid, "completed")]
    assert f"job {out['job_ids'][0]} success" in d.log()  # run by the daemon, not in the foreground
    [alert] = cli.json("alerts", "list", "--status", "escalated")
    assert (alert["id"], alert["escalation_level"], alert["notification_count"]) == (aid, 1, 1)
    [row] = [t for t in cli.json("triggers", "list") if t["name"] == "auto_escalate"]
    assert row["next_fire"] is not None and row["last_outcome"] == "ok" and row["matching_now"] == 0
