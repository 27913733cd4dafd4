"""Upgrade across schema versions: a backup made by an older schema restores and migrates forward."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import Cli

from ashjobs.store import SCHEMA_VERSION
from ashjobs.store import backup as bk
from ashjobs.store.db import split_statements
from ashjobs.store.schema import MIGRATIONS


def old_database(path: Path, version: int, jobs: int) -> None:
    """A file exactly as ashjobs at schema `version` left it, holding `jobs` available noop jobs."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN")
    for step in MIGRATIONS[:version]:
        for statement in split_statements(step):
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.executemany("INSERT INTO jobs (state, queue, task, args, scheduled_at, inserted_at) "
                     "VALUES ('available', 'default', 'noop', '{}', 1.0, 1.0)", [()] * jobs)
    conn.execute("COMMIT")
    conn.close()


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION))  # empty (skipped) while there is one schema
def test_older_backup_restores_and_migrates(tmp_path: Path, version: int) -> None:
    old = tmp_path / "old.db"
    old_database(old, version, jobs=7)
    bk.backup(old, tmp_path / "backup.db")
    assert bk.describe(tmp_path / "backup.db") == (version, 7)  # the backup really holds the older schema
    cli = Cli(tmp_path / "data")
    (tmp_path / "data").mkdir()
    cli.run("restore", str(tmp_path / "backup.db"))
    status = cli.json("status")
    assert status["schema_version"] == SCHEMA_VERSION
    assert status["jobs"]["available"] == 7


def test_there_is_an_older_schema_to_upgrade_from() -> None:
    # The parametrized tests above are empty (skipped) with a single schema: make that visible.
    assert SCHEMA_VERSION == len(MIGRATIONS) >= 2


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION))
def test_an_older_data_file_opens_and_migrates_in_place(tmp_path: Path, version: int) -> None:
    from ashjobs.store import Store

    old_database(tmp_path / "ashjobs.db", version, jobs=5)
    store = Store(tmp_path / "ashjobs.db")
    try:
        assert store.version == SCHEMA_VERSION
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert store.conn.execute("SELECT count(*) FROM jobs WHERE state = 'available'").fetchone()[0] == 5
    finally:
        store.close()


def test_restore_of_the_current_schema_needs_no_migration(tmp_path: Path) -> None:
    old = tmp_path / "cur.db"
    old_database(old, SCHEMA_VERSION, jobs=3)
    cli = Cli(tmp_path / "data")
    (tmp_path / "data").mkdir()
    cli.run("restore", str(old))
    assert cli.json("status")["jobs"]["available"] == 3
