"""Job SQL on a real SQLite file, times injected: insert, uniqueness, claim, fencing, rescue, prune."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ashjobs import queue as rules
from ashjobs.errors import StoreError
from ashjobs.store import SCHEMA_VERSION, Store
from ashjobs.store import jobs as sql

T0 = 1_800_000_000.0


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "ashjobs.db")


def insert(store: Store, job: sql.NewJob, now: float = T0) -> tuple[int, str, bool]:
    with store.tx() as conn:
        return sql.insert(conn, job, now)


def test_new_file_is_migrated_and_a_newer_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    s = Store(path)
    assert s.version == SCHEMA_VERSION
    s.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    s.close()
    with pytest.raises(StoreError, match="newer than this ashjobs"):
        Store(path)


def test_wal_and_full_sync_by_default(store: Store) -> None:
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_future_job_is_scheduled_then_staged(store: Store) -> None:
    job_id, state, _ = insert(store, sql.NewJob("noop", scheduled_at=T0 + 60))
    assert state == "scheduled"
    with store.tx() as conn:
        assert sql.stage(conn, T0 + 59) == 0
        assert sql.next_due(conn) == T0 + 60
        assert sql.stage(conn, T0 + 60) == 1
    assert sql.get(store.conn, job_id).state == "available"


def test_unique_insert_returns_existing_job_and_says_it_conflicted(store: Store) -> None:
    u = rules.Unique(period=300)
    a = insert(store, sql.NewJob("noop", {"x": 1}, unique=u))
    b = insert(store, sql.NewJob("noop", {"x": 1}, unique=u), T0 + 10)
    c = insert(store, sql.NewJob("noop", {"x": 2}, unique=u), T0 + 10)
    assert a[2] is False and b == (a[0], "available", True) and c[2] is False and c[0] != a[0]


def test_unique_key_released_when_job_leaves_its_unique_states(store: Store) -> None:
    u = rules.Unique(period=None, states=rules.INCOMPLETE)
    job_id, _, _ = insert(store, sql.NewJob("noop", unique=u))
    with store.tx() as conn:
        (row,) = sql.claim(conn, "default", 1, "n1", T0, 30)
        sql.finish(conn, [sql.Result(job_id, row["lease_token"], "success", "n1", T0, 0.0)], T0 + 1)
    again = insert(store, sql.NewJob("noop", unique=u), T0 + 2)
    assert again[2] is False and again[0] != job_id


def test_claim_orders_by_priority_then_time_and_skips_routed_jobs(store: Store) -> None:
    low = insert(store, sql.NewJob("noop", priority=5))[0]
    high = insert(store, sql.NewJob("noop", priority=0), T0 + 1)[0]
    insert(store, sql.NewJob("noop", partition="p1"))
    other_queue = insert(store, sql.NewJob("noop", queue="other"))[0]
    with store.tx() as conn:
        (first,) = sql.claim(conn, "default", 1, "n1", T0 + 2, 30)
        rest = sql.claim(conn, "default", 10, "n1", T0 + 2, 30)
    assert first["id"] == high and [r["id"] for r in rest] == [low]
    assert first["attempt"] == 1 and rest[0]["attempt"] == 1
    assert rest[0]["lease_token"] > first["lease_token"]
    assert sql.get(store.conn, other_queue).state == "available"


def test_fencing_tokens_only_grow_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    s = Store(path)
    with s.tx() as conn:
        first = sql.next_tokens(conn, 5)
    s.close()
    s = Store(path)
    with s.tx() as conn:
        assert sql.next_tokens(conn, 1) == first + 5


def test_stale_result_is_refused_after_rescue_and_release(store: Store) -> None:
    job_id = insert(store, sql.NewJob("noop", max_attempts=5))[0]
    with store.tx() as conn:
        (row,) = sql.claim(conn, "default", 1, "dead-node", T0, 10)
        old = row["lease_token"]
        assert sql.rescue(conn, T0 + 11, expired_before=T0 + 11) == [(job_id, "dead-node")]
        (row2,) = sql.claim(conn, "default", 1, "n2", T0 + 12, 10)
        refused = sql.finish(conn, [sql.Result(job_id, old, "success", "dead-node", T0, 1.0)], T0 + 13)
        assert [r.job_id for r in refused] == [job_id]
        assert sql.renew(conn, [(job_id, old)], T0 + 30) == [job_id]
        assert sql.renew(conn, [(job_id, row2["lease_token"])], T0 + 30) == []
        assert sql.finish(conn, [sql.Result(job_id, row2["lease_token"], "success", "n2", T0 + 12, 1.0)],
                          T0 + 14) == []
    outcomes = [(a["attempt"], a["node"], a["outcome"]) for a in sql.attempts(store.conn, job_id)]
    assert outcomes == [(1, "dead-node", "lost"), (2, "n2", "success")]
    assert sql.get(store.conn, job_id).state == "completed"


def test_failure_retries_with_backoff_then_discards(store: Store) -> None:
    job_id = insert(store, sql.NewJob("noop", max_attempts=2))[0]
    now = T0
    for attempt in (1, 2):
        with store.tx() as conn:
            sql.stage(conn, now)
            (row,) = sql.claim(conn, "default", 1, "n1", now, 30)
            sql.finish(conn, [sql.Result(job_id, row["lease_token"], "failure", "n1", now, 0.1, error=f"e{attempt}",
                                         backoff=20.0)], now)
        job = sql.get(store.conn, job_id)
        if attempt == 1:
            assert job.state == "retryable" and job.scheduled_at == now + 20.0
            now += 20.0
    job = sql.get(store.conn, job_id)
    assert job.state == "discarded" and [e["error"] for e in job.errors] == ["e1", "e2"]


def test_snooze_does_not_burn_an_attempt(store: Store) -> None:
    job_id = insert(store, sql.NewJob("noop"))[0]
    with store.tx() as conn:
        (row,) = sql.claim(conn, "default", 1, "n1", T0, 30)
        sql.finish(conn, [sql.Result(job_id, row["lease_token"], None, "n1", T0, 0.0, snooze=60)], T0)
    job = sql.get(store.conn, job_id)
    assert (job.state, job.attempt, job.scheduled_at) == ("scheduled", 0, T0 + 60)
    assert sql.attempts(store.conn, job_id) == []


def test_cancel_executing_records_cancelled_attempt_and_fences_the_runner(store: Store) -> None:
    job_id = insert(store, sql.NewJob("noop"))[0]
    with store.tx() as conn:
        (row,) = sql.claim(conn, "default", 1, "n1", T0, 30)
        assert sql.cancel(conn, job_id, T0 + 1) == "executing"
        assert sql.finish(conn, [sql.Result(job_id, row["lease_token"], "success", "n1", T0, 1)], T0 + 2)
    assert sql.get(store.conn, job_id).state == "cancelled"
    assert [a["outcome"] for a in sql.attempts(store.conn, job_id)] == ["cancelled"]


def test_retry_of_discarded_job_gives_it_another_attempt(store: Store) -> None:
    job_id = insert(store, sql.NewJob("noop", max_attempts=1))[0]
    with store.tx() as conn:
        (row,) = sql.claim(conn, "default", 1, "n1", T0, 30)
        sql.finish(conn, [sql.Result(job_id, row["lease_token"], "failure", "n1", T0, 0.0, error="x")], T0)
        assert sql.get(conn, job_id).state == "discarded"
        assert sql.retry(conn, job_id, T0 + 5) == "discarded"
        (row,) = sql.claim(conn, "default", 1, "n1", T0 + 5, 30)
    assert row["attempt"] == 2


def test_requeue_hands_back_without_burning_the_attempt(store: Store) -> None:
    job_id = insert(store, sql.NewJob("noop"))[0]
    with store.tx() as conn:
        (row,) = sql.claim(conn, "default", 1, "n1", T0, 30)
        assert sql.requeue(conn, [(job_id, row["lease_token"])]) == 1
    job = sql.get(store.conn, job_id)
    assert (job.state, job.attempt, job.lease_token) == ("available", 0, None)


def test_prune_deletes_old_finished_jobs_in_batches_and_keeps_attempts(store: Store) -> None:
    ids = [insert(store, sql.NewJob("noop"))[0] for _ in range(5)]
    with store.tx() as conn:
        rows = sql.claim(conn, "default", 5, "n1", T0, 30)
        sql.finish(conn, [sql.Result(r["id"], r["lease_token"], "success", "n1", T0, 0) for r in rows], T0)
        assert sql.prune(conn, T0 + 1, limit=2) == 2
        assert sql.prune(conn, T0 + 1, limit=10) == 3
        assert sql.prune(conn, T0 + 1) == 0
    assert all(sql.get(store.conn, i) is None for i in ids)
    assert store.conn.execute("SELECT count(*) FROM attempts").fetchone()[0] == 5


def test_on_finish_hook_runs_inside_the_recording_transaction(store: Store) -> None:
    seen: list[sql.FinishedAttempt] = []
    job_id = insert(store, sql.NewJob("noop", max_attempts=1))[0]
    with store.tx() as conn:
        (row,) = sql.claim(conn, "default", 1, "n1", T0, 30)
        sql.finish(conn, [sql.Result(job_id, row["lease_token"], "failure", "n1", T0, 0, error="bad")], T0,
                   on_finish=lambda c, done: seen.append(done))
    assert [(d.job_id, d.outcome, d.state, d.error) for d in seen] == [(job_id, "failure", "discarded", "bad")]


# Property: whatever interleaving of inserts, exactly one live job per unique key.
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 3), st.floats(0, 1000)), min_size=1, max_size=30))
def test_property_one_job_per_key_and_bucket(tmp_path_factory: pytest.TempPathFactory,
                                              inserts: list[tuple[int, float]]) -> None:
    s = Store(tmp_path_factory.mktemp("p") / "u.db")
    u = rules.Unique(period=100)
    expected: dict[tuple[int, int], int] = {}
    for key, offset in sorted(inserts, key=lambda x: x[1]):
        with s.tx() as conn:
            job_id, _, conflict = sql.insert(conn, sql.NewJob("noop", {"k": key}, unique=u), T0 + offset)
        bucket = (key, int((T0 + offset) // 100))
        if bucket in expected:
            assert conflict and job_id == expected[bucket]
        else:
            assert not conflict
            expected[bucket] = job_id
    assert s.conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == len(expected)
    s.close()


# Property: a random sequence of operations only ever makes legal state changes.
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["claim", "ok", "fail", "cancel", "retry", "rescue", "stage", "snooze"]),
                max_size=25))
def test_property_only_legal_transitions(tmp_path_factory: pytest.TempPathFactory, ops: list[str]) -> None:
    s = Store(tmp_path_factory.mktemp("t") / "t.db")
    conn = s.conn
    job_id = sql.insert(conn, sql.NewJob("noop", max_attempts=3), T0)[0]
    now, token = T0, None
    state = "available"
    for op in ops:
        now += 100
        if op == "claim":
            rows = sql.claim(conn, "default", 1, "n", now, 10)
            token = rows[0]["lease_token"] if rows else token
        elif op in ("ok", "fail", "snooze") and token is not None:
            outcome = {"ok": "success", "fail": "failure", "snooze": None}[op]
            sql.finish(conn, [sql.Result(job_id, token, outcome, "n", now, 0,  # type: ignore[arg-type]
                                         snooze=5 if op == "snooze" else None, backoff=1)], now)
        elif op == "cancel":
            sql.cancel(conn, job_id, now)
        elif op == "retry":
            sql.retry(conn, job_id, now)
        elif op == "rescue":
            sql.rescue(conn, now, expired_before=now)
        elif op == "stage":
            sql.stage(conn, now)
        new = sql.get(conn, job_id).state
        assert new == state or rules.can_transition(state, new), f"{state} -> {new} by {op}"  # type: ignore[arg-type]
        state = new
    attempts = conn.execute("SELECT count(*) FROM attempts WHERE job_id = ?", (job_id,)).fetchone()[0]
    job = sql.get(conn, job_id)
    assert attempts <= job.attempt + (1 if job.state == "cancelled" else 0)
    s.close()


def test_store_refuses_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    bad = tmp_path / "ashjobs.db"
    bad.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match="cannot open database"):
        Store(bad)


def test_concurrent_writer_sees_busy_timeout_not_error(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    a, b = Store(path), Store(path, busy_timeout=0.2)
    a.conn.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"), b.tx() as conn:
        sql.insert(conn, sql.NewJob("noop"), T0)
    a.conn.execute("ROLLBACK")
    with b.tx() as conn:
        sql.insert(conn, sql.NewJob("noop"), T0)


def test_counts_by_queue_and_state_seek_every_queue(store: Store) -> None:
    with store.tx() as conn:
        for queue, n in (("", 1), ("a", 2), ("b", 3), ("zz", 1)):
            for _ in range(n):
                sql.insert(conn, sql.NewJob("noop", queue=queue), T0)
        sql.insert(conn, sql.NewJob("noop", queue="b", scheduled_at=T0 + 60), T0)
        sql.claim(conn, "a", 1, "n1", T0, 30)
    assert sql.counts(store.conn) == {"": {"available": 1}, "a": {"available": 1, "executing": 1},
                                      "b": {"available": 3, "scheduled": 1}, "zz": {"available": 1}}
