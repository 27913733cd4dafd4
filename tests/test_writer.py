"""The writer thread: grouping, savepoints, and which commits pay for an fsync."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ashjobs.store import Store, Writer


def sync_mode(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA synchronous").fetchone()[0])


def test_only_durable_batches_commit_with_full_sync(tmp_path: Path) -> None:
    store = Store(tmp_path / "w.db")
    writer = Writer(store)
    try:
        assert writer.submit(sync_mode, durable=False).result() == 1  # NORMAL: no fsync for a claim
        assert writer.submit(sync_mode).result() == 2  # FULL
        assert writer.submit(sync_mode, durable=False).result() == 1
    finally:
        writer.close()
        store.close()


def test_normal_store_never_fsyncs(tmp_path: Path) -> None:
    store = Store(tmp_path / "n.db", synchronous="normal")
    writer = Writer(store)
    try:
        assert writer.submit(sync_mode).result() == 1
    finally:
        writer.close()
        store.close()


def test_a_failing_unit_does_not_undo_its_neighbours(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    writer = Writer(store)
    try:
        writer.call(lambda c: c.execute("CREATE TABLE t (v INTEGER UNIQUE)"))
        a = writer.submit(lambda c: c.execute("INSERT INTO t VALUES (1)"))
        b = writer.submit(lambda c: c.execute("INSERT INTO t VALUES (1)"))  # violates UNIQUE
        c = writer.submit(lambda c: c.execute("INSERT INTO t VALUES (2)"))
        a.result()
        with pytest.raises(sqlite3.IntegrityError):
            b.result()
        c.result()
        assert sorted(r[0] for r in store.conn.execute("SELECT v FROM t")) == [1, 2]
    finally:
        writer.close()
        store.close()
