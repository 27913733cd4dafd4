"""Backup and restore on real SQLite files, with a real concurrent writer process and a real daemon."""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import Cli, Daemon, base_env

from ashjobs.errors import AshError, UsageError
from ashjobs.presence import DaemonLock
from ashjobs.store import SCHEMA_VERSION, Store
from ashjobs.store import backup as bk
from ashjobs.store import jobs as sql

WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import ashjobs
    stop = Path(sys.argv[2])
    with ashjobs.connect(data_dir=sys.argv[1]) as client:
        n = 0
        while not stop.exists() and n < 200_000:
            client.enqueue_many([("noop", {"i": n + i}) for i in range(200)])
            n += 200
            print(n, flush=True)
""")


def make_db(data: Path, n: int) -> Path:
    store = Store(data / "ashjobs.db")
    with store.tx() as conn:
        sql.insert_many(conn, [sql.NewJob(task="noop", args={"i": i}) for i in range(n)], 1.0)
    store.close()
    return data / "ashjobs.db"


def jobs_in(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return int(conn.execute("SELECT count(*) FROM jobs").fetchone()[0])


def start_writer(data: Path, stop: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(data), str(stop)], stdout=subprocess.PIPE,
                            text=True, env=base_env(data))
    assert proc.stdout is not None
    assert int(proc.stdout.readline()) >= 200  # it is writing before we start
    return proc


def stop_writer(proc: subprocess.Popen[str], stop: Path) -> int:
    stop.touch()
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    return int(out.split()[-1])


def test_backup_under_concurrent_writes_is_one_consistent_snapshot(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_db(data, 20_000)
    writer = start_writer(data, tmp_path / "stop")
    steps: list[tuple[int, int]] = []
    try:
        info = bk.backup(data / "ashjobs.db", tmp_path / "b.db", lambda done, total: steps.append((done, total)),
                         step_pages=16)
    finally:
        written = stop_writer(writer, tmp_path / "stop")
    # Copied in many steps, never restarted by the writer (progress only moves forward), and complete.
    assert len(steps) > 5 and steps[-1][0] == steps[-1][1] == info.pages
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(steps))
    assert 20_000 <= info.jobs <= 20_000 + written and info.jobs % 200 == 0  # whole transactions only
    assert jobs_in(tmp_path / "b.db") == info.jobs
    assert info.schema_version == SCHEMA_VERSION
    assert not Path(f"{tmp_path}/b.db-wal").exists()  # self-contained
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_backup_refuses_existing_target_and_bad_copies(tmp_path: Path) -> None:
    data = tmp_path / "data"
    src = make_db(data, 10)
    (tmp_path / "taken.db").write_text("mine")
    with pytest.raises(UsageError, match="already exists"):
        bk.backup(src, tmp_path / "taken.db")
    assert (tmp_path / "taken.db").read_text() == "mine"
    with pytest.raises(UsageError, match="no such directory"):
        bk.backup(src, tmp_path / "nope" / "b.db")

    # A corrupt source: the copy fails its integrity check and is deleted, nothing is left behind.
    bad = tmp_path / "bad.db"
    with sqlite3.connect(bad) as conn:
        conn.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, x TEXT)")
        conn.execute("CREATE INDEX jobs_x ON jobs(x)")
        conn.executemany("INSERT INTO jobs (x) VALUES (?)", [(f"v{i}" * 50,) for i in range(2000)])
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'jobs_x'").fetchone()[0]
        page = conn.execute("PRAGMA page_size").fetchone()[0]
    with open(bad, "r+b") as f:  # scribble over the header of the index's root page
        f.seek((root - 1) * page)
        f.write(b"\x07" * 200)
    with pytest.raises(AshError, match="integrity check failed"):
        bk.backup(bad, tmp_path / "copy.db")
    assert not (tmp_path / "copy.db").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.db", "data", "taken.db"]


def test_restore_refused_while_locked_then_restores_and_keeps_the_old_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_db(data, 5)
    source = tmp_path / "src"
    bk.backup(make_db(source, 42), tmp_path / "b.db")

    lock = DaemonLock(data)  # what `ashjobs run` holds
    lock.acquire()
    try:
        with pytest.raises(AshError, match=r"a daemon is running on .*ashjobs\.lock.*stop it first"):
            bk.restore(data, tmp_path / "b.db")
    finally:
        lock.release()
    assert jobs_in(data / "ashjobs.db") == 5

    aside = bk.restore(data, tmp_path / "b.db", now=1_767_225_600.0)
    assert aside == data / "ashjobs.db.before-restore-20260101T000000Z"
    assert jobs_in(aside) == 5
    assert jobs_in(data / "ashjobs.db") == 42
    assert bk.restore(data, tmp_path / "b.db", now=1_767_225_600.0) == data / (
        "ashjobs.db.before-restore-20260101T000000Z-2")


def test_restore_refuses_newer_schema_and_non_ashjobs_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_db(data, 3)
    newer = tmp_path / "newer.db"
    bk.backup(data / "ashjobs.db", newer)
    with sqlite3.connect(newer) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(AshError, match=f"schema version {SCHEMA_VERSION + 1} is newer"):
        bk.restore(data, newer)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(AshError, match="not an ashjobs database"):
        bk.restore(data, other)
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(AshError, match="not an SQLite database"):
        bk.restore(data, tmp_path / "junk.db")
    assert jobs_in(data / "ashjobs.db") == 3
    assert sorted(p.name for p in data.iterdir() if "before-restore" in p.name) == []


@pytest.mark.slow
def test_backup_while_the_daemon_runs_and_restore_only_when_stopped(tmp_path: Path, daemons: list) -> None:
    data = tmp_path / "data"
    cli = Cli(data)
    daemon = Daemon(cli)
    daemons.append(daemon)
    daemon.start()
    writer = start_writer(data, tmp_path / "stop")  # the daemon runs these noops as they arrive
    try:
        out = cli.json("backup", str(tmp_path / "b.db"))
    finally:
        written = stop_writer(writer, tmp_path / "stop")
    assert out["integrity"] == "ok" and out["schema_version"] == SCHEMA_VERSION
    assert 200 <= out["jobs"] <= written
    assert jobs_in(tmp_path / "b.db") == out["jobs"]

    refused = cli.run("restore", str(tmp_path / "b.db"), check=False)
    assert refused.returncode == 1
    assert "a daemon is running on" in refused.stderr and "stop it first" in refused.stderr

    # Let it work off what the writer left (this test is about restore, not about draining under load).
    cli.wait_for(lambda: not any(cli.json("status")["jobs"][s] for s in ("available", "executing")), 60,
                 "the daemon to finish the writer's jobs")
    assert daemon.terminate() == 0
    restored = cli.run("restore", "--json", str(tmp_path / "b.db"))
    doc = json.loads(restored.stdout)
    assert doc["jobs"] == out["jobs"] and doc["previous"].startswith(str(data / "ashjobs.db.before-restore-"))
    status = cli.json("status")
    assert sum(status["jobs"].values()) == out["jobs"]
    assert status["daemon_running"] is False


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own files as another user")
def test_restore_as_root_leaves_files_to_the_data_dirs_owner(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_db(data, 1)
    bk.backup(make_db(tmp_path / "src", 2), tmp_path / "b.db")
    os.chown(data, 4321, 4321)  # as installed: /var/lib/ashjobs belongs to the service user
    bk.restore(data, tmp_path / "b.db")
    for name in ("ashjobs.db", "ashjobs.lock"):
        st = (data / name).stat()
        assert (st.st_uid, st.st_gid) == (4321, 4321), name
