"""How processes sharing one data dir find each other: the daemon's lock file and its wake-up socket.

The daemon holds an exclusive flock on `<data_dir>/ashjobs.lock` while it runs (so two daemons never share a
data dir, and `status`/`restore` can tell whether one runs). Writers in other processes send one datagram
to the daemon's abstract unix socket after they commit, so it picks new jobs up at once instead of polling.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import socket
from pathlib import Path

from ashjobs.errors import AshError

LOCK_NAME = "ashjobs.lock"


@functools.lru_cache(maxsize=64)
def wake_address(data_dir: Path | str) -> bytes:
    # Abstract namespace: no file to clean up after kill -9, no path-length limit.
    digest = hashlib.sha1(str(Path(data_dir).resolve()).encode()).hexdigest()[:20]
    return b"\0ashjobs-wake-" + digest.encode()


def wake(data_dir: Path | str, what: bytes = b"jobs") -> bool:
    """Tell a running daemon that something changed. Best effort: False when no daemon listens."""
    try:
        _sender().sendto(what, wake_address(data_dir))
        return True
    except OSError:
        return False


@functools.lru_cache(maxsize=1)
def _sender() -> socket.socket:
    # One unbound datagram socket per process: enqueue loops must not pay a socket() per job.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.setblocking(False)
    return s


def daemon_pid(data_dir: Path | str) -> int | None:
    """The pid of the daemon running on this data dir, or None. Never blocks the daemon."""
    path = Path(data_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class DaemonLock:
    """The exclusive run lock of a data dir, holding the daemon's pid."""

    def __init__(self, data_dir: Path | str) -> None:
        self.path = Path(data_dir) / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise AshError(f"{self.path.parent}: another ashjobs daemon is running here (pid {pid or '?'})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def listen_wake(data_dir: Path | str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.bind(wake_address(data_dir))
    except OSError as e:  # the lock file was replaced under a running daemon (e.g. the dir was recreated)
        s.close()
        raise AshError(f"{data_dir}: another ashjobs daemon is still serving this data dir ({e.strerror})") from None
    s.setblocking(False)
    return s
