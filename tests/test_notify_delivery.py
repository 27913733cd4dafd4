"""Delivering notifications through real channels: a local HTTP server, a real subprocess, the log."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sys

import pytest

from ashjobs import config
from ashjobs.apps.notifications import put
from ashjobs.errors import ConfigError
from ashjobs.notify import backoff, deliver_notification
from ashjobs.store import jobs
from ashjobs.store import notifications as outbox
from tests.notify_helpers import Receiver, close, run_due, services

SECRET = "s3cret-for-tests"


def _put(svc, **kw):
    with svc.store.tx() as conn:
        return put(conn, svc.clock.now(), kind=kw.get("kind", "alert.escalated"), subject="disk full on edge-7",
                   body="/var is 99% full", payload={"alert": 42}, actor="system:scheduler", source="alert:42")


def test_one_signed_notification_reaches_the_webhook(tmp_path):
    with Receiver() as rx:
        svc = services(tmp_path, {"notify": {"channels": ["webhook"], "webhook": {"url": rx.url, "secret": SECRET}}})
        try:
            nid = _put(svc)
            states = asyncio.run(run_due(svc, "notifications"))
            assert list(states.values()) == ["completed"]
            assert asyncio.run(run_due(svc, "notifications")) == {}  # nothing left to send
            assert outbox.get(svc.store.conn, nid)["status"] == "sent"
        finally:
            close(svc)
    assert len(rx.requests) == 1
    headers, body = rx.requests[0]
    ts = headers["x-ashjobs-timestamp"]
    assert int(ts) == int(svc.clock.now())
    expected = "sha256=" + hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-ashjobs-signature"], expected)
    wrong = "sha256=" + hmac.new(b"other", ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers["x-ashjobs-signature"] != wrong
    doc = json.loads(body)
    assert doc["id"] == nid and doc["subject"] == "disk full on edge-7" and doc["payload"] == {"alert": 42}
    assert headers["x-ashjobs-notification"] == str(nid)


def test_webhook_failing_twice_is_retried_and_ends_sent(tmp_path):
    with Receiver([500, 500, 200]) as rx:
        svc = services(tmp_path, {"notify": {"channels": ["webhook", "log"], "webhook": {"url": rx.url}}})
        try:
            nid = _put(svc)
            job_id = outbox.get(svc.store.conn, nid)["job_id"]
            rounds = []
            for _ in range(3):
                rounds.append(asyncio.run(run_due(svc, "notifications"))[job_id])
                assert asyncio.run(run_due(svc, "notifications")) == {}  # the retry waits for its backoff
                svc.clock.advance(backoff(len(rounds)) + 1)
            assert rounds == ["retryable", "retryable", "completed"]
            row = outbox.get(svc.store.conn, nid)
            assert (row["status"], row["attempts"], row["last_error"]) == ("sent", 3, None)
            assert row["sent_at"] is not None
            tries = outbox.deliveries(svc.store.conn, nid)
            webhook = [(d["attempt"], d["outcome"], d["code"]) for d in tries if d["channel"] == "webhook"]
            assert webhook == [(1, "failed", 500), (2, "failed", 500), (3, "accepted", 200)]
            assert "HTTP 500: broken!" in tries[0]["error"]
            # The log channel accepted in round 1 and is not repeated by the retries.
            assert [(d["attempt"], d["outcome"]) for d in tries if d["channel"] == "log"] == [(1, "accepted")]
            assert [a["outcome"] for a in jobs.attempts(svc.store.conn, job_id)] == ["failure", "failure", "success"]
        finally:
            close(svc)
    assert len(rx.requests) == 3


def test_last_failed_round_marks_the_notification_failed(tmp_path):
    with Receiver([503]) as rx:
        svc = services(tmp_path, {"notify": {"channels": ["webhook"], "webhook": {"url": rx.url}}})
        try:
            nid = _put(svc)
            with pytest.raises(Exception, match="webhook: HTTP 503"):
                asyncio.run(deliver_notification(svc, nid, attempt=10, max_attempts=10))
            row = outbox.get(svc.store.conn, nid)
            assert row["status"] == "failed" and "HTTP 503" in row["last_error"]
        finally:
            close(svc)


def test_unreachable_webhook_is_a_recorded_failure(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    svc = services(tmp_path, {"notify": {"channels": ["webhook"],
                                         "webhook": {"url": f"http://127.0.0.1:{port}/", "timeout": "2s"}}})
    try:
        nid = _put(svc)
        with pytest.raises(Exception, match="webhook: ConnectionRefusedError"):
            asyncio.run(deliver_notification(svc, nid, attempt=1, max_attempts=10))
        (d,) = outbox.deliveries(svc.store.conn, nid)
        assert d["outcome"] == "failed" and d["code"] is None
        assert outbox.get(svc.store.conn, nid)["status"] == "pending"
    finally:
        close(svc)


def test_command_channel_gets_the_json_on_stdin(tmp_path):
    out = tmp_path / "received.json"
    script = f"import sys, os; open({str(out)!r}, 'wb').write(sys.stdin.buffer.read()); " \
             f"assert os.environ['ASHJOBS_NOTIFICATION_KIND'] == 'alert.escalated'"
    svc = services(tmp_path, {"notify": {"channels": ["command"],
                                         "command": {"argv": [sys.executable, "-c", script]}}})
    try:
        nid = _put(svc)
        assert list(asyncio.run(run_due(svc, "notifications")).values()) == ["completed"]
        doc = json.loads(out.read_bytes())
        assert doc["id"] == nid and doc["body"] == "/var is 99% full" and doc["source"] == "alert:42"
        assert outbox.get(svc.store.conn, nid)["status"] == "sent"
        (d,) = outbox.deliveries(svc.store.conn, nid)
        assert (d["channel"], d["outcome"], d["code"]) == ("command", "accepted", 0)
    finally:
        close(svc)


def test_command_exit_status_not_zero_is_a_refusal(tmp_path):
    script = "import sys; sys.stdin.read(); sys.stderr.write('pager service down'); sys.exit(3)"
    svc = services(tmp_path, {"notify": {"channels": ["command"],
                                         "command": {"argv": [sys.executable, "-c", script]}}})
    try:
        nid = _put(svc)
        assert list(asyncio.run(run_due(svc, "notifications")).values()) == ["retryable"]
        (d,) = outbox.deliveries(svc.store.conn, nid)
        assert (d["outcome"], d["code"]) == ("failed", 3)
        assert d["error"] == "exit 3: pager service down"
    finally:
        close(svc)


def test_log_channel_is_the_default(tmp_path, caplog):
    svc = services(tmp_path, {})
    try:
        nid = _put(svc)
        with caplog.at_level("WARNING", logger="ashjobs.test"):
            assert list(asyncio.run(run_due(svc, "notifications")).values()) == ["completed"]
        assert f"notification {nid} [alert.escalated] disk full on edge-7" in caplog.text
        assert outbox.get(svc.store.conn, nid)["status"] == "sent"
    finally:
        close(svc)


@pytest.mark.parametrize(("raw", "message"), [
    ({"channels": ["webhook"]}, "notify.webhook.url: required"),
    ({"channels": ["webhook"], "webhook": {"url": "ftp://example.org/x"}}, "notify.webhook.url: expected an http"),
    ({"webhook": {"url": "http://host:99999/"}}, "notify.webhook.url: not a valid URL"),
    ({"channels": ["command"], "command": {"argv": []}}, "notify.command.argv: a non-empty list"),
    ({"channels": ["log", "log"]}, "notify.channels: a channel is listed twice"),
    ({"channels": []}, "notify.channels: at least one"),
    ({"webhook": {"secret": "a", "secret_file": "/b"}}, "notify.webhook.secret_file: set either"),
    ({"channels": ["email"]}, "notify.channels[0]: expected one of"),
])
def test_config_errors_name_the_key(raw, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config.from_dict({"notify": raw}, where="ashjobs.toml")


def test_backoff_grows_and_is_capped():
    assert [backoff(a) for a in (1, 2, 3)] == [10.0, 20.0, 40.0]
    assert backoff(30) == 900.0


def test_delivered_by_the_real_executor(tmp_path):
    from ashjobs.executor import run_until_done
    from ashjobs.store import Store

    with Receiver() as rx:
        cfg = config.from_dict({"queues": {"notifications": 2},
                                "notify": {"channels": ["webhook"], "webhook": {"url": rx.url, "secret": SECRET}}},
                               data_dir=str(tmp_path))
        with Store.from_config(cfg) as store:
            with store.tx() as conn:
                nid = put(conn, 1_767_225_600.0, kind="k", subject="via executor", body="b", payload={})
            job_id = outbox.get(store.conn, nid)["job_id"]
        assert run_until_done(cfg, [job_id], timeout=30) == {job_id: "completed"}
        with Store.from_config(cfg) as store:
            assert outbox.get(store.conn, nid)["status"] == "sent"
    assert len(rx.requests) == 1 and json.loads(rx.requests[0][1])["subject"] == "via executor"


def test_turned_off_notifications_are_not_delivered(tmp_path):
    with Receiver() as rx:
        svc = services(tmp_path, {"apps": {"notifications": {"enabled": False}},
                                  "notify": {"channels": ["webhook"], "webhook": {"url": rx.url}}})
        try:
            nid = _put(svc)
            assert list(asyncio.run(run_due(svc, "notifications")).values()) == ["cancelled"]
            row = outbox.get(svc.store.conn, nid)
            assert row["status"] == "failed" and "turned off" in row["last_error"]
        finally:
            close(svc)
    assert rx.requests == []


def test_secret_file_signs_and_receivers_can_verify(tmp_path):
    from ashjobs.notify import verify_signature

    secret_file = tmp_path / "webhook.secret"
    secret_file.write_text("from-a-file\n")
    with Receiver() as rx:
        svc = services(tmp_path, {"notify": {"channels": ["webhook"],
                                             "webhook": {"url": rx.url, "secret_file": str(secret_file)}}})
        try:
            _put(svc)
            asyncio.run(run_due(svc, "notifications"))
            now = svc.clock.now()
        finally:
            close(svc)
    ((headers, body),) = rx.requests
    ts, sig = headers["x-ashjobs-timestamp"], headers["x-ashjobs-signature"]
    assert verify_signature("from-a-file", ts, body, sig, now=now)
    assert not verify_signature("from-a-file", ts, body + b" ", sig, now=now)  # body tampered
    assert not verify_signature("other", ts, body, sig, now=now)
    assert not verify_signature("from-a-file", ts, body, sig, now=now + 3600)  # replayed an hour later
    assert not verify_signature("from-a-file", str(int(ts) + 1), body, sig, now=now)  # timestamp is signed


def test_missing_secret_file_is_a_failed_delivery_naming_the_key(tmp_path):
    with Receiver() as rx:
        svc = services(tmp_path, {"notify": {"channels": ["webhook"], "webhook": {
            "url": rx.url, "secret_file": str(tmp_path / "nope")}}})
        try:
            nid = _put(svc)
            asyncio.run(run_due(svc, "notifications"))
            (d,) = outbox.deliveries(svc.store.conn, nid)
            assert d["outcome"] == "failed" and d["error"].startswith("notify.webhook.secret_file: cannot read")
        finally:
            close(svc)
    assert rx.requests == []  # never sent unsigned
