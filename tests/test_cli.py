"""CLI contract: exit codes, one-line errors, JSON shapes, config lookup, init."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import Cli, write_config

from ashjobs import config
from ashjobs.errors import ConfigError


def test_version_and_help(cli: Cli) -> None:
    assert cli.run("--version").stdout.startswith("ashjobs ")
    help_text = cli.run("--help").stdout
    for command in ("run", "enqueue", "jobs", "status", "queues", "init", "config"):
        assert command in help_text


@pytest.mark.parametrize(("toml", "message"), [
    ("[node]\nnmae = 'x'\n", "node.nmae: unknown key"),
    ("[store]\nprune_after = '7 days'\n", "store.prune_after: bad duration '7 days'"),
    ("[store]\nsynchronous = 'off'\n", "store.synchronous: expected one of 'full', 'normal'"),
    ("[queues]\ndefault = 0\n", "queues.default: expected a concurrency limit >= 1"),
    ("[bogus]\nx = 1\n", "bogus: unknown section"),
    ("[node\n", "not valid TOML"),
    ("[tasks.nope]\nmax_attempts = 2\n", "[tasks.nope]: unknown task"),
])
def test_bad_config_is_one_line_naming_file_and_key_exit_2(tmp_path: Path, data_dir: Path, toml: str,
                                                          message: str) -> None:
    path = write_config(tmp_path / "bad.toml", toml)
    p = Cli(data_dir, path).run("config", "check", check=False)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and str(path) in lines[0], lines
    assert not (data_dir / "ashjobs.db").exists(), "nothing may be written on a config error"


@pytest.mark.parametrize(("args", "message"), [
    (["enqueue", "nope"], "unknown task 'nope'"),
    (["enqueue", "noop", "--args", "{bad"], "--args: not valid JSON"),
    (["enqueue", "noop", "--args", "[1]"], "args: expected a JSON object"),
    (["enqueue", "noop", "--in", "soon"], "in: bad duration 'soon'"),
    (["enqueue", "noop", "--at", "tomorrow"], "--at: not an ISO 8601 time"),
    (["enqueue", "noop", "--in", "1s", "--at", "2030-01-01T00:00:00Z"], "give one of them"),
    (["enqueue", "noop", "--priority", "12"], "12 is not in the range 0<=x<=9"),
    (["jobs", "show", "99999999999999999999999"], "is not in the range"),
])
def test_bad_input_exit_2_one_line_nothing_written(cli: Cli, args: list[str], message: str) -> None:
    p = cli.run(*args, check=False)
    assert p.returncode == 2 and message in p.stderr, p.stderr
    if (cli.data_dir / "ashjobs.db").exists():
        assert cli.json("jobs", "list") == []


def test_enqueue_json_and_jobs_json_shapes(cli: Cli) -> None:
    out = cli.json("enqueue", "sleep", "--args", '{"seconds": 1}', "--queue", "q1", "--priority", "3",
                   "--in", "1h", "--partition", "p1", "--domain", "site-a")
    assert out == {"id": out["id"], "state": "scheduled", "conflict": False}
    (job,) = cli.json("jobs", "list", "--state", "scheduled")
    for key in ("id", "task", "queue", "state", "attempt", "max_attempts", "partition", "domain"):
        assert key in job
    assert (job["queue"], job["partition"], job["domain"], job["max_attempts"]) == ("q1", "p1", "site-a", 20)
    shown = cli.job(out["id"])
    assert shown["attempts"] == [] and shown["args"] == {"seconds": 1}


def test_jobs_show_unknown_id_is_exit_1(cli: Cli) -> None:
    cli.run("status")
    p = cli.run("jobs", "show", "999", check=False)
    assert p.returncode == 1 and "job 999: no such job" in p.stderr


def test_status_json_without_daemon(cli: Cli) -> None:
    cli.enqueue("noop")
    st = cli.json("status")
    assert st["daemon_running"] is False and st["jobs"]["available"] == 1
    assert st["queues"]["default"]["limit"] == 10 and st["node"]
    assert st["schema_version"] >= 1


def test_init_writes_commented_config_once_and_it_validates(tmp_path: Path, cli: Cli) -> None:
    target = tmp_path / "etc" / "ashjobs.toml"
    cli.run("init", str(target))
    text = target.read_text()
    assert "[node]" in text and "# " in text
    p = cli.run("init", str(target), check=False)
    assert p.returncode == 2 and "refusing to overwrite" in p.stderr
    assert Cli(cli.data_dir, target).run("config", "check").returncode == 0


def test_example_config_is_the_init_template_and_lists_every_section() -> None:
    root = Path(__file__).resolve().parent.parent
    example = (root / "ashjobs.toml.example").read_text()
    assert example == (root / "ashjobs" / "templates" / "ashjobs.toml.example").read_text()
    uncommented = "\n".join(line[2:] if line.startswith("# ") else line for line in example.splitlines()
                            if not line.startswith("## "))
    import tomllib

    cfg = config.from_dict(tomllib.loads(uncommented), where="example")
    assert cfg.node.grace_period == 15.0


def test_config_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ASHJOBS_CONFIG", raising=False)
    assert config.find_config_path(None) in (None, Path("/etc/ashjobs/ashjobs.toml"))
    (tmp_path / "ashjobs.toml").write_text("")
    assert config.find_config_path(None) == Path("ashjobs.toml")
    monkeypatch.setenv("ASHJOBS_CONFIG", "/x/env.toml")
    assert config.find_config_path(None) == Path("/x/env.toml")
    assert config.find_config_path("/y/flag.toml") == Path("/y/flag.toml")


def test_data_dir_flag_and_env_override_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASHJOBS_DATA_DIR", raising=False)
    raw = {"node": {"data_dir": "/from/file"}}
    assert str(config.from_dict(raw).data_dir) == "/from/file"
    monkeypatch.setenv("ASHJOBS_DATA_DIR", "/from/env")
    assert str(config.from_dict(raw).data_dir) == "/from/env"
    assert str(config.from_dict(raw, data_dir="/from/flag").data_dir) == "/from/flag"


def test_default_data_dir_follows_xdg_for_non_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", "/home/u/.state")
    assert config.default_data_dir() == Path("/home/u/.state/ashjobs")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert config.default_data_dir() == Path("/var/lib/ashjobs")


@pytest.mark.parametrize(("text", "seconds"), [("500ms", 0.5), ("15s", 15), ("30m", 1800), ("2h", 7200),
                                               ("7d", 604800), ("1h30m", 5400), ("1.5s", 1.5)])
def test_durations(text: str, seconds: float) -> None:
    assert config.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5 s", "s", "-1s", "1y", "1h 30m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        config.parse_duration(text)


def test_config_error_type_names_key() -> None:
    with pytest.raises(ConfigError, match=r"f.toml: node.capacity: expected an integer, got 'x'"):
        config.from_dict({"node": {"capacity": "x"}}, where="f.toml")
