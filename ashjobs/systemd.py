"""systemd's notify protocol, spoken to $NOTIFY_SOCKET directly: one datagram of `KEY=value` lines each.

`Notifier(svc)` is the daemon component: READY=1 once the daemon serves, STATUS= lines a person can read in
`systemctl status`, WATCHDOG=1 at half of $WATCHDOG_USEC from the event loop (and only while every beating
component is recent, so a hung loop gets the service restarted), STOPPING=1 when the daemon drains.
Without $NOTIFY_SOCKET it does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections.abc import Mapping
from typing import Any

from ashjobs import health

log = logging.getLogger("ashjobs.systemd")

STATUS_EVERY = 5.0  # seconds between STATUS= refreshes


def socket_address(value: str) -> str:
    """$NOTIFY_SOCKET → an AF_UNIX address: an absolute path, or '@name' for the abstract namespace."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    raise ValueError(f"NOTIFY_SOCKET={value!r}: expected an absolute path or an '@' abstract name")


def watchdog_interval(env: Mapping[str, str], pid: int, launcher: int | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC), or None when no watchdog is asked of this
    process ($WATCHDOG_PID, when set, names the process systemd watches: us, or the `launcher` that started
    us, as the bootloader of a PyInstaller one-file build does)."""
    usec = env.get("WATCHDOG_USEC", "").strip()
    if not usec:
        return None
    watched = env.get("WATCHDOG_PID", "").strip()
    if watched and watched not in (str(pid), str(launcher)):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


def status_text(jobs_by_state: Mapping[str, int], pollers: Mapping[str, int] | None,
                cap: int | None = None) -> str:
    """One line for `systemctl status`: '3 pollers (2 available, 1 busy), 120 jobs available, 4 executing'.
    A count that reached `cap` is shown as 'cap+'."""

    def n(state: str) -> str:
        value = jobs_by_state.get(state, 0)
        return f"{value}+" if cap is not None and value >= cap else str(value)

    parts = []
    if pollers is not None:
        total = sum(pollers.values())
        detail = ", ".join(f"{n} {state}" for state, n in sorted(pollers.items()) if n)
        parts.append(f"{total} poller{'s' if total != 1 else ''}" + (f" ({detail})" if detail else ""))
    parts.append(f"{n('available')} jobs available")
    parts.append(f"{n('executing')} executing")
    for state in ("scheduled", "retryable"):
        if jobs_by_state.get(state):
            parts.append(f"{n(state)} {state}")
    return ", ".join(parts)


def registry_counts(registry: Any) -> dict[str, int] | None:
    """Pollers by state from the cluster registry (`svc.extras["registry"]`): its `counts()` if it has one,
    else the states of its `pollers()`. None when there is no registry (a poller-only node)."""
    if registry is None:
        return None
    try:
        counts = getattr(registry, "counts", None)
        if callable(counts):
            return {str(k): int(v) for k, v in counts().items()}
        pollers = getattr(registry, "pollers", None)
        if callable(pollers):
            out: dict[str, int] = {}
            for p in pollers():
                state = str(getattr(p, "state", "unknown"))
                out[state] = out.get(state, 0) + 1
            return out
    except Exception:  # a registry mid-update must not take the notifier down
        log.debug("registry counts unavailable", exc_info=True)
    return None


class SdNotify:
    """A datagram socket to systemd. Sending never raises: a missing manager must not stop the daemon."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._warned = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> SdNotify | None:
        value = env.get("NOTIFY_SOCKET", "")
        if not value:
            return None
        try:
            return cls(socket_address(value))
        except ValueError as e:
            log.warning("%s; not notifying systemd", e)
            return None

    def send(self, *lines: str) -> bool:
        try:
            self.sock.sendto("\n".join(lines).encode(), self.address)
            return True
        except OSError as e:
            if not self._warned:
                log.warning("cannot notify systemd at %r: %s", self.address.replace("\0", "@"), e.strerror)
                self._warned = True
            return False

    def close(self) -> None:
        self.sock.close()


class Notifier:
    """Daemon component. Needs from the daemon: `svc.extras["ready"]` (an asyncio.Event set once it serves),
    `svc.stopping` (set when it drains), components beating into `svc.alive`."""

    def __init__(self, svc: Any, env: Mapping[str, str] | None = None) -> None:
        self.svc = svc
        env = os.environ if env is None else env
        self.sd = SdNotify.from_env(env)
        # A frozen (PyInstaller) build runs under its bootloader, which is the main PID systemd knows.
        launcher = os.getppid() if getattr(sys, "frozen", False) else None
        self.watchdog = watchdog_interval(env, os.getpid(), launcher)
        self.ready: asyncio.Event = svc.extras.setdefault("ready", asyncio.Event())
        self._stopping_sent = False
        self._withheld = False

    async def run(self) -> None:
        if self.sd is None:
            await asyncio.get_running_loop().create_future()  # nothing to do until cancelled
            return
        stopping = asyncio.ensure_future(self.svc.stopping.wait())
        ready = asyncio.ensure_future(self.ready.wait())
        try:
            await asyncio.wait([stopping, ready], return_when=asyncio.FIRST_COMPLETED)
            if not self.svc.stopping.is_set():
                self.sd.send("READY=1", f"STATUS={self.status()}")
                log.info("told systemd we are ready")
            tick = min(STATUS_EVERY, self.watchdog or STATUS_EVERY)
            next_status = self.svc.clock.monotonic() + STATUS_EVERY
            while True:
                if stopping.done():
                    self.send_stopping()
                if self.watchdog is not None:
                    self.ping()
                now = self.svc.clock.monotonic()
                if now >= next_status and not stopping.done():
                    self.sd.send(f"STATUS={self.status()}")
                    next_status = now + STATUS_EVERY
                if stopping.done():
                    await asyncio.sleep(tick)  # keep the watchdog fed while the drain runs
                else:
                    await asyncio.wait([stopping], timeout=tick)  # wakes at once when the drain starts
        finally:
            stopping.cancel()
            ready.cancel()

    def ping(self) -> bool:
        """WATCHDOG=1 unless a beating component has gone quiet (then systemd restarts us)."""
        late = health.stale(self.svc.alive, self.svc.clock.monotonic())
        if late:
            if not self._withheld:  # once per episode, not at every tick
                log.error("withholding the systemd watchdog ping: no heartbeat from %s", ", ".join(late))
            self._withheld = True
            return False
        self._withheld = False
        return self.sd.send("WATCHDOG=1") if self.sd else False

    def send_stopping(self) -> None:
        if self.sd is not None and not self._stopping_sent:
            self._stopping_sent = True
            self.sd.send("STOPPING=1", "STATUS=draining: finishing running jobs")

    async def drain(self, grace: float) -> None:
        self.send_stopping()

    def status(self) -> str:
        try:
            conn = self.svc.store.conn
            totals = {state: capped_count(conn, state) for state in ("available", "executing", "scheduled",
                                                                       "retryable")}
        except Exception as e:  # the status line is advisory; never let it stop the watchdog
            return f"store unreadable: {e}"
        return status_text(totals, registry_counts(self.svc.extras.get("registry")), STATUS_CAP)


STATUS_CAP = 100_000  # the status line runs on the event loop: count at most this many of each state


def capped_count(conn: Any, state: str, cap: int = STATUS_CAP) -> int:
    """Jobs in `state`, counting at most `cap` of them (an index range, bounded whatever the backlog)."""
    row = conn.execute("SELECT count(*) FROM (SELECT 1 FROM jobs INDEXED BY jobs_fetch WHERE state = ? LIMIT ?)",
                       (state, cap)).fetchone()
    return int(row[0])
