"""SQL for the notification outbox and its delivery history. Functions run in the caller's transaction."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from ashjobs.store.jobs import dumps

STATUSES = ("pending", "sent", "failed")


def insert(conn: sqlite3.Connection, now: float, *, kind: str, subject: str, body: str, payload: dict[str, Any],
           actor: str | None, source: str | None) -> int:
    row = conn.execute("INSERT INTO notifications (kind, subject, body, payload, actor, source, created_at) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                       (kind, subject, body, dumps(payload), actor, source, now)).fetchone()
    return int(row[0])


def set_job(conn: sqlite3.Connection, notification_id: int, job_id: int) -> None:
    conn.execute("UPDATE notifications SET job_id = ? WHERE id = ?", (job_id, notification_id))


def get(conn: sqlite3.Connection, notification_id: int) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM notifications WHERE id = ?", (notification_id,)).fetchone()
    if row is None:
        return None
    d = dict(row)
    d["payload"] = json.loads(d["payload"])
    return d


def accepted_channels(conn: sqlite3.Connection, notification_id: int) -> set[str]:
    return {r[0] for r in conn.execute("SELECT DISTINCT channel FROM notification_deliveries "
                                       "WHERE notification_id = ? AND outcome = 'accepted'", (notification_id,))}


def record_delivery(conn: sqlite3.Connection, notification_id: int, *, attempt: int, channel: str, outcome: str,
                    code: int | None, error: str | None, at: float, duration: float) -> None:
    conn.execute("INSERT INTO notification_deliveries (notification_id, attempt, channel, outcome, code, error, "
                 "at, duration) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (notification_id, attempt, channel, outcome, code, error, at, duration))


def finish_round(conn: sqlite3.Connection, notification_id: int, *, status: str, attempt: int, now: float,
                 error: str | None) -> None:
    """After one delivery round (one job attempt): the notification's status and its last error."""
    conn.execute("UPDATE notifications SET status = ?, attempts = max(attempts, ?), last_error = ?, "
                 "sent_at = CASE WHEN ? = 'sent' THEN ? ELSE sent_at END WHERE id = ? AND status != 'sent'",
                 (status, attempt, error, status, now, notification_id))


def list_notifications(conn: sqlite3.Connection, *, status: str | None = None,
                       limit: int = 100) -> list[dict[str, Any]]:
    sql = ("SELECT id, kind, subject, status, attempts, created_at, sent_at, last_error, source, actor, job_id "
           "FROM notifications")
    params: list[Any] = []
    if status is not None:
        sql += " WHERE status = ?"
        params.append(status)
    sql += " ORDER BY id DESC LIMIT ?"
    return [dict(r) for r in conn.execute(sql, [*params, limit])]


def deliveries(conn: sqlite3.Connection, notification_id: int) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT attempt, channel, outcome, code, error, at, duration FROM notification_deliveries "
                        "WHERE notification_id = ? ORDER BY id", (notification_id,))
    return [dict(r) for r in rows]
