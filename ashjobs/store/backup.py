"""Online backup and restore of the SQLite file.

`backup` copies a live database with SQLite's backup API, in steps so a progress bar can follow. The source
connection holds one read transaction for the whole copy: under WAL the daemon keeps writing meanwhile, and
the copy is the snapshot at its start (without the held snapshot, every foreign write restarts the copy, and
a busy daemon would starve it forever). The copy is checked with `PRAGMA integrity_check`, made
self-contained (no -wal file), then renamed into place: a failed backup never leaves a half-written file.

`restore` refuses while a daemon holds `<data_dir>/ashjobs.lock`, checks the source, moves the current
database aside and copies the source in.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ashjobs.errors import AshError, UsageError

DB_NAME = "ashjobs.db"
LOCK_NAME = "ashjobs.lock"
STEP_PAGES = 1024

Progress = Callable[[int, int], None]  # (pages copied, pages in all)


@dataclass
class BackupInfo:
    path: Path
    pages: int
    bytes: int
    schema_version: int
    jobs: int
    seconds: float


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check(conn: sqlite3.Connection, what: str) -> None:
    rows = [r[0] for r in conn.execute("PRAGMA integrity_check(20)")]
    if rows != ["ok"]:
        raise AshError(f"{what}: integrity check failed: {'; '.join(rows)}")


def copy(src: sqlite3.Connection, dest: Path, progress: Progress | None = None,
         step_pages: int = STEP_PAGES) -> int:
    """Copy src (a snapshot of it) into a new file at dest, checked and without a WAL. Returns the pages
    copied. dest is written under a temporary name and renamed only once it passed the integrity check."""
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    for leftover in (tmp, Path(f"{tmp}-journal"), Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        leftover.unlink(missing_ok=True)
    pages = 0

    def step(status: int, remaining: int, total: int) -> None:
        nonlocal pages
        pages = total
        if progress is not None:
            progress(total - remaining, total)

    try:
        src.execute("BEGIN")
        try:
            src.execute("SELECT count(*) FROM sqlite_master").fetchone()  # start the read snapshot now
            dst = sqlite3.connect(tmp, isolation_level=None)
            try:
                src.backup(dst, pages=step_pages, progress=step)
                _check(dst, f"{dest} (copy)")
                # Self-contained: the copy may carry WAL mode over from the source.
                dst.execute("PRAGMA journal_mode = DELETE")
            finally:
                dst.close()
        finally:
            src.execute("COMMIT")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return pages


def _open_source(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise UsageError(f"{path}: no such database file")
    # Not mode=ro: a read-only connection cannot open a WAL file whose -shm is missing. We only read.
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 5000")
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as e:
        conn.close()
        raise AshError(f"{path}: not an SQLite database ({e})") from None
    return conn


def backup(src_db: Path | str, dest_path: Path | str, progress: Progress | None = None,
           *, step_pages: int = STEP_PAGES) -> BackupInfo:
    """Copy the live database at src_db to dest_path (a file; refused if it exists)."""
    src_db, dest = Path(src_db), Path(dest_path)
    if dest.exists():
        raise UsageError(f"{dest}: already exists (choose a new name)")
    if not dest.parent.is_dir():
        raise UsageError(f"{dest.parent}: no such directory")
    started = time.monotonic()
    conn = _open_source(src_db)
    try:
        pages = copy(conn, dest, progress, step_pages)
    except sqlite3.Error as e:
        raise AshError(f"backup of {src_db} to {dest} failed: {e}") from None
    finally:
        conn.close()
    version, jobs = describe(dest)
    return BackupInfo(dest, pages, dest.stat().st_size, version, jobs, time.monotonic() - started)


def describe(path: Path) -> tuple[int, int]:
    """(schema version, number of jobs) of an ashjobs database file."""
    conn = _open_source(path)
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        try:
            jobs = int(conn.execute("SELECT count(*) FROM jobs").fetchone()[0])
        except sqlite3.OperationalError:
            raise AshError(f"{path}: not an ashjobs database (no jobs table)") from None
        return version, jobs
    finally:
        conn.close()


def _same_owner_as_dir(path: Path, data_dir: Path) -> None:
    """Files root creates in the data dir go to the dir's owner (the `ashjobs` service user)."""
    if os.geteuid() == 0:
        st = data_dir.stat()
        os.chown(path, st.st_uid, st.st_gid)


@contextlib.contextmanager
def exclusive(data_dir: Path) -> Iterator[None]:
    """Hold `<data_dir>/ashjobs.lock` as the daemon does, or fail at once if a daemon holds it."""
    lock = data_dir / LOCK_NAME
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    _same_owner_as_dir(lock, data_dir)  # root restoring must not lock the service user out
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AshError(f"a daemon is running on {data_dir} (it holds {lock}); stop it first, "
                           "e.g. `systemctl stop ashjobs`") from None
        yield
    finally:
        os.close(fd)


def restore(data_dir: Path | str, src: Path | str, progress: Progress | None = None,
            *, now: float | None = None) -> Path | None:
    """Put the database file src in place of `<data_dir>/ashjobs.db`. The current file (if any) is moved
    aside to `ashjobs.db.before-restore-<UTC time>`, whose path is returned."""
    from ashjobs.store.schema import SCHEMA_VERSION

    data_dir, src = Path(data_dir), Path(src)
    if not data_dir.is_dir():
        raise UsageError(f"{data_dir}: no such data directory")
    source = _open_source(src)
    try:
        _check(source, str(src))
        version = int(source.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise AshError(f"{src}: schema version {version} is newer than this ashjobs understands "
                           f"({SCHEMA_VERSION}); restore it with the ashjobs that made it")
        if source.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'").fetchone() is None:
            raise AshError(f"{src}: not an ashjobs database (no jobs table)")
        with exclusive(data_dir):
            current = data_dir / DB_NAME
            aside = None
            if current.exists():
                # Fold the WAL into the file first, so the copy kept aside is whole on its own.
                with contextlib.closing(sqlite3.connect(current, isolation_level=None)) as conn:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
                aside = data_dir / f"{DB_NAME}.before-restore-{stamp}"
                n = 1
                while aside.exists():
                    n += 1
                    aside = data_dir / f"{DB_NAME}.before-restore-{stamp}-{n}"
                os.replace(current, aside)
                for suffix in ("-wal", "-shm"):
                    side = Path(f"{current}{suffix}")
                    if side.exists():
                        os.replace(side, Path(f"{aside}{suffix}"))
            copy(source, current, progress)
            _same_owner_as_dir(current, data_dir)
            return aside
    except sqlite3.Error as e:
        raise AshError(f"restore of {src} into {data_dir} failed: {e}") from None
    finally:
        source.close()
