"""Triggers through the real store and the real executor: the scheduler pages through matching records and
enqueues one unique worker job each; the worker re-checks and acts in one transaction; on_error runs when a
worker is discarded."""

from __future__ import annotations

import pytest
from triggers_helpers import SLOT, attempts_errors, close, run_jobs, services

from ashjobs import config, triggers
from ashjobs.errors import ConfigError
from ashjobs.resources import ActionCall, Resource, Transition
from ashjobs.store import jobs as sql
from ashjobs.store import resources as rsql

widget = Resource(
    "widget", fields={"level": "int", "seen_at": "timestamp", "note": "text"},
    states=["new", "done", "failed"], initial="new",
    transitions=[Transition("finish", ["new"], "done"), Transition("fail", ["new"], "failed")],
)


@widget.action("finish")
def _finish(call: ActionCall) -> None:
    call.transition("finish", reason="level high", note=f"by {call.actor}")


@widget.action("explode")
def _explode(call: ActionCall) -> None:
    call.update(note="half-done")  # rolled back with the failed attempt
    raise RuntimeError("boom")


@widget.action("mark_failed")
def _mark_failed(call: ActionCall) -> None:
    call.transition("fail", reason=call.args["error"])


def trig(**over):
    return {"name": "finish_high", "resource": "widget", "action": "finish", "queue": "default",
            "where": {"status": "new", "level": {"gte": 5}}, **over}


def make(tmp_path, *entries, **raw):
    svc = services(tmp_path, {"trigger": list(entries), **raw})
    return svc


def add_widgets(svc, levels):
    with svc.store.tx() as conn:
        return [widget.create(conn, {"level": lvl, "seen_at": svc.clock.now()}, now=svc.clock.now())["id"]
                for lvl in levels]


def fire(svc, name="finish_high", **kw):
    return triggers.run_scheduler(svc.writer.call, triggers.get(svc.cfg, name), svc.clock.now(),
                                  collect_ids=True, **kw)


def test_one_worker_per_matching_record_unique_while_incomplete(tmp_path):
    svc = make(tmp_path, trig())
    try:
        ids = add_widgets(svc, [1, 5, 9, 5, 2])
        first = fire(svc)
        assert (first.matched, first.enqueued) == (3, 3)
        jobs = [sql.get(svc.store.conn, j) for j in first.job_ids]
        assert sorted(j.args["record_id"] for j in jobs) == [ids[1], ids[2], ids[3]]
        assert {(j.task, j.queue, j.max_attempts, j.actor) for j in jobs} == {
            (triggers.WORK_TASK, "default", 1, "system:scheduler")}
        again = fire(svc)  # the workers have not run: nothing new
        assert (again.matched, again.enqueued, again.job_ids) == (3, 0, first.job_ids)
        assert run_jobs(svc, first.job_ids) == {j: "completed" for j in first.job_ids}
        assert [widget.get(svc.store.conn, i)["status"] for i in ids] == ["new", "done", "done", "done", "new"]
        assert fire(svc).matched == 0
    finally:
        close(svc)


def test_keyset_pages_cover_every_record_once_and_record_limit_caps(tmp_path):
    svc = make(tmp_path, trig(), trig(name="capped", record_limit=4))
    try:
        add_widgets(svc, [7] * 10)
        paged = fire(svc, page_size=3)
        assert (paged.matched, paged.enqueued, len(set(paged.job_ids))) == (10, 10, 10)
        capped = fire(svc, "capped", page_size=3)
        assert (capped.matched, capped.enqueued) == (4, 4)
    finally:
        close(svc)


def test_worker_acts_in_one_transaction_with_history_job_and_actor(tmp_path):
    svc = make(tmp_path, trig(actor="user:ops"))
    try:
        [wid] = add_widgets(svc, [8])
        [job] = fire(svc).job_ids
        svc.clock.advance(30)
        assert run_jobs(svc, [job]) == {job: "completed"}
        rec = widget.get(svc.store.conn, wid)
        assert (rec["status"], rec["note"]) == ("done", "by user:ops")
        last = widget.history(svc.store.conn, wid)[-1]
        assert (last["from_state"], last["to_state"], last["action"], last["actor"], last["job_id"], last["at"],
                last["reason"]) == ("new", "done", "finish", "user:ops", job, SLOT + 30, "level high")
    finally:
        close(svc)


def test_record_that_stopped_matching_ends_cancelled_no_longer_applies(tmp_path):
    svc = make(tmp_path, trig())
    try:
        [wid] = add_widgets(svc, [8])
        [job] = fire(svc).job_ids
        with svc.store.tx() as conn:  # between enqueue and run, the record changes
            widget.update(conn, widget.get(conn, wid), {"level": 1})
        assert run_jobs(svc, [job]) == {job: "cancelled"}
        assert attempts_errors(svc, job) == [("cancelled", "trigger_no_longer_applies")]
        assert widget.get(svc.store.conn, wid)["status"] == "new"
        assert len(widget.history(svc.store.conn, wid)) == 1
    finally:
        close(svc)


def test_time_based_where_uses_the_clock_at_run_time(tmp_path):
    svc = make(tmp_path, trig(name="stale", where={"status": "new", "seen_at": {"older_than": "10m"}}))
    try:
        add_widgets(svc, [1])
        assert fire(svc, "stale").matched == 0
        svc.clock.advance(601)
        [job] = fire(svc, "stale").job_ids
        assert run_jobs(svc, [job]) == {job: "completed"}
    finally:
        close(svc)


def test_on_error_runs_when_the_worker_is_discarded(tmp_path):
    svc = make(tmp_path, trig(name="explode", action="explode", on_error="mark_failed", max_attempts=1))
    try:
        [wid] = add_widgets(svc, [9])
        [job] = fire(svc, "explode").job_ids
        assert run_jobs(svc, [job]) == {job: "discarded"}
        rec = widget.get(svc.store.conn, wid)
        assert (rec["status"], rec["note"]) == ("failed", None)
        last = widget.history(svc.store.conn, wid)[-1]
        assert (last["action"], last["job_id"], last["to_state"]) == ("mark_failed", job, "failed")
        assert "boom" in last["reason"]
        state = rsql.trigger_states(svc.store.conn)["explode"]
        assert (state["workers_discarded"], state["last_worker_outcome"]) == (1, "discarded")
    finally:
        close(svc)


def test_trigger_once_never_enqueues_a_record_twice(tmp_path):
    svc = make(tmp_path, trig(name="once", action="explode", trigger_once=True, max_attempts=1))
    try:
        add_widgets(svc, [9])
        [job] = fire(svc, "once").job_ids
        assert run_jobs(svc, [job]) == {job: "discarded"}
        later = fire(svc, "once")
        assert (later.matched, later.enqueued) == (1, 0)
    finally:
        close(svc)


def test_paused_trigger_enqueues_nothing(tmp_path):
    svc = make(tmp_path, trig(paused=True))
    try:
        add_widgets(svc, [9])
        f = fire(svc)
        assert (f.outcome, f.enqueued) == ("paused", 0)
    finally:
        close(svc)


def test_scheduler_task_runs_through_the_executor(tmp_path):
    svc = make(tmp_path, trig())
    try:
        add_widgets(svc, [6, 7, 0])
        with svc.store.tx() as conn:
            sched, _, _ = sql.insert(conn, sql.NewJob(task=triggers.SCHEDULE_TASK, args={"trigger": "finish_high"},
                                                      meta={"cron": "trigger:finish_high"}), svc.clock.now())
        assert run_jobs(svc, [sched]) == {sched: "completed"}
        workers = [j for j in sql.list_jobs(svc.store.conn, task=triggers.WORK_TASK)]
        assert len(workers) == 2 and all(j.meta["scheduler_job"] == sched for j in workers)
        assert run_jobs(svc, [j.id for j in workers]) == {j.id: "completed" for j in workers}
        state = rsql.trigger_states(svc.store.conn)["finish_high"]
        assert (state["last_fire_at"], state["last_matched"], state["last_enqueued"], state["last_outcome"],
                state["workers_completed"]) == (SLOT, 2, 2, "ok", 2)
    finally:
        close(svc)


def test_config_trigger_overrides_only_the_keys_it_sets_on_a_builtin(tmp_path):
    cfg = config.from_dict({"trigger": [{"name": "auto_escalate", "schedule": "*/10 * * * *"}],
                            "apps": {"alerts": {"escalate_after": "1h"}}}, data_dir=str(tmp_path))
    t = triggers.get(cfg, "auto_escalate")
    assert (t.cfg.schedule, t.cfg.resource, t.cfg.action, t.cfg.queue) == ("*/10 * * * *", "alert", "escalate", "alerts")
    assert t.where_sql(1000.0)[1] == ["pending", 1000.0 - 3600, "critical", "emergency"]


def test_builtins_can_be_turned_off(tmp_path):
    cfg = config.from_dict({"apps": {"alerts": {"enabled": False}, "packages": {"enabled": False}}},
                           data_dir=str(tmp_path))
    assert triggers.load(cfg) == {}


@pytest.mark.parametrize(("entry", "message"), [
    ({"name": "x", "resource": "widget", "action": "finish", "where": {"colour": 1}},
     "trigger 'x': where.colour: unknown field"),
    ({"name": "x", "resource": "gizmo", "action": "finish"}, "trigger 'x': resource: unknown resource 'gizmo'"),
    ({"name": "x", "resource": "widget", "action": "fly"}, "trigger 'x': action: resource 'widget' has no action 'fly'"),
    ({"name": "x", "resource": "widget", "action": "finish", "on_error": "cry"}, "trigger 'x': on_error: "),
    ({"name": "x", "action": "finish"}, "trigger 'x': resource: required"),
    ({"name": "x", "resource": "widget", "action": "finish", "schedule": "61 * * * *"}, "trigger 'x': schedule: "),
    ({"name": "x", "resource": "widget", "action": "finish", "timezone": "Mars/Base"}, "trigger 'x': timezone: "),
])
def test_config_errors_name_the_trigger_and_key(tmp_path, entry, message):
    cfg = config.from_dict({"trigger": [entry]}, data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=message):
        triggers.load(cfg)


def test_toml_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"trigger\['x'\]\.max_attempts: must be >= 1"):
        config.from_dict({"trigger": [{"name": "x", "max_attempts": 0}]}, data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"trigger\['x'\]\.bogus: unknown key"):
        config.from_dict({"trigger": [{"name": "x", "bogus": 1}]}, data_dir=str(tmp_path))


def test_cron_entries_one_scheduler_entry_per_trigger(tmp_path):
    pytest.importorskip("ashjobs.cron")
    cfg = config.from_dict({"trigger": [trig(schedule="*/2 * * * *", timezone="Europe/Berlin")]},
                           data_dir=str(tmp_path))
    entries = {e.name: e for e in triggers.cron_entries(cfg)}
    e = entries["trigger:finish_high"]
    assert (e.task, e.args, e.schedule, e.timezone) == (triggers.SCHEDULE_TASK, {"trigger": "finish_high"},
                                                        "*/2 * * * *", "Europe/Berlin")
    assert entries["trigger:auto_escalate"].schedule == "*/5 * * * *"
    assert entries["trigger:expire_packages"].schedule == "0 * * * *"


@widget.action("restock")
def _restock(call: ActionCall) -> int:
    assert call.record is None
    created = [widget.create(call.conn, {"level": call.args["level"]}, now=call.now, actor=call.actor,
                             action="restock", job_id=call.job_id) for _ in range(call.args["count"])]
    return len(created)


def test_scheduled_action_runs_a_record_less_action(tmp_path):
    svc = make(tmp_path)
    try:
        with svc.store.tx() as conn:
            job, _, _ = sql.insert(conn, sql.NewJob(task=triggers.ACTION_TASK, actor="system:scheduler", args={
                "resource": "widget", "action": "restock", "args": {"level": 3, "count": 2}}), svc.clock.now())
        assert run_jobs(svc, [job]) == {job: "completed"}
        hist = widget.history(svc.store.conn)
        assert [(h["action"], h["to_state"], h["job_id"], h["actor"]) for h in hist] == [
            ("restock", "new", job, "system:scheduler")] * 2
    finally:
        close(svc)
