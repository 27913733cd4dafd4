"""The notification outbox: `put` records a notification and its delivery job in the caller's transaction,
so a notification exists exactly when the change that caused it commits. Delivery: `ashjobs.notify`.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from ashjobs.queue import Unique
from ashjobs.store import jobs
from ashjobs.store import notifications as outbox

DELIVER_TASK = "ashjobs.notify.deliver"
QUEUE = "notifications"
MAX_ATTEMPTS = 10


def put(conn: sqlite3.Connection, now: float, *, kind: str, subject: str, body: str, payload: dict[str, Any],
        actor: str | None = None, source: str | None = None) -> int:
    """Insert an outbox row and the job that delivers it (queue "notifications"). Returns the id."""
    notification_id = outbox.insert(conn, now, kind=kind, subject=subject, body=body, payload=payload,
                                    actor=actor, source=source)
    job_id, _, _ = jobs.insert(conn, jobs.NewJob(
        task=DELIVER_TASK, queue=QUEUE, args={"notification_id": notification_id}, max_attempts=MAX_ATTEMPTS,
        # One delivery job per notification, for ever: a second put of the same id cannot double-send.
        unique=Unique(key=f"notification:{notification_id}"), actor=actor,
        meta={"notification": notification_id, "kind": kind}), now)
    outbox.set_job(conn, notification_id, job_id)
    return notification_id
