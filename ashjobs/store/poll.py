"""SQL for poll-check state: consecutive failures per [[poll]] entry and whether its alert is open."""

from __future__ import annotations

import sqlite3
from typing import Any


def get(conn: sqlite3.Connection, name: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM poll_state WHERE name = ?", (name,)).fetchone()
    return dict(row) if row else None


def put(conn: sqlite3.Connection, name: str, *, partition: str | None, failures: int, alerting: bool,
        outcome: str, error: str | None, job_id: int, now: float) -> None:
    conn.execute(
        "INSERT INTO poll_state (name, partition, consecutive_failures, alerting, last_outcome, last_error, "
        "last_job_id, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
        "partition = excluded.partition, consecutive_failures = excluded.consecutive_failures, "
        "alerting = excluded.alerting, last_outcome = excluded.last_outcome, last_error = excluded.last_error, "
        "last_job_id = excluded.last_job_id, updated_at = excluded.updated_at",
        (name, partition, failures, int(alerting), outcome, error, job_id, now))


def all_states(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute("SELECT * FROM poll_state ORDER BY name")]
