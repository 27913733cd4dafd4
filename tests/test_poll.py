"""[[poll]] entries: config, their cron entries, and consecutive failures counted by the finishing hook on a
real store (and alerts raised/resolved where the alert resource exists)."""

from __future__ import annotations

import importlib.util

import pytest

from ashjobs import config, tasks
from ashjobs.errors import ConfigError
from ashjobs.poll import cron_entries, next_streak
from ashjobs.store import Store, jobs
from ashjobs.store import poll as poll_sql

T0 = 1_767_225_600.0


def poll_cfg(tmp_path, *entries, **raw):
    return config.from_dict({"poll": list(entries), **raw}, data_dir=str(tmp_path))


SSH = {"name": "edge-7-ssh", "check": "tcp", "args": {"host": "10.0.7.1", "port": 22}, "partition": "p1",
       "domain": "site-a", "every": "30s", "timeout": "5s", "fail_threshold": 2}


def test_next_streak():
    assert next_streak(0, False, True, 3) == (1, None)
    assert next_streak(1, False, True, 3) == (2, None)
    assert next_streak(2, False, True, 3) == (3, "raise")
    assert next_streak(3, True, True, 3) == (4, None)  # one alert per outage
    assert next_streak(4, True, False, 3) == (0, "resolve")
    assert next_streak(2, False, False, 3) == (0, None)  # recovered before the threshold: nothing to resolve
    assert next_streak(0, False, True, 1) == (1, "raise")


def test_poll_entries_become_routed_cron_entries(tmp_path):
    cfg = poll_cfg(tmp_path, SSH, {"name": "web", "check": "http", "args": {"url": "http://10.0.0.1/"},
                                   "schedule": "*/5 * * * *", "timezone": "Europe/Berlin"})
    ssh, web = cron_entries(cfg)
    assert (ssh.name, ssh.task, ssh.every, ssh.partition, ssh.domain, ssh.max_attempts) == (
        "poll:edge-7-ssh", "tcp", 30.0, "p1", "site-a", 1)
    assert ssh.args == {"host": "10.0.7.1", "port": 22, "timeout": 5.0}
    assert ssh.meta["poll"] == "edge-7-ssh" and ssh.meta["fail_threshold"] == 2
    assert (web.schedule, web.timezone, web.partition, web.domain) == ("*/5 * * * *", "Europe/Berlin", "default",
                                                                       None)
    assert ssh.validate() is None and web.validate() is None
    from ashjobs import cron

    assert {"poll:edge-7-ssh", "poll:web"} <= {e.name for e in cron.entries(cfg, {})}


@pytest.mark.parametrize(("entry", "message"), [
    ({k: v for k, v in SSH.items() if k != "every"}, "poll['edge-7-ssh'].schedule: set exactly one"),
    ({"name": "x", "check": "tcp", "args": {"host": "h", "port": 1}}, "poll['x'].schedule: set exactly one"),
    ({**SSH, "schedule": "* * * * *"}, "poll['edge-7-ssh'].schedule: set exactly one"),
    ({**SSH, "check": "smtp"}, "poll['edge-7-ssh'].check: expected one of"),
    ({**SSH, "args": {"host": "h"}}, "poll['edge-7-ssh'].args: check 'tcp' needs 'port'"),
    ({**SSH, "args": {"host": "h", "port": 70000}}, "poll['edge-7-ssh'].args.port: expected a port"),
    ({**SSH, "check": "command", "args": {"argv": []}}, "poll['edge-7-ssh'].args.argv: must be a non-empty"),
    ({**SSH, "fail_threshold": 0}, "poll['edge-7-ssh'].fail_threshold: must be >= 1"),
    ({**SSH, "args": {"host": "h", "port": 1, "timeout": 3}}, "args.timeout: set the timeout once"),
    ({**SSH, "partition": ""}, "poll['edge-7-ssh'].partition: must not be empty"),
])
def test_config_errors(tmp_path, entry, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        poll_cfg(tmp_path, entry)


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "ashjobs.db")
    yield s
    s.close()


def run_check(store, now, *, fails: bool, name="edge-7-ssh", partition="p1", threshold=2, alert=True):
    """One poll run through the real job SQL: insert, lease, finish with the checks' finishing hook."""
    with store.tx() as conn:
        job_id, _, _ = jobs.insert(conn, jobs.NewJob(
            task="tcp", args={"host": "10.0.7.1", "port": 22}, partition=partition, max_attempts=1,
            meta={"poll": name, "fail_threshold": threshold, "severity": "critical", "alert": alert}), now)
        (row,) = jobs.lease(conn, [job_id], "poller-1", now, 10.0)
        result = jobs.Result(job_id, row["lease_token"], "failure" if fails else "success", "poller-1", now, 0.1,
                             "tcp 10.0.7.1:22: connection refused" if fails else None)
        assert jobs.finish(conn, [result], now, tasks.run_finish_hooks) == []
    return job_id


def test_consecutive_failures_are_counted_per_poll(store):
    tasks.get("tcp")  # the registry loads the checks and their hook
    run_check(store, T0, fails=True)
    run_check(store, T0 + 30, fails=True, name="other")
    state = poll_sql.get(store.conn, "edge-7-ssh")
    assert (state["consecutive_failures"], state["last_outcome"], state["partition"]) == (1, "failure", "p1")
    run_check(store, T0 + 60, fails=True)
    run_check(store, T0 + 90, fails=True)
    assert poll_sql.get(store.conn, "edge-7-ssh")["consecutive_failures"] == 3
    run_check(store, T0 + 120, fails=False)
    state = poll_sql.get(store.conn, "edge-7-ssh")
    assert (state["consecutive_failures"], state["last_outcome"], state["alerting"]) == (0, "success", 0)
    assert poll_sql.get(store.conn, "other")["consecutive_failures"] == 1


def test_a_job_without_poll_meta_is_ignored(store):
    with store.tx() as conn:
        job_id, _, _ = jobs.insert(conn, jobs.NewJob(task="tcp", args={}, partition="p1", max_attempts=1), T0)
        (row,) = jobs.lease(conn, [job_id], "poller-1", T0, 10.0)
        jobs.finish(conn, [jobs.Result(job_id, row["lease_token"], "failure", "poller-1", T0, 0.1, "x")], T0,
                    tasks.run_finish_hooks)
    assert poll_sql.all_states(store.conn) == []


def test_a_retryable_failure_is_not_yet_a_failed_run(store):
    with store.tx() as conn:
        job_id, _, _ = jobs.insert(conn, jobs.NewJob(task="tcp", args={}, partition="p1", max_attempts=2,
                                                     meta={"poll": "p", "fail_threshold": 1}), T0)
        (row,) = jobs.lease(conn, [job_id], "poller-1", T0, 10.0)
        jobs.finish(conn, [jobs.Result(job_id, row["lease_token"], "failure", "poller-1", T0, 0.1, "x")], T0,
                    tasks.run_finish_hooks)
    assert poll_sql.get(store.conn, "p") is None


alerts_app = importlib.util.find_spec("ashjobs.apps.alerts") is not None


@pytest.mark.skipif(not alerts_app, reason="the alert resource (helper triggers) is not merged yet")
def test_threshold_raises_one_alert_and_recovery_resolves_it(store):
    from ashjobs.apps import alerts

    def open_alerts():
        return [a for a in alerts.list_alerts(store.conn) if a["source"] == "edge-7-ssh" and a["status"] != "resolved"]

    run_check(store, T0, fails=True)
    assert open_alerts() == []  # 1 < fail_threshold 2
    run_check(store, T0 + 30, fails=True)
    (alert,) = open_alerts()
    assert (alert["partition"], alert["severity"]) == ("p1", "critical")
    run_check(store, T0 + 60, fails=True)
    assert len(open_alerts()) == 1  # still the same outage
    run_check(store, T0 + 90, fails=False)
    assert open_alerts() == []
    (resolved,) = [a for a in alerts.list_alerts(store.conn, status="resolved") if a["source"] == "edge-7-ssh"]
    assert resolved["id"] == alert["id"]
    assert poll_sql.get(store.conn, "edge-7-ssh")["alerting"] == 0
    # The next outage raises a new alert.
    run_check(store, T0 + 120, fails=True)
    run_check(store, T0 + 150, fails=True)
    (again,) = open_alerts()
    assert again["id"] != alert["id"]


@pytest.mark.skipif(not alerts_app, reason="the alert resource (helper triggers) is not merged yet")
def test_alert_partition_follows_the_job(store):
    from ashjobs.apps import alerts

    run_check(store, T0, fails=True, name="dns", partition="p2", threshold=1)
    (a,) = [a for a in alerts.list_alerts(store.conn) if a["source"] == "dns"]
    assert a["partition"] == "p2" and "1 consecutive failures" in a["message"]


def test_alerts_off_only_counts(store):
    run_check(store, T0, fails=True, threshold=1, alert=False)
    state = poll_sql.get(store.conn, "edge-7-ssh")
    assert (state["consecutive_failures"], state["alerting"]) == (1, 0)
    if alerts_app:
        from ashjobs.apps import alerts

        assert alerts.list_alerts(store.conn) == []
