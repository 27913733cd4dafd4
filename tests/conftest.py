"""Shared fixtures: a temp data dir, the CLI as a real subprocess, and `ashjobs run` daemons."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def base_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASHJOBS_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    env["ASHJOBS_DATA_DIR"] = str(data_dir)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


class Cli:
    """Runs `python -m ashjobs ...` as a subprocess against one data dir (and optional config)."""

    def __init__(self, data_dir: Path, config: Path | None = None) -> None:
        self.data_dir = data_dir
        self.config = config

    def env(self, **extra: str) -> dict[str, str]:
        env = base_env(self.data_dir, **extra)
        if self.config is not None:
            env["ASHJOBS_CONFIG"] = str(self.config)
        return env

    def run(self, *args: str, check: bool = True, timeout: float = 60, input: str | None = None,
            **extra: str) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([sys.executable, "-m", "ashjobs", *args], capture_output=True, text=True,
                           env=self.env(**extra), timeout=timeout, cwd=self.data_dir.parent, input=input)
        if check and p.returncode != 0:
            raise AssertionError(f"ashjobs {' '.join(args)} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p

    def json(self, *args: str, **extra: str) -> Any:
        return json.loads(self.run(*args, "--json", **extra).stdout)

    def enqueue(self, task: str, args: dict[str, Any] | None = None, *opts: str) -> int:
        out = self.json("enqueue", task, "--args", json.dumps(args or {}), *opts)
        return int(out["id"])

    def job(self, job_id: int) -> dict[str, Any]:
        return dict(self.json("jobs", "show", str(job_id)))

    def wait_for(self, predicate: Any, timeout: float = 30.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.1)

    def wait_finished(self, job_ids: list[int], timeout: float = 30.0) -> dict[int, str]:
        from ashjobs.queue import FINISHED

        def done() -> dict[int, str] | None:
            jobs = {j["id"]: j["state"] for j in self.json("jobs", "list", "--limit", "100000")}
            return jobs if all(jobs.get(i) in FINISHED for i in job_ids) else None

        return dict(self.wait_for(done, timeout, f"jobs {job_ids[:5]}... to finish"))


class Daemon:
    """`ashjobs run` as a real subprocess; stdout/stderr go to a log file in the data dir."""

    def __init__(self, cli: Cli, *extra_args: str, env: dict[str, str] | None = None) -> None:
        self.cli = cli
        self.extra_args = extra_args
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = cli.data_dir / f"daemon-{id(self)}.log"

    def start(self, wait: bool = True) -> Daemon:
        self.cli.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen([sys.executable, "-m", "ashjobs", "run", *self.extra_args],
                                     env=self.cli.env(**self.extra_env), stdout=log, stderr=log,
                                     cwd=self.cli.data_dir.parent)
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while "ashjobs serving" not in self.log():
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"daemon not ready after {timeout}s:\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def cli(data_dir: Path) -> Cli:
    return Cli(data_dir)


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        d.stop()


@contextlib.contextmanager
def open_services(cfg: Any, clock: Any = None, node: str = "n1") -> Iterator[Any]:
    """The daemon's Services over a real store and writer, for testing one component in-process."""
    from ashjobs.clock import FakeClock
    from ashjobs.services import Services
    from ashjobs.store import Store, Writer

    store = Store(cfg.db_path)
    writer = Writer(store)
    try:
        yield Services(cfg=cfg, store=store, writer=writer, clock=clock or FakeClock(), node=node,
                       log=logging.getLogger("test"))
    finally:
        writer.close()
        store.close()


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# The suite runs beside daemons on 2 cores: hypothesis' per-example deadline would measure load, not code.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ashjobs", deadline=None, print_blob=True)
_hypothesis_settings.load_profile("ashjobs")
