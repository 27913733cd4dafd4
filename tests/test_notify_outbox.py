"""The outbox: a notification and its delivery job are written in the caller's transaction."""

from __future__ import annotations

import pytest

from ashjobs.apps.notifications import put
from ashjobs.store import Store, jobs
from ashjobs.store import notifications as outbox


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "ashjobs.db")
    yield s
    s.close()


def test_put_writes_row_and_delivery_job(store):
    with store.tx() as conn:
        nid = put(conn, 1000.0, kind="alert.escalated", subject="disk", body="full", payload={"alert": 7},
                  actor="system:scheduler", source="alert:7")
    row = outbox.get(store.conn, nid)
    assert row is not None and row["status"] == "pending" and row["payload"] == {"alert": 7}
    job = jobs.get(store.conn, row["job_id"])
    assert job is not None
    assert (job.task, job.queue, job.args, job.state) == (
        "ashjobs.notify.deliver", "notifications", {"notification_id": nid}, "available")


def test_put_rolls_back_with_the_callers_transaction(store):
    with pytest.raises(RuntimeError), store.tx() as conn:
        put(conn, 1000.0, kind="k", subject="s", body="b", payload={})
        raise RuntimeError("the caller's change failed")
    assert outbox.list_notifications(store.conn) == []
    assert jobs.list_jobs(store.conn) == []


def test_each_notification_gets_its_own_job(store):
    with store.tx() as conn:
        a = put(conn, 1000.0, kind="k", subject="s", body="b", payload={})
        b = put(conn, 1000.0, kind="k", subject="s", body="b", payload={})
    ja, jb = outbox.get(store.conn, a)["job_id"], outbox.get(store.conn, b)["job_id"]
    assert ja != jb
