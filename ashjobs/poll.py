"""[[poll]] entries: a check (tcp, http, icmp, command) run on a schedule by a poller of the entry's partition
(and domain). Each run is a routed job. After `fail_threshold` consecutive failed runs an alert is raised
(source = the poll's name, with its partition) where the alert resource exists; the first run that succeeds
again resolves it.

    [[poll]]
    name = "edge-7-ssh"
    check = "tcp"
    args = { host = "10.0.7.1", port = 22 }
    partition = "p1"
    every = "30s"
    timeout = "5s"
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ashjobs.config import Duration

if TYPE_CHECKING:
    import sqlite3

    from ashjobs.config import Config
    from ashjobs.cron import CronEntry
    from ashjobs.store.jobs import FinishedAttempt

Check = Literal["tcp", "http", "icmp", "command"]
Severity = Literal["info", "warning", "critical", "emergency"]
CHECK_TASKS: dict[str, str] = {"tcp": "tcp", "http": "http", "icmp": "icmp", "command": "command"}
REQUIRED_ARGS: dict[str, tuple[str, ...]] = {"tcp": ("host", "port"), "http": ("url",), "icmp": ("host",),
                                              "command": ("argv",)}
ACTOR = "system:scheduler"
log = logging.getLogger("ashjobs.poll")


@dataclass
class PollEntry:
    name: str
    check: Check
    args: dict[str, Any] = field(default_factory=dict)
    partition: str = "default"
    domain: str | None = None
    every: Duration | None = None  # exactly one of every/schedule
    schedule: str = ""
    timezone: str = "UTC"
    timeout: Duration | None = None  # handed to the check as its `timeout` argument
    fail_threshold: int = 3
    severity: Severity = "critical"
    queue: str = "default"
    max_attempts: int = 1  # a failed check is not retried: the next scheduled run is the retry
    paused: bool = False

    def validate(self) -> str | None:
        if not self.name.strip():
            return "name: must not be empty"
        if bool(self.schedule.strip()) == (self.every is not None):
            return "schedule: set exactly one of 'every' (a duration) or 'schedule' (cron)"
        if self.every is not None and self.every <= 0:
            return "every: must be a positive duration"
        if self.timeout is not None and self.timeout <= 0:
            return "timeout: must be a positive duration"
        if self.fail_threshold < 1:
            return "fail_threshold: must be >= 1"
        if self.max_attempts < 1:
            return "max_attempts: must be >= 1"
        if not self.partition.strip():
            return "partition: must not be empty (poll checks always run on a poller of a partition)"
        missing = [a for a in REQUIRED_ARGS[self.check] if a not in self.args]
        if missing:
            return f"args: check {self.check!r} needs {', '.join(repr(m) for m in missing)}"
        if "timeout" in self.args and self.timeout is not None:
            return "args.timeout: set the timeout once, as the entry's 'timeout'"
        if self.check == "command" and not (isinstance(self.args["argv"], list) and self.args["argv"]
                                            and all(isinstance(a, str) and a for a in self.args["argv"])):
            return "args.argv: must be a non-empty list of strings"
        if self.check == "tcp" and not (isinstance(self.args["port"], int) and 0 < self.args["port"] < 65536):
            return f"args.port: expected a port number 1..65535, got {self.args['port']!r}"
        return None


def _alerts_enabled(cfg: Config) -> bool:
    """Is the alert resource on ([apps.alerts] enabled)?"""
    try:
        return bool(cfg.section("apps").alerts.enabled)
    except ImportError:  # a copy without the apps: no alert resource
        return False


def cron_entries(cfg: Config) -> list[CronEntry]:
    """One cron entry per [[poll]] entry (a provider of ashjobs.cron.PROVIDERS), named "poll:<name>"."""
    from ashjobs.cron import CronEntry

    alert = _alerts_enabled(cfg)
    out = []
    for p in cfg.section("poll"):
        args = dict(p.args)
        if p.timeout is not None:
            args["timeout"] = p.timeout
        out.append(CronEntry(
            name=f"poll:{p.name}", task=CHECK_TASKS[p.check], schedule=p.schedule, every=p.every,
            timezone=p.timezone, args=args, queue=p.queue, max_attempts=p.max_attempts, paused=p.paused,
            partition=p.partition, domain=p.domain,
            # What the finishing hook needs, carried by each job: it runs without the config at hand.
            meta={"poll": p.name, "fail_threshold": p.fail_threshold, "severity": p.severity, "alert": alert}))
    return out


# --- consecutive failures -> alerts ---------------------------------------------------------------------


def next_streak(failures: int, alerting: bool, failed: bool, threshold: int) -> tuple[int, str | None]:
    """Pure: the new count of consecutive failures and what to do: "raise", "resolve" or None.
    An alert is raised once per outage, when the count reaches the threshold; a success ends the outage."""
    if failed:
        failures += 1
        return failures, ("raise" if failures >= threshold and not alerting else None)
    return 0, ("resolve" if alerting else None)


def on_check_finished(conn: sqlite3.Connection, done: FinishedAttempt) -> None:
    """The checks' `on_finish` hook: runs in the transaction that records the attempt. Only a job's final
    outcome counts (completed or discarded): a retry in between is not a new run of the poll."""
    from ashjobs.store import poll as sql

    name = done.meta.get("poll") if isinstance(done.meta, dict) else None
    if not name or done.state not in ("completed", "discarded"):
        return
    failed = done.state == "discarded"
    state = sql.get(conn, name)
    failures, alerting = (state["consecutive_failures"], bool(state["alerting"])) if state else (0, False)
    threshold = int(done.meta.get("fail_threshold") or 3)
    failures, action = next_streak(failures, alerting, failed, threshold)
    partition = done.partition
    if action is not None and done.meta.get("alert", True):
        alerting = _alert(conn, done, name, partition, failures, action, alerting)
    sql.put(conn, name, partition=partition, failures=failures, alerting=alerting,
            outcome="failure" if failed else "success", error=done.error, job_id=done.job_id, now=done.now)


def _alert(conn: sqlite3.Connection, done: FinishedAttempt, name: str, partition: str | None, failures: int,
           action: str, alerting: bool) -> bool:
    """Raise or resolve the poll's alert; returns whether an alert is now open. A failure here must not undo
    the attempt being recorded, so it runs in a savepoint and is logged."""
    import importlib

    try:
        alerts = importlib.import_module("ashjobs.apps.alerts")
    except ModuleNotFoundError as e:  # the alert resource is not part of this copy
        if e.name not in ("ashjobs.apps.alerts", "ashjobs.apps"):
            log.exception("poll %s: cannot load the alert resource", name)
        return alerting
    conn.execute("SAVEPOINT poll_alert")
    try:
        if action == "raise":
            alerts.raise_alert(conn, done.now, severity=str(done.meta.get("severity") or "critical"), source=name,
                               partition=partition, actor=ACTOR,
                               message=f"poll {name}: {failures} consecutive failures; last: {done.error}")
            alerting = True
        else:
            alerts.resolve_alerts_from(conn, done.now, source=name, partition=partition, actor=ACTOR)
            alerting = False
        conn.execute("RELEASE poll_alert")
    except Exception:
        conn.execute("ROLLBACK TO poll_alert")
        conn.execute("RELEASE poll_alert")
        log.exception("poll %s: could not %s its alert", name, action)
    return alerting
