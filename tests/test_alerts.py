"""The built-in alert resource: auto_escalate at its slot (one signed notification really delivered),
what is not escalated, and an acknowledgement racing the worker."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json

import pytest
from notify_helpers import Receiver
from triggers_helpers import SLOT, attempts_errors, close, run_jobs, services

from ashjobs import triggers
from ashjobs.apps import alerts
from ashjobs.clock import iso
from ashjobs.cron_loop import CronLoop
from ashjobs.errors import IllegalTransition, UsageError
from ashjobs.store import jobs as sql
from ashjobs.store import notifications as outbox

SECRET = "s3cret"
MIN = 60.0


def _raise(svc, minutes_ago, severity="critical", source="edge-7/disk"):
    with svc.store.tx() as conn:
        return alerts.raise_alert(conn, svc.clock.now(), severity=severity, source=source, partition="p1",
                                  message="/var 99% full", triggered_at=SLOT - minutes_ago * MIN)["id"]


def _fire_at_slot(svc):
    """The real cron loop reaches the trigger's slot and enqueues its scheduler job; run it, return the
    ids of every worker job there is."""
    loop = CronLoop(svc)
    asyncio.run(loop.tick(svc.clock.now()))  # starts the loop: nothing is due yet
    svc.clock.set(SLOT)
    fired = {name: (slot, job) for name, slot, job in asyncio.run(loop.tick())}
    slot, sched = fired["trigger:auto_escalate"]
    assert slot == SLOT and sched is not None
    assert sql.get(svc.store.conn, sched).meta["slot"] == iso(SLOT)
    run_jobs(svc, [sched])
    return [j.id for j in sql.list_jobs(svc.store.conn, task=triggers.WORK_TASK)]


def test_critical_alert_escalated_at_slot_with_one_signed_notification(tmp_path):
    with Receiver() as rx:
        svc = services(tmp_path, start=SLOT - MIN, raw={
            "notify": {"channels": ["webhook"], "webhook": {"url": rx.url, "secret": SECRET}},
            "queues": {"default": 5, "alerts": 5, "notifications": 5}})
        try:
            late = _raise(svc, 31, source="edge-7/disk")
            warning = _raise(svc, 31, severity="warning", source="edge-7/fan")
            young = _raise(svc, 29, source="edge-8/disk")
            emergency = _raise(svc, 45, severity="emergency", source="edge-9/power")
            with svc.store.tx() as conn:
                alerts.set_status(conn, svc.clock.now(), emergency, "acknowledge", actor="user:ann")
            workers = _fire_at_slot(svc)
            assert len(workers) == 1
            assert run_jobs(svc, workers) == {workers[0]: "completed"}
            deliveries = [j.id for j in sql.list_jobs(svc.store.conn, task="ashjobs.notify.deliver")]
            assert run_jobs(svc, deliveries) == {deliveries[0]: "completed"}

            conn = svc.store.conn
            rec = alerts.alert.get(conn, late)
            assert (rec["status"], rec["escalated_at"], rec["escalation_level"], rec["notification_count"],
                    rec["last_notification_at"]) == ("escalated", SLOT, 1, 1, SLOT)
            assert rec["escalation_reason"] == "critical alert pending for 31m without acknowledgement"
            for other, status in ((warning, "pending"), (young, "pending"), (emergency, "acknowledged")):
                assert alerts.alert.get(conn, other)["status"] == status
            hist = alerts.alert.history(conn, late)[-1]
            assert (hist["from_state"], hist["to_state"], hist["actor"], hist["job_id"]) == (
                "pending", "escalated", "system:scheduler", workers[0])
            [note] = outbox.list_notifications(conn)
            assert (note["kind"], note["source"], note["status"]) == ("alert.escalated", f"alert:{late}", "sent")
        finally:
            close(svc)
    assert len(rx.requests) == 1
    headers, body = rx.requests[0]
    ts = headers["x-ashjobs-timestamp"]
    expected = "sha256=" + hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-ashjobs-signature"], expected)
    assert json.loads(body)["payload"]["alert"]["id"] == late


def test_second_slot_does_not_escalate_again(tmp_path):
    svc = services(tmp_path, start=SLOT - MIN)
    try:
        aid = _raise(svc, 31)
        first = _fire_at_slot(svc)
        run_jobs(svc, first)
        svc.clock.set(SLOT + 5 * MIN)
        fire = triggers.run_scheduler(svc.writer.call, triggers.get(svc.cfg, "auto_escalate"), svc.clock.now())
        assert (fire.matched, fire.enqueued) == (0, 0)  # nothing new enqueued
        assert alerts.alert.get(svc.store.conn, aid)["escalation_level"] == 1
        assert len(outbox.list_notifications(svc.store.conn)) == 1
    finally:
        close(svc)


def test_alert_acknowledged_between_enqueue_and_run_ends_no_longer_applies(tmp_path):
    svc = services(tmp_path)
    try:
        aid = _raise(svc, 31)
        fire = triggers.run_scheduler(svc.writer.call, triggers.get(svc.cfg, "auto_escalate"), svc.clock.now(),
                                      collect_ids=True)
        [job] = fire.job_ids
        with svc.store.tx() as conn:
            alerts.set_status(conn, svc.clock.now(), aid, "acknowledge", actor="user:ann")
        assert run_jobs(svc, [job]) == {job: "cancelled"}
        assert attempts_errors(svc, job) == [("cancelled", "trigger_no_longer_applies")]
        assert alerts.alert.get(svc.store.conn, aid)["status"] == "acknowledged"
        assert outbox.list_notifications(svc.store.conn) == []
    finally:
        close(svc)


def test_escalate_after_comes_from_config(tmp_path):
    svc = services(tmp_path, {"apps": {"alerts": {"escalate_after": "2h"}}}, start=SLOT - MIN)
    try:
        _raise(svc, 90)
        assert _fire_at_slot(svc) == []
    finally:
        close(svc)


def test_raise_resolve_and_illegal_status_changes(tmp_path):
    svc = services(tmp_path)
    try:
        a = _raise(svc, 0, source="s1")
        b = _raise(svc, 0, source="s1", severity="warning")
        c = _raise(svc, 0, source="s2")
        now = svc.clock.now()
        with svc.store.tx() as conn:
            alerts.set_status(conn, now, b, "acknowledge", actor="user:ann")
            assert alerts.resolve_alerts_from(conn, now, source="s1", partition="p1", actor="check:ping") == 2
            assert alerts.resolve_alerts_from(conn, now, source="s1", partition=None, actor="check:ping") == 0
        conn = svc.store.conn
        assert [alerts.alert.get(conn, i)["status"] for i in (a, b, c)] == ["resolved", "resolved", "pending"]
        with pytest.raises(IllegalTransition, match=r"cannot acknowledge from 'resolved'"), svc.store.tx() as conn:
            alerts.set_status(conn, now, a, "acknowledge", actor="user:ann")
        with pytest.raises(UsageError, match="severity: expected one of info, warning, critical, emergency"):
            _raise(svc, 0, severity="bad")
        assert [h["action"] for h in alerts.alert.history(conn, b)] == ["raise", "acknowledge", "resolve"]
    finally:
        close(svc)
