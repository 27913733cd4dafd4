"""`ashjobs config check` refuses what the daemon's cron loop would refuse at start (exit 2, one line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Cli

DUP = """
[[cron]]
name = "x"
schedule = "* * * * *"
task = "noop"
[[cron]]
name = "x"
schedule = "*/5 * * * *"
task = "noop"
"""
TRIGGER = """
[[trigger]]
name = "t1"
resource = "alert"
action = "escalate"
"""


@pytest.mark.parametrize(("text", "env", "expect"), [
    (DUP, {}, "cron['x']: duplicate name"),
    ('[[cron]]\nname = "y"\nschedule = "@hourly"\ntask = "nosuch"\n', {}, "cron['y'].task: unknown task 'nosuch'"),
    (TRIGGER.replace("alert", "nope"), {}, "trigger 't1': resource: unknown resource 'nope'"),
    (TRIGGER + 'schedule = "61 * * * *"\n', {}, "trigger 't1': schedule:"),
    (TRIGGER + 'where = { bogus = 1 }\n', {}, "trigger 't1': where.bogus: unknown field"),
    ("", {"TRACE_SUMMARIES_REFRESH_CRON": "bogus"},
     "cron['refresh_trace_summaries'] (built-in, ashjobs.apps.trace_summaries): schedule_env:"),
])
def test_config_check_refuses_bad_cron_setups(data_dir: Path, text: str, env: dict[str, str], expect: str) -> None:
    path = data_dir.parent / "ashjobs.toml"
    path.write_text(text)
    p = Cli(data_dir, path).run("config", "check", check=False, **env)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and expect in lines[0], p.stderr
    assert p.stdout == ""


def test_config_check_accepts_a_good_setup(data_dir: Path) -> None:
    path = data_dir.parent / "ashjobs.toml"
    path.write_text(TRIGGER + 'schedule = "*/10 * * * *"\n[[cron]]\nname = "n"\nschedule = "@reboot"\ntask = "noop"\n')
    p = Cli(data_dir, path).run("config", "check")
    assert "[[cron]]" in p.stdout


@pytest.mark.parametrize(("line", "expect"), [
    ("priority = 99", "cron['x'].priority: must be 0..9"),
    ('queue = ""', "cron['x'].queue: must not be empty"),
])
def test_cron_entry_priority_and_queue_are_checked(data_dir: Path, line: str, expect: str) -> None:
    path = data_dir.parent / "ashjobs.toml"
    path.write_text(f'[[cron]]\nname = "x"\nschedule = "@hourly"\ntask = "noop"\n{line}\n')
    p = Cli(data_dir, path).run("config", "check", check=False)
    assert p.returncode == 2 and p.stderr.strip() == f"ashjobs: {path}: {expect}"


@pytest.mark.parametrize(("args", "expect"), [
    ('{ resource = "alert", action = "sweep" }', "resource 'alert' has no action 'sweep'"),
    ('{ resource = "nope", action = "x" }', "unknown resource 'nope'"),
    ('{ action = "x" }', "a scheduled action needs args"),
])
def test_scheduled_action_resource_and_action_are_checked(data_dir: Path, args: str, expect: str) -> None:
    path = data_dir.parent / "ashjobs.toml"
    path.write_text(f'[[cron]]\nname = "s"\nschedule = "0 3 * * *"\ntask = "ashjobs.resource.action"\nargs = {args}\n')
    p = Cli(data_dir, path).run("config", "check", check=False)
    assert p.returncode == 2 and p.stderr.startswith(f"ashjobs: {path}: cron['s'].args: ") and expect in p.stderr


def test_run_refuses_a_cron_entry_with_an_unknown_task(tmp_path: Path) -> None:
    from tests.conftest import write_config

    cfg = write_config(tmp_path / "bad.toml", '[[cron]]\nname = "x"\nschedule = "* * * * *"\ntask = "nope"\n')
    data = tmp_path / "data"
    p = Cli(data, cfg).run("run", check=False, timeout=30)
    assert p.returncode == 2, p.stderr
    assert "cron['x'].task: unknown task 'nope'" in p.stderr and str(cfg) in p.stderr
