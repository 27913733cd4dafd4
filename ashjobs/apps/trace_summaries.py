"""Trace summaries: job attempts rolled up per (task, queue, minute) with counts and p50/p95/max durations,
kept for a retention (default 3 days) so `ashjobs status` can show the last hour without scanning attempts.

A cron entry (`refresh_trace_summaries`, every 2 minutes) runs the refresh. Each run recomputes every bucket
from five minutes before the previous run's watermark up to now, from the attempts table itself, and
replaces those buckets whole: a re-run, an overlapping run or a late attempt never counts anything twice.
"""

from __future__ import annotations

import itertools
import math
import sqlite3
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ashjobs.tasks import task

if TYPE_CHECKING:
    from ashjobs.config import Config
    from ashjobs.cron import CronEntry
    from ashjobs.tasks import JobContext

NAME = "refresh_trace_summaries"
TASK = "ashjobs.trace_summaries.refresh"
SCHEDULE = "*/2 * * * *"
SCHEDULE_ENV = "TRACE_SUMMARIES_REFRESH_CRON"
BUCKET = 60.0  # seconds per summary row
LOOKBACK = 300.0  # each run also redoes the 5 minutes before the last watermark (late or slow attempts)
BACKFILL = 3600.0  # the first run summarises the last hour
DEFAULT_RETENTION = 3 * 86400.0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of ascending `values` (a value that was observed): the smallest value with at
    least q% of the values at or below it. 0.0 for no values."""
    if not values:
        return 0.0
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    rank = max(1, math.ceil(q / 100 * len(values)))
    return float(values[rank - 1])


def summarize(rows: Iterable[tuple[str, str, float, str, float]], now: float) -> list[dict[str, Any]]:
    """Pure: (task, queue, bucket, outcome, duration) rows, grouped and ascending by duration within each
    group, into one summary per (task, queue, bucket)."""
    out = []
    for (task_name, queue, bucket), group in itertools.groupby(rows, key=lambda r: (r[0], r[1], r[2])):
        durations, outcomes = [], {"success": 0, "failure": 0, "timeout": 0, "lost": 0, "cancelled": 0}
        for _, _, _, outcome, duration in group:
            durations.append(float(duration))
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        out.append({"bucket": float(bucket), "task": task_name, "queue": queue, "count": len(durations),
                    "successes": outcomes["success"], "failures": outcomes["failure"] + outcomes["timeout"],
                    "lost": outcomes["lost"], "cancelled": outcomes["cancelled"],
                    "p50": percentile(durations, 50), "p95": percentile(durations, 95),
                    "max_duration": durations[-1], "updated_at": now})
    return out


def compute(conn: sqlite3.Connection, now: float) -> tuple[float, list[dict[str, Any]]]:
    """Read side of a run: the first bucket to rewrite (5 minutes before the last watermark) and the
    summaries from there on. Needs only a read snapshot, so the daemon runs it off the writer thread."""
    from ashjobs.store import trace_summaries as sql

    mark = sql.watermark(conn)
    since = (now - BACKFILL) if mark is None else min(mark, now)  # min: the wall clock may have stepped back
    start = math.floor((since - LOOKBACK) / BUCKET) * BUCKET
    return start, summarize(sql.attempts_since(conn, start, BUCKET), now)


def apply(conn: sqlite3.Connection, now: float, start: float, summaries: list[dict[str, Any]], *,
          retention: float = DEFAULT_RETENTION) -> dict[str, Any]:
    """Write side: replace the buckets from `start` on, move the watermark to `now`, drop summaries older
    than the retention. An attempt committed after compute's snapshot finished after `now - LOOKBACK`,
    so the next run's window covers it."""
    from ashjobs.store import trace_summaries as sql

    sql.replace_from(conn, start, summaries)
    sql.set_watermark(conn, now)
    pruned = sql.delete_before(conn, now - retention)
    return {"from": start, "buckets": len(summaries), "pruned": pruned}


def refresh(conn: sqlite3.Connection, now: float, *, retention: float = DEFAULT_RETENTION) -> dict[str, Any]:
    """One whole run in the caller's write transaction."""
    start, summaries = compute(conn, now)
    return apply(conn, now, start, summaries, retention=retention)


def last_hour(conn: sqlite3.Connection, now: float) -> list[dict[str, Any]]:
    """Per (task, queue) over the last hour, for `ashjobs status`. Counts are exact; p50 is the
    count-weighted median of the minute medians and p95 the worst minute's p95 (a safe upper bound)."""
    from ashjobs.store import trace_summaries as sql

    out = []
    rows = sql.since(conn, math.floor((now - 3600.0) / BUCKET) * BUCKET)
    for (task_name, queue), group in itertools.groupby(rows, key=lambda r: (r["task"], r["queue"])):
        buckets = list(group)
        weighted = sorted((b["p50"], b["count"]) for b in buckets)
        half, seen, p50 = sum(c for _, c in weighted) / 2, 0, 0.0
        for value, count in weighted:
            seen += count
            if seen >= half:
                p50 = value
                break
        out.append({"task": task_name, "queue": queue,
                    **{k: sum(b[k] for b in buckets) for k in ("count", "successes", "failures", "lost", "cancelled")},
                    "p50": p50, "p95": max(b["p95"] for b in buckets),
                    "max_duration": max(b["max_duration"] for b in buckets)})
    return out


def _settings(cfg: Config) -> tuple[bool, float]:
    """(enabled, retention) from [apps.trace_summaries]."""
    try:
        app = cfg.section("apps").trace_summaries
    except ImportError:  # a copy without the apps section: the defaults
        return True, DEFAULT_RETENTION
    return bool(app.enabled), float(app.retention)


def cron_entries(cfg: Config) -> list[CronEntry]:
    """The built-in cron entry (a provider of ashjobs.cron.PROVIDERS); none when turned off."""
    from ashjobs.config import Duration
    from ashjobs.cron import CronEntry

    enabled, _ = _settings(cfg)
    if not enabled:
        return []
    return [CronEntry(name=NAME, task=TASK, schedule=SCHEDULE, schedule_env=SCHEDULE_ENV, queue="maintenance",
                      max_attempts=3, unique_for=Duration(180.0))]


@task(TASK, queue="maintenance", max_attempts=3, context=True, timeout=300.0)
async def refresh_task(ctx: JobContext) -> dict[str, Any]:
    import asyncio

    svc = ctx.services
    if svc is None:
        raise RuntimeError(f"{TASK} runs on the scheduler (it needs the database)")
    _, retention = _settings(svc.cfg)
    now = svc.clock.now()

    def read() -> tuple[float, list[dict[str, Any]]]:
        conn = svc.store.new_connection()  # its own snapshot, off the event loop and the writer
        try:
            conn.execute("BEGIN")
            return compute(conn, now)
        finally:
            conn.close()

    start, summaries = await asyncio.to_thread(read)
    result: dict[str, Any] = await svc.write(lambda conn: apply(conn, now, start, summaries, retention=retention))
    return result
