"""Trace summaries over a real SQLite file with an injected clock."""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ashjobs import config
from ashjobs.apps import trace_summaries as ts
from ashjobs.clock import FakeClock
from ashjobs.store import Store
from ashjobs.store import trace_summaries as sql

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a bucket boundary


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "ashjobs.db")
    yield s
    s.close()


def add_attempts(store, finished_at, durations, *, task="probe", queue="default", outcome="success"):
    with store.tx() as conn:
        for i, d in enumerate(durations):
            conn.execute("INSERT INTO attempts (job_id, attempt, task, queue, node, started_at, finished_at, "
                         "outcome, error, duration) VALUES (?, 1, ?, ?, 'n', ?, ?, ?, NULL, ?)",
                         (i + 1, task, queue, finished_at - d, finished_at, outcome, d))


def refresh(store, now, **kw):
    with store.tx() as conn:
        return ts.refresh(conn, now, **kw)


def summaries(store):
    return {(r["task"], r["queue"], r["bucket"]): r for r in sql.since(store.conn, 0)}


def test_percentile_nearest_rank():
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert ts.percentile(values, 50) == 50.0
    assert ts.percentile(values, 95) == 95.0
    assert ts.percentile(values, 100) == 100.0
    assert ts.percentile(values, 0) == 1.0
    assert ts.percentile([0.2], 95) == 0.2
    assert ts.percentile([1.0, 2.0], 50) == 1.0
    assert ts.percentile([1.0, 2.0, 3.0, 4.0], 95) == 4.0
    assert ts.percentile([], 50) == 0.0
    with pytest.raises(ValueError, match=r"0\.\.100"):
        ts.percentile([1.0], 101)


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=200),
       st.floats(min_value=0, max_value=100))
def test_percentile_is_an_observed_value_with_enough_below(values, q):
    values = sorted(values)
    p = ts.percentile(values, q)
    assert p in values
    assert sum(v <= p for v in values) >= math.ceil(q / 100 * len(values))
    assert sum(v < p for v in values) < max(1, math.ceil(q / 100 * len(values)))


def test_rollup_counts_and_percentiles(store):
    # Minute 0: 100 successes of 1..100 ms, 3 failures, 1 timeout, 2 lost, 1 cancelled; minute 1: 2 of another task.
    add_attempts(store, T0 + 30, [i / 1000 for i in range(1, 101)])
    add_attempts(store, T0 + 31, [5.0, 6.0, 7.0], outcome="failure")
    add_attempts(store, T0 + 32, [30.0], outcome="timeout")
    add_attempts(store, T0 + 33, [0.5, 0.5], outcome="lost")
    add_attempts(store, T0 + 34, [0.001], outcome="cancelled")
    add_attempts(store, T0 + 90, [2.0, 4.0], task="ping", queue="checks")
    refresh(store, T0 + 120)
    got = summaries(store)
    assert set(got) == {("probe", "default", T0), ("ping", "checks", T0 + 60)}
    probe = got[("probe", "default", T0)]
    assert (probe["count"], probe["successes"], probe["failures"], probe["lost"], probe["cancelled"]) == (
        107, 100, 4, 2, 1)
    durations = sorted([i / 1000 for i in range(1, 101)] + [5.0, 6.0, 7.0, 30.0, 0.5, 0.5, 0.001])
    assert probe["p50"] == ts.percentile(durations, 50) == 0.053
    assert probe["p95"] == ts.percentile(durations, 95) == 0.5
    assert probe["max_duration"] == 30.0
    ping = got[("ping", "checks", T0 + 60)]
    assert (ping["count"], ping["p50"], ping["p95"], ping["max_duration"]) == (2, 2.0, 4.0, 4.0)


def test_rerun_replaces_and_never_double_counts(store):
    add_attempts(store, T0 + 10, [1.0, 2.0, 3.0])
    refresh(store, T0 + 60)
    refresh(store, T0 + 60)  # the same run twice
    refresh(store, T0 + 120)  # the next run overlaps the last 5 minutes
    assert summaries(store)[("probe", "default", T0)]["count"] == 3
    # An attempt recorded late into an already summarised minute is picked up by the look-back.
    add_attempts(store, T0 + 20, [10.0])
    refresh(store, T0 + 240)
    row = summaries(store)[("probe", "default", T0)]
    assert (row["count"], row["max_duration"]) == (4, 10.0)


def test_only_the_lookback_window_is_recomputed(store):
    add_attempts(store, T0 + 10, [1.0])
    refresh(store, T0 + 600)
    # Tamper with the summary: the next run redoes only from 5 minutes before the last watermark (T0 + 300),
    # so it leaves minute 0 alone; a run that reaches back that far would have rewritten it.
    with store.tx() as conn:
        conn.execute("UPDATE trace_summaries SET count = 99")
    refresh(store, T0 + 720)
    assert summaries(store)[("probe", "default", T0)]["count"] == 99
    assert sql.watermark(store.conn) == T0 + 720


def test_first_run_backfills_one_hour(store):
    add_attempts(store, T0 - 2 * 3600, [1.0])  # too old for the first run
    add_attempts(store, T0 - 1800, [1.0])
    result = refresh(store, T0)
    assert result["buckets"] == 1 and set(summaries(store)) == {("probe", "default", T0 - 1800)}


def test_retention_deletes_old_summaries(store):
    add_attempts(store, T0 + 10, [1.0])
    refresh(store, T0 + 60)
    refresh(store, T0 + 3 * 86400 - 60)  # just inside three days: kept
    assert len(summaries(store)) == 1
    result = refresh(store, T0 + 3 * 86400 + 60)
    assert result["pruned"] == 1 and summaries(store) == {}
    add_attempts(store, T0 + 3 * 86400 + 100, [1.0])
    refresh(store, T0 + 3 * 86400 + 200)
    refresh(store, T0 + 3 * 86400 + 7200, retention=3600.0)  # a shorter retention from config
    assert summaries(store) == {}


def test_last_hour(store):
    add_attempts(store, T0 - 7200 + 10, [100.0])  # older than the hour: not shown
    add_attempts(store, T0 - 1800, [1.0, 1.0, 1.0, 9.0])
    add_attempts(store, T0 - 60, [2.0, 50.0], outcome="failure")
    with store.tx() as conn:
        ts.refresh(conn, T0 - 7200 + 60)
        ts.refresh(conn, T0)
    (row,) = ts.last_hour(store.conn, T0)
    assert (row["task"], row["count"], row["successes"], row["failures"]) == ("probe", 6, 4, 2)
    assert row["p50"] == 1.0 and row["p95"] == 50.0 and row["max_duration"] == 50.0


def test_cron_entry_and_its_env_override(tmp_path):
    from ashjobs import cron

    cfg = config.from_dict({}, data_dir=str(tmp_path))
    (entry,) = ts.cron_entries(cfg)
    assert (entry.name, entry.task, entry.schedule, entry.queue, entry.max_attempts, entry.unique_for) == (
        "refresh_trace_summaries", "ashjobs.trace_summaries.refresh", "*/2 * * * *", "maintenance", 3, 180.0)
    assert entry.validate() is None
    by_name = {e.name: e for e in cron.entries(cfg, {})}
    assert by_name["refresh_trace_summaries"].schedule == "*/2 * * * *"
    by_name = {e.name: e for e in cron.entries(cfg, {"TRACE_SUMMARIES_REFRESH_CRON": "*/10 * * * *"})}
    assert by_name["refresh_trace_summaries"].schedule == "*/10 * * * *"
    assert cron.next_fire(by_name["refresh_trace_summaries"], T0 + 1) == T0 + 600


def test_retention_and_enabled_from_config(tmp_path):
    cfg = config.from_dict({"apps": {"trace_summaries": {"retention": "1d"}}}, data_dir=str(tmp_path))
    assert ts._settings(cfg) == (True, 86400.0)
    assert ts._settings(config.from_dict({}, data_dir=str(tmp_path))) == (True, 3 * 86400.0)
    off = config.from_dict({"apps": {"trace_summaries": {"enabled": False}}}, data_dir=str(tmp_path))
    assert ts.cron_entries(off) == []


def test_refresh_task_through_services(tmp_path):
    from tests.notify_helpers import close, services

    svc = services(tmp_path, {})
    try:
        assert isinstance(svc.clock, FakeClock)
        svc.clock.set(T0 + 120)
        add_attempts(svc.store, T0 + 30, [1.0, 3.0])
        from ashjobs import tasks
        from ashjobs.tasks import JobContext

        t = tasks.get(ts.TASK)
        assert (t.queue, t.max_attempts, t.context) == ("maintenance", 3, True)
        ctx = JobContext(1, 1, 3, ts.TASK, "maintenance", "test", None, {}, svc)
        result = asyncio.run(t.fn(ctx))
        assert result["buckets"] == 1
        assert summaries(svc.store)[("probe", "default", T0)]["count"] == 2
    finally:
        close(svc)


def test_status_shows_the_last_hour(tmp_path):
    import json
    import subprocess
    import sys
    import time

    from tests.conftest import base_env

    with Store(tmp_path / "ashjobs.db") as s:
        now = time.time()
        add_attempts(s, now - 600, [0.010, 0.020, 0.030], task="ping", queue="checks")
        refresh(s, now)
    out = subprocess.run([sys.executable, "-m", "ashjobs", "status", "--json"], capture_output=True, text=True,
                         env=base_env(tmp_path), timeout=60, check=True).stdout
    (row,) = json.loads(out)["trace_summaries"]
    assert (row["task"], row["queue"], row["count"], row["p50"], row["max_duration"]) == ("ping", "checks", 3,
                                                                                         0.020, 0.030)
