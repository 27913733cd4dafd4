"""`ashjobs run` as a real subprocess, driven only through the CLI: kill -9 and restart, SIGTERM drain,
retries with backoff, a unique-insert race between processes, cross-process wake-up."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

from conftest import Cli, Daemon, write_config

from ashjobs.clock import parse_iso


def configured(tmp_path: Path, data_dir: Path, text: str) -> Cli:
    return Cli(data_dir, write_config(tmp_path / "ashjobs.toml", text))


def test_300_jobs_survive_kill_9_mid_run(tmp_path: Path, data_dir: Path, daemons: list[Daemon]) -> None:
    cli = configured(tmp_path, data_dir, '[node]\nname = "solo"\n[queues]\ndefault = 40\n')
    from ashjobs.client import connect

    with connect(cli.config, data_dir=data_dir) as client:
        ids = [r.id for r in client.enqueue_many([("sleep", {"seconds": 0.3})] * 300)]
    first = Daemon(cli)
    daemons.append(first)
    first.start()
    cli.wait_for(lambda: cli.json("status")["jobs"]["executing"] > 0, what="jobs executing")
    time.sleep(0.5)  # let some finish and some be mid-sleep when the kill lands
    first.kill()
    mid = cli.json("status")["jobs"]
    assert mid["executing"] > 0, "the kill should interrupt running jobs"
    interrupted = [j["id"] for j in cli.json("jobs", "list", "--state", "executing", "--limit", "1000")]

    second = Daemon(cli)
    daemons.append(second)
    second.start()
    states = cli.wait_finished(ids, timeout=60)
    assert set(states.values()) == {"completed"} and len(states) == 300
    for job_id in interrupted[:10]:
        attempts = cli.job(job_id)["attempts"]
        assert [a["outcome"] for a in attempts] == ["lost", "success"]
        assert attempts[0]["node"] == "solo"
    assert "rescued" in second.log()


def test_sigterm_drains_running_jobs_and_exits_0(tmp_path: Path, data_dir: Path, daemons: list[Daemon]) -> None:
    cli = configured(tmp_path, data_dir, '[node]\ngrace_period = "10s"\n')
    d = Daemon(cli)
    daemons.append(d)
    d.start()
    short = cli.enqueue("sleep", {"seconds": 1.0})
    cli.wait_for(lambda: cli.job(short)["state"] == "executing", what="job executing")
    started = time.monotonic()
    assert d.terminate(timeout=15) == 0
    assert time.monotonic() - started < 10
    assert cli.job(short)["state"] == "completed"


def test_sigterm_hands_back_jobs_that_outlast_the_grace(tmp_path: Path, data_dir: Path,
                                                        daemons: list[Daemon]) -> None:
    cli = configured(tmp_path, data_dir, '[node]\ngrace_period = "500ms"\n')
    d = Daemon(cli)
    daemons.append(d)
    d.start()
    long = cli.enqueue("sleep", {"seconds": 60})
    cli.wait_for(lambda: cli.job(long)["state"] == "executing", what="job executing")
    assert d.terminate(timeout=10) == 0
    job = cli.job(long)
    assert (job["state"], job["attempt"], job["lease"]) == ("available", 0, None)


def test_failing_command_retries_with_backoff_then_discards(tmp_path: Path, data_dir: Path,
                                                           daemons: list[Daemon]) -> None:
    cli = configured(tmp_path, data_dir, "[tasks.command]\nbackoff_scale = 0.02\n")
    d = Daemon(cli)
    daemons.append(d)
    d.start()
    job_id = cli.enqueue("command", {"argv": ["sh", "-c", "echo disk on fire >&2; exit 7"]}, "--max-attempts", "3")
    cli.wait_finished([job_id], timeout=30)
    job = cli.job(job_id)
    assert job["state"] == "discarded" and job["attempt"] == 3
    attempts = job["attempts"]
    assert [a["outcome"] for a in attempts] == ["failure"] * 3
    assert all("exit 7: disk on fire" in a["error"] for a in attempts)
    assert [e["attempt"] for e in job["errors"]] == [1, 2, 3]
    # Each retry waited at least the scaled default backoff (0.02 * (15 + 2^attempt)).
    for n, (prev, nxt) in enumerate(itertools.pairwise(attempts), start=1):
        gap = parse_iso(nxt["started_at"]) - parse_iso(prev["finished_at"])
        assert gap >= 0.02 * (15 + 2**n) - 0.01


def test_unique_insert_race_from_several_processes_yields_one_job(data_dir: Path, cli: Cli) -> None:
    cli.run("status")  # create the file first so the race is on the insert, not on migration
    procs = [subprocess.Popen([sys.executable, "-m", "ashjobs", "enqueue", "noop", "--args", '{"site": 1}',
                               "--unique-for", "1h", "--json"], env=cli.env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(8)]
    outs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert len({o["id"] for o in outs}) == 1
    assert sorted(o["conflict"] for o in outs) == [False] + [True] * 7
    assert len(cli.json("jobs", "list")) == 1


def test_enqueue_from_another_process_wakes_an_idle_daemon(data_dir: Path, cli: Cli,
                                                          daemons: list[Daemon]) -> None:
    d = Daemon(cli)
    daemons.append(d)
    d.start()
    time.sleep(0.3)  # let the daemon go idle (its fallback poll is 5 s)
    job_id = cli.enqueue("noop")
    cli.wait_finished([job_id], timeout=10)
    job = cli.job(job_id)
    # Picked up by the wake-up datagram, not by the 5 s safety poll.
    assert parse_iso(job["attempted_at"]) - parse_iso(job["inserted_at"]) < 2.5


def test_cancel_stops_an_executing_job(data_dir: Path, cli: Cli, daemons: list[Daemon]) -> None:
    d = Daemon(cli)
    daemons.append(d)
    d.start()
    job_id = cli.enqueue("command", {"argv": ["sleep", "30"]})
    cli.wait_for(lambda: cli.job(job_id)["state"] == "executing", what="executing")
    cli.run("jobs", "cancel", str(job_id))
    cli.wait_for(lambda: f"job {job_id} was cancelled elsewhere" in d.log(), timeout=10, what="runner stopped")
    job = cli.job(job_id)
    assert job["state"] == "cancelled" and [a["outcome"] for a in job["attempts"]] == ["cancelled"]
    cli.run("jobs", "retry", str(job_id))
    assert cli.job(job_id)["state"] in ("available", "executing")


def test_second_daemon_on_same_data_dir_is_refused(data_dir: Path, cli: Cli, daemons: list[Daemon]) -> None:
    d = Daemon(cli)
    daemons.append(d)
    d.start()
    p = cli.run("run", check=False, timeout=20)
    assert p.returncode == 1 and "another ashjobs daemon is running" in p.stderr
    assert cli.json("status")["daemon_running"] is True


def test_queue_pause_persists_across_restart(data_dir: Path, cli: Cli, daemons: list[Daemon]) -> None:
    cli.run("queues", "pause", "default")
    d = Daemon(cli)
    daemons.append(d)
    d.start()
    job_id = cli.enqueue("noop")
    time.sleep(0.5)
    assert cli.job(job_id)["state"] == "available"
    assert cli.json("status")["queues"]["default"]["paused"] is True
    cli.run("queues", "resume", "default")
    cli.wait_finished([job_id], timeout=10)
