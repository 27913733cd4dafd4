"""The only place that speaks SQL. `Store` opens the file and migrates it; `Writer` is the daemon's single
writing thread that groups many state changes into one durable commit.
"""

from __future__ import annotations

import contextlib
import queue as _queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, InvalidStateError
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from ashjobs.errors import StoreError
from ashjobs.store import db
from ashjobs.store.schema import SCHEMA_VERSION

T = TypeVar("T")

__all__ = ["SCHEMA_VERSION", "Store", "Writer"]


class Store:
    """One SQLite file. Use `tx()` for a write transaction, `conn` for reads."""

    def __init__(self, path: Path | str, *, synchronous: str = "full", busy_timeout: float = 5.0,
                 create: bool = True) -> None:
        self.path = Path(path)
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        if not create and not self.path.exists():
            raise StoreError(f"{self.path}: no database here (start `ashjobs run` or enqueue a job first)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = db.connect(self.path, synchronous=synchronous, busy_timeout=busy_timeout)
            self.version = db.migrate(self.conn, self.path)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path}: cannot open database: {e}") from None
        except PermissionError as e:
            raise StoreError(f"{self.path.parent}: cannot create data directory: {e.strerror}") from None

    @classmethod
    def from_config(cls, cfg: Any, *, create: bool = True) -> Store:
        return cls(cfg.db_path, synchronous=cfg.store.synchronous, busy_timeout=cfg.store.busy_timeout,
                   create=create)

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        with db.transaction(self.conn):
            yield self.conn

    def new_connection(self) -> sqlite3.Connection:
        return db.connect(self.path, synchronous=self.synchronous, busy_timeout=self.busy_timeout)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Writer:
    """The daemon's one writing connection, on its own thread. Work submitted while a commit is in flight
    is grouped into the next transaction, so under load one fsync covers many state changes; when idle a
    single change commits at once. Each unit runs in a savepoint: one failing unit does not undo others.

    A unit submitted with `durable=False` (a claim: losing it to a power cut only means the job runs again)
    may commit without an fsync when nothing durable shares its batch; the next durable commit makes it
    durable too (WAL order). A process crash loses neither kind: only the OS's page cache is at risk."""

    def __init__(self, store: Store, *, max_batch: int = 512) -> None:
        self._conn = store.new_connection()
        self._full = store.synchronous == "full"
        self._synced = self._full  # the connection's current synchronous setting is FULL
        self._queue: _queue.SimpleQueue[tuple[Callable[[sqlite3.Connection], Any], Future[Any], bool] | None] = (
            _queue.SimpleQueue())
        self._max_batch = max_batch
        self.commits = 0
        self._thread = threading.Thread(target=self._run, name="ashjobs-writer", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> Future[T]:
        fut: Future[T] = Future()
        self._queue.put((fn, fut, durable))
        return fut

    def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self.submit(fn).result()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._conn.close()

    def _run(self) -> None:
        conn = self._conn
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except _queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            results: list[tuple[Future[Any], bool, Any]] = []
            sync = self._full and any(durable for _, _, durable in batch)
            if sync != self._synced:
                conn.execute(f"PRAGMA synchronous = {'FULL' if sync else 'NORMAL'}")
                self._synced = sync
            try:
                conn.execute("BEGIN IMMEDIATE")
                for fn, fut, _ in batch:
                    conn.execute("SAVEPOINT unit")
                    try:
                        results.append((fut, True, fn(conn)))
                        conn.execute("RELEASE unit")
                    except Exception as e:
                        conn.execute("ROLLBACK TO unit")
                        conn.execute("RELEASE unit")
                        results.append((fut, False, e))
                conn.execute("COMMIT")
                self.commits += 1
            except Exception as e:  # the commit itself failed (disk full, I/O error): nothing was written
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                results = [(fut, False, e) for _, fut, _ in batch]
            for fut, ok, value in results:
                # A unit runs even if its waiter gave up (a cancelled cycle's results still count);
                # only the notification is dropped.
                with contextlib.suppress(InvalidStateError):
                    if ok:
                        fut.set_result(value)
                    else:
                        fut.set_exception(value)
            if stop:
                return
