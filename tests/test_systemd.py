"""sd_notify: pure helpers, and the Notifier component over a real datagram socket (in-process)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import pytest
from conftest import Cli, Daemon, open_services

from ashjobs import config, health
from ashjobs.clock import FakeClock
from ashjobs.services import Services
from ashjobs.store import jobs as jobs_sql
from ashjobs.systemd import (
    Notifier,
    SdNotify,
    capped_count,
    registry_counts,
    socket_address,
    status_text,
    watchdog_interval,
)


def test_socket_address_path_and_abstract() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@sd-notify-1") == "\0sd-notify-1"
    with pytest.raises(ValueError, match="absolute path"):
        socket_address("relative/sock")


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, pid=7) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "7"}, pid=7) == 0.1
    assert watchdog_interval({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "8"}, pid=7) is None  # not us
    assert watchdog_interval({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "8"}, pid=7, launcher=8) == 0.1
    assert watchdog_interval({}, pid=7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, pid=7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, pid=7) is None


def test_status_text_says_something_useful() -> None:
    line = status_text({"available": 120, "executing": 4, "completed": 9}, {"available": 2, "busy": 1,
                                                                             "draining": 0})
    assert line == "3 pollers (2 available, 1 busy), 120 jobs available, 4 executing"
    assert status_text({"retryable": 2}, None) == "0 jobs available, 0 executing, 2 retryable"
    assert status_text({"available": 100, "executing": 3}, None, cap=100) == "100+ jobs available, 3 executing"


def test_capped_count_stops_at_the_cap(svc: Services) -> None:
    with svc.store.tx() as conn:
        jobs_sql.insert_many(conn, [jobs_sql.NewJob(task="noop") for _ in range(30)], svc.clock.now())
    assert capped_count(svc.store.conn, "available", cap=1000) == 30
    assert capped_count(svc.store.conn, "available", cap=10) == 10
    assert capped_count(svc.store.conn, "executing") == 0


def test_registry_counts_duck_typed() -> None:
    class Registry:
        def counts(self) -> dict[str, int]:
            return {"available": 2}

    class Poller:
        def __init__(self, state: str) -> None:
            self.state = state

    class PollerRegistry:
        def pollers(self) -> list[Poller]:
            return [Poller("available"), Poller("busy"), Poller("available")]

    assert registry_counts(Registry()) == {"available": 2}
    assert registry_counts(PollerRegistry()) == {"available": 2, "busy": 1}
    assert registry_counts(object()) is None
    assert registry_counts(None) is None


def test_stale_components() -> None:
    assert health.stale({"executor": 100.0, "cron": 95.0}, now=104.0, max_age=10) == []
    assert health.stale({"executor": 100.0, "cron": 95.0}, now=104.0, max_age=5) == ["cron"]
    assert health.problem(None, {"executor": 0.0}, now=60.0) == "no heartbeat for 60s from: executor"


@pytest.fixture
def svc(tmp_path: Path):
    with open_services(config.from_dict({}, data_dir=str(tmp_path / "data"))) as s:
        yield s


def listener(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    return sock


async def recv(sock: socket.socket) -> str:
    data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 4096), 5)
    return data.decode()


def test_notifier_ready_watchdog_stopping_in_order(svc: Services, tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    sock = listener(path)
    with svc.store.tx() as conn:
        jobs_sql.insert(conn, jobs_sql.NewJob(task="noop"), svc.clock.now())

    async def scenario() -> list[str]:
        svc.stopping = asyncio.Event()
        notifier = Notifier(svc, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000"})
        svc.beat("executor")
        task = asyncio.create_task(notifier.run())
        seen = []
        svc.extras["ready"].set()
        seen.append(await recv(sock))
        seen.append(await recv(sock))
        svc.stopping.set()
        while "STOPPING=1" not in seen[-1]:
            seen.append(await recv(sock))
        task.cancel()
        return seen

    seen = asyncio.run(scenario())
    assert seen[0].splitlines() == ["READY=1", "STATUS=1 jobs available, 0 executing"]
    assert seen[1] == "WATCHDOG=1"
    assert seen[-1].splitlines()[0] == "STOPPING=1"
    sock.close()


def test_notifier_waits_for_ready_and_stops_pinging_when_a_loop_hangs(svc: Services, tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    sock = listener(path)
    clock = svc.clock
    assert isinstance(clock, FakeClock)

    async def scenario() -> None:
        svc.stopping = asyncio.Event()
        notifier = Notifier(svc, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000"})
        task = asyncio.create_task(notifier.run())
        await asyncio.sleep(0.1)  # not ready yet: nothing may be sent, not even WATCHDOG
        with pytest.raises(BlockingIOError):
            sock.recv(4096)
        svc.beat("executor")
        assert notifier.ping() is True
        assert await recv(sock) == "WATCHDOG=1"
        clock.advance(health.STALE_AFTER + 1)  # the executor stopped beating
        assert notifier.ping() is False
        assert svc.extras["ready"] is notifier.ready
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        with pytest.raises(BlockingIOError):
            sock.recv(4096)

    asyncio.run(scenario())
    sock.close()


def test_abstract_socket_and_no_socket(svc: Services) -> None:
    name = f"ashjobs-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sd = SdNotify.from_env({"NOTIFY_SOCKET": "@" + name})
    assert sd is not None and sd.send("READY=1")
    assert sock.recv(100) == b"READY=1"
    sd.close()
    sock.close()
    assert SdNotify.from_env({}) is None
    gone = SdNotify("/nonexistent/notify.sock")
    assert gone.send("READY=1") is False  # a missing manager never raises
    gone.close()

    async def scenario() -> None:
        svc.stopping = asyncio.Event()
        notifier = Notifier(svc, env={})
        task = asyncio.create_task(notifier.run())
        svc.extras["ready"].set()
        await asyncio.sleep(0.05)
        assert not task.done()  # idles until the daemon cancels it
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())


@pytest.mark.slow
def test_daemon_notifies_ready_watchdog_stopping_in_order(tmp_path: Path, daemons: list) -> None:
    """`ashjobs run` as a subprocess with a real $NOTIFY_SOCKET, as systemd starts it."""
    data = tmp_path / "data"
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(20)
    daemon = Daemon(Cli(data), env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
    daemons.append(daemon)
    daemon.start(wait=False)
    seen: list[str] = []

    def until(first_line: str) -> None:
        deadline = time.monotonic() + 20
        while not seen or seen[-1].splitlines()[0] != first_line:
            assert time.monotonic() < deadline, f"no {first_line} from the daemon; got {seen}\n{daemon.log()}"
            try:
                seen.append(sock.recv(4096).decode())
            except TimeoutError:
                raise AssertionError(f"no {first_line} from the daemon; got {seen}\n{daemon.log()}") from None

    until("READY=1")
    assert seen[-1].splitlines()[1].startswith("STATUS=0 jobs available, 0 executing")
    until("WATCHDOG=1")
    until("WATCHDOG=1")  # it keeps pinging
    assert daemon.terminate() == 0
    until("STOPPING=1")
    firsts = [m.splitlines()[0] for m in seen]
    assert firsts.index("READY=1") < firsts.index("WATCHDOG=1") < firsts.index("STOPPING=1")
    assert "READY=1" not in firsts[firsts.index("READY=1") + 1:]
    sock.close()
