"""Observability of a real daemon: JSON log lines (one per job outcome, routed ones included), a scrape of
/metrics and /healthz after local and routed jobs ran, and `status --watch` until SIGINT."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cluster_harness import Node, free_port, make_secret
from conftest import Daemon
from test_metrics import get, samples

pytestmark = pytest.mark.slow


class JsonLogDaemon(Daemon):
    """`ashjobs --log-format json run`: the global options go before the command."""

    def start(self, wait: bool = True) -> Daemon:
        self.cli.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen([sys.executable, "-m", "ashjobs", "--log-format", "json", "--log-level", "info",
                                      "run"], env=self.cli.env(), stdout=subprocess.DEVNULL, stderr=log,
                                     cwd=self.cli.data_dir.parent)
        log.close()
        if wait:
            self.wait_ready()
        return self


def test_json_logs_and_a_scrape_after_local_and_routed_jobs(tmp_path: Path, daemons: list) -> None:
    make_secret(tmp_path)
    port = free_port()
    # One node with both roles: its scheduler dispatches routed jobs to its own poller over RPC and leases.
    node = Node(tmp_path, "both", ["scheduler", "poller"], "p1",
                extra=f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n\n[[cron]]\nname = "tick"\n'
                      'schedule = "* * * * * *"\ntask = "noop"\n')
    daemon = JsonLogDaemon(node.cli)
    daemons.append(daemon)
    daemon.start()
    cli = node.cli
    fail = {"argv": ["false"]}
    local_ok, local_bad = cli.enqueue("noop"), cli.enqueue("command", fail, "--max-attempts", "1")
    routed_ok = cli.enqueue("noop", {}, "--partition", "p1")
    routed_bad = cli.enqueue("command", fail, "--partition", "p1", "--max-attempts", "1")
    states = cli.wait_finished([local_ok, local_bad, routed_ok, routed_bad])
    assert [states[i] for i in (local_ok, local_bad, routed_ok, routed_bad)] == [
        "completed", "discarded", "completed", "discarded"]
    cli.wait_for(lambda: any(j["task"] == "noop" and j["state"] == "completed" and j["id"] > routed_bad
                             for j in cli.json("jobs", "list", "--limit", "1000")), 10, "a cron slot to run")

    status, text = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    m = samples(text)
    assert m[("ashjobs_attempts_total", (("outcome", "success"),))] >= 2
    assert m[("ashjobs_attempts_total", (("outcome", "failure"),))] == 2
    assert m[("ashjobs_jobs", (("queue", "default"), ("state", "discarded")))] == 2
    assert m[("ashjobs_job_duration_seconds_count", (("queue", "default"),))] >= 4
    assert m[("ashjobs_peers", (("state", "available"),))] == 1
    assert ("ashjobs_cron_lag_seconds", ()) in m
    for name in ("ashjobs_leases_active", "ashjobs_leases_expired_total", "ashjobs_stale_results_refused_total"):
        assert (name, ()) in m, name
    assert "# TYPE ashjobs_notifications gauge" in text  # no notification rows yet: the family is still served
    names = {name for name, _ in m} | {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    ours = {n for n in names if not n.startswith(("process_", "python_"))}
    assert all(n.startswith("ashjobs_") for n in ours), ours
    assert get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
    assert daemon.terminate() == 0

    lines = [json.loads(line) for line in daemon.log().splitlines()]  # every line is JSON, or this raises
    for line in lines:
        assert {"ts", "level", "logger", "msg"} <= set(line), line
    outcomes: dict[int, list[dict[str, Any]]] = {}
    for line in lines:
        if "outcome" in line:
            outcomes.setdefault(line["job_id"], []).append(line)
    expected = {local_ok: ("noop", "success", "ashjobs"), local_bad: ("command", "failure", "ashjobs"),
                routed_ok: ("noop", "success", "ashjobs.cluster.dispatch"),
                routed_bad: ("command", "failure", "ashjobs.cluster.dispatch")}
    for job_id, (task, outcome, logger) in expected.items():
        assert len(outcomes.get(job_id, [])) == 1, (job_id, outcomes.get(job_id))  # once, on the scheduler
        line = outcomes[job_id][0]
        assert line["level"] == "info" and line["logger"] == logger, line
        assert (line["task"], line["outcome"], line["attempt"], line["node"]) == (task, outcome, 1, "both"), line
        assert isinstance(line["duration"], float) and line["duration"] >= 0, line
    assert outcomes[routed_bad][0]["error"] == outcomes[local_bad][0]["error"] == "RuntimeError: exit 1"


def read_until(fd: int, needle: bytes, timeout: float = 20.0) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while needle not in out:
        left = deadline - time.monotonic()
        assert left > 0, f"no {needle!r} on the terminal; got {out[-2000:]!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                out += os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
    return out


def test_status_watch_refreshes_in_place_and_exits_0_on_sigint(tmp_path: Path) -> None:
    from conftest import Cli

    cli = Cli(tmp_path / "data")
    cli.data_dir.mkdir()
    cli.enqueue("noop")
    primary, secondary = pty.openpty()
    env = {**cli.env(), "TERM": "xterm", "COLUMNS": "120", "LINES": "40"}
    proc = subprocess.Popen([sys.executable, "-m", "ashjobs", "status", "--watch", "--interval", "0.2"],
                            stdin=secondary, stdout=secondary, stderr=secondary, env=env, cwd=tmp_path,
                            start_new_session=True)
    os.close(secondary)
    try:
        first = read_until(primary, b"jobs              available 1 ")
        cli.enqueue("noop")  # a later refresh shows the new figure, drawn over the old one
        later = read_until(primary, b"jobs              available 2 ")
        assert b"\x1b[1A\x1b[2K" in later  # cursor up, erase line: redrawn in place, not scrolled
        proc.send_signal(signal.SIGINT)
        rest = read_until(primary, b"\x1b[?25h", timeout=10)  # the cursor is shown again on the way out
        assert proc.wait(10) == 0, rest
        assert b"Traceback" not in first + later + rest and b"aborted" not in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(primary)


def run_on_pty(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, bytes]:
    """Run a command with a terminal on stdout and stderr; its exit code and everything it drew."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=secondary, stderr=secondary, env=env, cwd=cwd)
    os.close(secondary)
    out = b""
    try:
        while True:
            ready, _, _ = select.select([primary], [], [], 30)
            assert ready, f"no output for 30s; got {out[-2000:]!r}"
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        return proc.wait(30), out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(primary)


def test_backup_on_a_terminal_shows_a_progress_bar(tmp_path: Path) -> None:
    from conftest import Cli

    cli = Cli(tmp_path / "data")
    cli.data_dir.mkdir()
    cli.enqueue("noop")
    env = {**cli.env(), "TERM": "xterm", "COLUMNS": "120"}
    code, out = run_on_pty([sys.executable, "-m", "ashjobs", "backup", str(tmp_path / "b.db")], env, tmp_path)
    assert code == 0, out
    assert "backup → b.db".encode() in out  # the bar's label, drawn on the terminal (then erased)
    assert b"integrity ok" in out
    # Not on a pipe: the output stays one clean line there.
    piped = cli.run("backup", str(tmp_path / "c.db"))
    assert "backup →" not in piped.stderr and "integrity ok" in piped.stdout
