"""The shared cluster secret: a 0600 file that every node of one cluster holds.

It keys the RPC handshake (HMAC-SHA256) and, through `cluster_id`, names the cluster in mDNS so two
clusters on one LAN ignore each other without revealing anything about the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from ashjobs.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from ashjobs.config import Config

SECRET_BYTES = 32
MIN_SECRET_BYTES = 16


def secret_path(cfg: Config) -> Path:
    """[cluster] secret_file, else <data_dir>/cluster.secret."""
    return Path(cfg.section("cluster").secret_path(cfg.data_dir))


def load_secret(path: str | Path) -> bytes:
    """The secret in `path`; refuses a missing, empty, short or group/world-readable file."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise ConfigError(f"{p}: cluster secret file not found (create one with `ashjobs init`)") from None
    except PermissionError:
        raise ConfigError(f"{p}: cluster secret file not readable (permission denied)") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot open cluster secret file: {e.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ConfigError(f"{p}: cluster secret is not a regular file")
    with os.fdopen(fd, "rb") as f:
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            who = "others" if mode & 0o007 else "its group"
            raise ConfigError(f"{p}: mode {mode:04o} is readable by {who}; chmod 600 {p}")
        data = f.read(4096).strip()
    if len(data) < MIN_SECRET_BYTES:
        raise ConfigError(f"{p}: cluster secret too short ({len(data)} bytes, need at least {MIN_SECRET_BYTES})")
    return data


def create_secret(path: str | Path) -> bytes:
    """Write a new random secret (hex text) to `path` with mode 0600, atomically; never overwrites."""
    p = Path(path)
    secret = secrets.token_hex(SECRET_BYTES).encode()
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secret + b"\n")
            f.flush()
            os.fsync(f.fileno())
        # link() fails if the target exists, unlike rename(): a concurrent init cannot clobber a secret.
        try:
            os.link(tmp, p)
        except FileExistsError:
            raise UsageError(f"{p}: cluster secret already exists; not overwriting it") from None
    finally:
        os.unlink(tmp)
    _fsync_dir(p.parent)
    return secret


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def cluster_id(secret: bytes) -> str:
    """A short, non-secret name for the cluster (12 hex digits), the same on every node that holds `secret`."""
    return hmac.new(secret, b"ashjobs-cluster-id", hashlib.sha256).hexdigest()[:12]
