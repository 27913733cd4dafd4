"""The built-in `alert` resource and its `auto_escalate` trigger.

An alert is raised `pending`. Every 5 minutes, `auto_escalate` finds pending critical/emergency alerts
older than `[apps.alerts] escalate_after` (30m) and escalates each: status `escalated`, escalated_at, a
reason, escalation_level + 1, and a notification put in the outbox in the same transaction (so the alert
is escalated exactly when its notification exists). An alert acknowledged before its worker runs is left
alone (the worker's re-check cancels it: `trigger_no_longer_applies`).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from ashjobs.clock import iso
from ashjobs.errors import UsageError
from ashjobs.resources import ActionCall, Field, Resource, Transition
from ashjobs.triggers import TriggerConfig

SEVERITIES = ("info", "warning", "critical", "emergency")
STATUSES = ("pending", "acknowledged", "resolved", "escalated", "suppressed")
OPEN = ("pending", "acknowledged", "escalated", "suppressed")
QUEUE = "alerts"

alert = Resource(
    "alert",
    fields={
        "source": "text",
        "partition": "text",
        "severity": "text",
        "message": Field("text", default=""),
        "triggered_at": "timestamp",
        "escalated_at": "timestamp",
        "escalation_reason": "text",
        "escalation_level": Field("int", default=0),
        "notification_count": Field("int", default=0),
        "last_notification_at": "timestamp",
    },
    states=STATUSES,
    initial="pending",
    transitions=[
        Transition("escalate", ["pending"], "escalated"),
        Transition("acknowledge", ["pending", "escalated"], "acknowledged"),
        Transition("suppress", ["pending", "escalated"], "suppressed"),
        Transition("resolve", OPEN, "resolved"),
    ],
    indexes=[("status", "triggered_at"), ("source", "partition")],
)


def to_dict(record: dict[str, Any]) -> dict[str, Any]:
    """The JSON shape of an alert (times in ISO 8601)."""
    out = dict(record)
    for key in ("triggered_at", "escalated_at", "last_notification_at"):
        out[key] = iso(record.get(key))
    return out


def _format_age(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


@alert.action("escalate")
def escalate(call: ActionCall) -> dict[str, Any]:
    from ashjobs.apps import notifications

    record = call.record
    assert record is not None
    age = call.now - (record["triggered_at"] or call.now)
    reason = call.args.get("reason") or f"{record['severity']} alert pending for {_format_age(age)} without acknowledgement"
    level = (record["escalation_level"] or 0) + 1
    call.transition("escalate", reason=reason, escalated_at=call.now, escalation_reason=reason,
                    escalation_level=level, notification_count=(record["notification_count"] or 0) + 1,
                    last_notification_at=call.now)
    notifications.put(
        call.conn, call.now, kind="alert.escalated",
        subject=f"[{record['severity']}] escalated (level {level}): {record['source']}",
        body=f"{record['message'] or '(no message)'}\n{reason}",
        payload={"alert": to_dict(record)}, actor=call.actor, source=f"alert:{record['id']}")
    return record


@alert.action("acknowledge")
def acknowledge(call: ActionCall) -> dict[str, Any]:
    return call.transition("acknowledge", reason=call.args.get("reason"))


@alert.action("resolve")
def resolve(call: ActionCall) -> dict[str, Any]:
    return call.transition("resolve", reason=call.args.get("reason"))


@alert.action("suppress")
def suppress(call: ActionCall) -> dict[str, Any]:
    return call.transition("suppress", reason=call.args.get("reason"))


def raise_alert(conn: sqlite3.Connection, now: float, *, severity: str, source: str, partition: str | None = None,
                message: str = "", triggered_at: float | None = None, actor: str = "system:scheduler") -> dict[str, Any]:
    """Record a new pending alert in the caller's transaction; returns it (as stored, times in Unix seconds)."""
    if severity not in SEVERITIES:
        raise UsageError(f"severity: expected one of {', '.join(SEVERITIES)}, got {severity!r}")
    if not source:
        raise UsageError("source: must not be empty")
    return alert.create(conn, {"source": source, "partition": partition, "severity": severity,
                               "message": message, "triggered_at": now if triggered_at is None else triggered_at},
                        now=now, actor=actor, action="raise")


def resolve_alerts_from(conn: sqlite3.Connection, now: float, *, source: str, partition: str | None,
                        actor: str) -> int:
    """Resolve every open alert of (source, partition) — the check recovered. Returns how many."""
    from ashjobs.store import resources as sql

    where = ["source = ?", "partition IS ?", f"status IN ({','.join('?' * len(OPEN))})"]
    records = sql.select(conn, alert, " AND ".join(where), [source, partition, *OPEN], limit=10_000,
                         order="id ASC")
    for record in records:
        alert.transition(conn, record, "resolve", now=now, actor=actor, action="resolve",
                         reason="source recovered")
    return len(records)


def set_status(conn: sqlite3.Connection, now: float, alert_id: int, action: str, *, actor: str,
               reason: str | None = None) -> dict[str, Any]:
    """Run a status action (acknowledge, resolve, suppress) on one alert."""
    return alert.run(conn, action, alert_id, now=now, actor=actor, args={"reason": reason})


def list_alerts(conn: sqlite3.Connection, *, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    from ashjobs.store import resources as sql

    if status is not None and status not in STATUSES:
        raise UsageError(f"--status: expected one of {', '.join(STATUSES)}, got {status!r}")
    if not sql.exists(conn, alert):  # no alert was ever raised: nothing to create just to read
        return []
    if status is None:
        return sql.select(conn, alert, limit=limit)
    return sql.select(conn, alert, "status = ?", [status], limit=limit)


def triggers(cfg: Any) -> list[TriggerConfig]:
    apps = cfg.section("apps")
    if not apps.alerts.enabled:
        return []
    return [TriggerConfig(
        name="auto_escalate", resource="alert", action="escalate", schedule="*/5 * * * *", queue=QUEUE,
        where={"status": "pending", "triggered_at": {"older_than": apps.alerts.escalate_after},
               "severity": {"in": ["critical", "emergency"]}},
    )]
