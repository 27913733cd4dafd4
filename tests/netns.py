"""Several hosts on one machine: Linux network namespaces joined by a bridge (the project's own fixture).

Each lab makes its namespaces under a unique prefix, so parallel tests never collide, and nothing in the
root namespace. Host i (1-based) has eth0 = 10.77.0.i/24, lo up and IPv6 off; the bridge lives in its own
namespace with multicast snooping off (mDNS must flood). Cuts set the host's bridge port state, since
netem, iptables and nft are not available on every kernel we run on.

    def test_x(netns_lab):
        lab = netns_lab(3)
        proc = lab.popen(2, [sys.executable, "-m", "ashjobs", "run"])
        lab.cut(2); ...; lab.heal(2)
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=30)


@functools.cache
def netns_unavailable() -> str | None:
    """Why network namespaces cannot be used here (None when they can)."""
    if os.name != "posix" or not os.path.exists("/proc/self/ns/net"):
        return "network namespaces need Linux"
    name = f"ajprobe{secrets.token_hex(3)}"
    try:
        made = _ip("netns", "add", name, check=False)
    except FileNotFoundError:
        return "the `ip` command (iproute2) is not installed"
    if made.returncode != 0:
        return f"`ip netns add` is not permitted here ({made.stderr.strip() or 'no reason given'}); run as root"
    _ip("netns", "del", name, check=False)
    return None


class NetnsLab:
    """n hosts (1..n) on one bridge; call `close()` (the fixture does) to kill their processes and delete them."""

    def __init__(self, n_hosts: int, prefix: str | None = None) -> None:
        self.n = n_hosts
        self.prefix = prefix or f"aj{secrets.token_hex(3)}"
        self.bridge = f"{self.prefix}br"
        self._made: list[str] = []
        self._procs: list[subprocess.Popen[Any]] = []

    def ns(self, i: int) -> str:
        return f"{self.prefix}h{i}"

    def addr(self, i: int) -> str:
        return f"10.77.0.{i}"

    def setup(self) -> NetnsLab:
        try:
            br = self.bridge
            self._add(br)
            _ip("-n", br, "link", "add", "br0", "type", "bridge")
            _ip("-n", br, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0", "stp_state", "0")
            _ip("-n", br, "link", "set", "br0", "up")
            for i in range(1, self.n + 1):
                ns = self.ns(i)
                self._add(ns)
                subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
                               check=True, capture_output=True, timeout=30)
                _ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{i}", "netns", br)
                _ip("-n", ns, "addr", "add", f"{self.addr(i)}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", br, "link", "set", f"p{i}", "master", "br0", "up")
        except BaseException:
            self.close()
            raise
        return self

    def _add(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self._made.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")  # zeroconf fails with errno 19 on a namespace without lo

    def popen(self, i: int, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start argv inside host i (`ip netns exec` execs it, so .pid is the program itself)."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns(i), *argv], **kw)
        self._procs.append(proc)
        return proc

    def run(self, i: int, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
        kw.setdefault("timeout", 60)
        return subprocess.run(["ip", "netns", "exec", self.ns(i), *argv], **kw)

    def _port_state(self, i: int, state: int) -> None:
        subprocess.run(["ip", "netns", "exec", self.bridge, "bridge", "link", "set", "dev", f"p{i}", "state",
                        str(state)], check=True, capture_output=True, timeout=30)

    def cut(self, i: int) -> None:
        """Silent cut: host i's frames are dropped at the bridge; both sides see nothing."""
        self._port_state(i, 0)

    def heal(self, i: int) -> None:
        self._port_state(i, 3)

    def hard_cut(self, i: int) -> None:
        """Link down at the bridge: host i's port goes away (carrier loss on the bridge side)."""
        _ip("-n", self.bridge, "link", "set", f"p{i}", "down")

    def hard_heal(self, i: int) -> None:
        _ip("-n", self.bridge, "link", "set", f"p{i}", "up")
        self._port_state(i, 3)

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(Exception):
                proc.wait(timeout=10)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(Exception):
                        stream.close()
        self._procs.clear()
        for ns in reversed(self._made):
            pids = _ip("netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _ip("netns", "del", ns, check=False)
        self._made.clear()


class Agent:
    """A Python script run in host i that reports JSON lines; its events are readable under a deadline."""

    def __init__(self, lab: NetnsLab, host: int, args: list[str]) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = lab.popen(host, [sys.executable, *args], stdout=subprocess.PIPE, text=True, env=env)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def expect(self, match: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        """The first event (from now on, or already seen) that matches; fails after `timeout` seconds."""
        for event in self.seen:
            if match(event):
                return event
        while True:
            try:
                event = self.events.get(timeout=timeout)  # a bound for a broken test, not a figure
            except queue.Empty:
                pytest.fail(f"no matching event within {timeout}s; saw {self.seen}")
            self.seen.append(event)
            if match(event):
                return event

    def stop(self) -> None:
        self.proc.terminate()
        self.expect(lambda e: e["event"] == "closed")


_open_labs: list[NetnsLab] = []


@atexit.register
def _close_leftovers() -> None:  # an interrupted run must not leave namespaces behind
    for lab in _open_labs:
        lab.close()


@pytest.fixture
def netns_lab() -> Iterator[Callable[[int], NetnsLab]]:
    """netns_lab(n_hosts) → a ready NetnsLab; skips with the reason where namespaces are not permitted."""
    labs: list[NetnsLab] = []

    def make(n_hosts: int) -> NetnsLab:
        why = netns_unavailable()
        if why:
            pytest.skip(why)
        lab = NetnsLab(n_hosts)
        _open_labs.append(lab)
        labs.append(lab)
        return lab.setup()

    try:
        yield make
    finally:
        for lab in labs:
            lab.close()
            _open_labs.remove(lab)
