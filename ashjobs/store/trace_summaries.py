"""SQL for trace summaries: attempts rolled up per (task, queue, time bucket). Runs in the caller's transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

WATERMARK = "attempts"
_COLUMNS = ("bucket", "task", "queue", "count", "successes", "failures", "lost", "cancelled", "p50", "p95",
            "max_duration", "updated_at")


def watermark(conn: sqlite3.Connection) -> float | None:
    row = conn.execute("SELECT watermark FROM trace_summary_state WHERE name = ?", (WATERMARK,)).fetchone()
    return None if row is None else float(row[0])


def set_watermark(conn: sqlite3.Connection, value: float) -> None:
    conn.execute("INSERT INTO trace_summary_state (name, watermark) VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
                 "SET watermark = excluded.watermark", (WATERMARK, value))


def attempts_since(conn: sqlite3.Connection, start: float, bucket: float) -> Iterator[tuple[str, str, float, str, float]]:
    """(task, queue, bucket start, outcome, duration) of attempts finished at or after `start`, ordered so that
    each (task, queue, bucket) group is contiguous and its durations ascend."""
    return conn.execute(
        "SELECT task, queue, (CAST(finished_at / :b AS INTEGER)) * :b AS bucket, outcome, duration FROM attempts "
        "WHERE finished_at >= :start ORDER BY task, queue, bucket, duration", {"b": bucket, "start": start})


def replace_from(conn: sqlite3.Connection, start: float, rows: Iterable[dict[str, Any]]) -> int:
    """Every summary from bucket `start` on is rewritten from `rows`: re-running never double-counts."""
    conn.execute("DELETE FROM trace_summaries WHERE bucket >= ?", (start,))
    cur = conn.executemany(f"INSERT INTO trace_summaries ({', '.join(_COLUMNS)}) VALUES "
                           f"({', '.join(':' + c for c in _COLUMNS)})", rows)
    return cur.rowcount


def delete_before(conn: sqlite3.Connection, before: float) -> int:
    return conn.execute("DELETE FROM trace_summaries WHERE bucket < ?", (before,)).rowcount


def since(conn: sqlite3.Connection, start: float) -> list[dict[str, Any]]:
    rows = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM trace_summaries WHERE bucket >= ? "
                        "ORDER BY task, queue, bucket", (start,))
    return [dict(r) for r in rows]
