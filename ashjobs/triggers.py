"""Triggers (AshOban's): at each slot of a cron schedule, run a resource action on every matching record.

A trigger has two jobs. Its scheduler job ("ashjobs.trigger.schedule", fired by the cron loop) pages
through the ids of records matching `where` (keyset pagination: a page of ids in memory at a time) and
enqueues one worker job per record, unique per (trigger, record) while incomplete (for ever with
`trigger_once`), so a record whose worker has not run yet is not enqueued twice. The worker job
("ashjobs.trigger.work") re-reads the record inside one write transaction and re-checks `where`: a record
that stopped matching meanwhile ends the job `cancelled` with reason `trigger_no_longer_applies`;
otherwise the action runs in that same transaction (its transitions write history with the job id and
actor). When a worker job is discarded after its last attempt, the trigger's `on_error` action runs on
the record, inside the transaction that records the failure.

Triggers come from `[[trigger]]` tables, from Python (`declare(TriggerConfig(...))`), and from the built-in
apps (alerts: auto_escalate, packages: expire_packages). A `[[trigger]]` named like a built-in overrides the
keys it sets (its schedule, say) and keeps the rest.
"""

from __future__ import annotations

import dataclasses
import functools
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ashjobs import queue as rules
from ashjobs.errors import ConfigError
from ashjobs.tasks import Cancel, JobContext, task

if TYPE_CHECKING:
    from ashjobs.cron import CronEntry
    from ashjobs.resources import Resource
    from ashjobs.store.jobs import FinishedAttempt, NewJob
    from ashjobs.where import Node

SCHEDULE_TASK = "ashjobs.trigger.schedule"
WORK_TASK = "ashjobs.trigger.work"
ACTION_TASK = "ashjobs.resource.action"  # a scheduled action: [[cron]] task = this, args = {resource, action}
NO_LONGER_APPLIES = "trigger_no_longer_applies"
PAGE_SIZE = 2000


@dataclass
class TriggerConfig:
    """One [[trigger]] table (or a trigger declared in Python)."""

    name: str
    resource: str = ""
    action: str = ""
    schedule: str = "* * * * *"
    timezone: str = "UTC"
    where: dict[str, Any] = field(default_factory=dict)
    queue: str = "default"
    priority: int = 0
    max_attempts: int = 1
    on_error: str | None = None
    actor: str = "system:scheduler"
    record_limit: int | None = None
    trigger_once: bool = False
    paused: bool = False

    def validate(self) -> str | None:
        if not self.name.strip():
            return "name: must not be empty"
        if self.max_attempts < 1:
            return "max_attempts: must be >= 1"
        if self.record_limit is not None and self.record_limit < 1:
            return "record_limit: must be >= 1"
        if not 0 <= self.priority <= rules.MAX_PRIORITY:
            return f"priority: must be 0..{rules.MAX_PRIORITY}"
        return None


@dataclass
class Trigger:
    """A trigger checked against its resource: the `where` is parsed, the actions exist."""

    cfg: TriggerConfig
    resource: Resource
    where: Node

    @property
    def name(self) -> str:
        return self.cfg.name

    def where_sql(self, now: float) -> tuple[str, list[Any]]:
        from ashjobs.where import to_sql

        return to_sql(self.where, now)

    def unique_key(self, record_id: int) -> str:
        return f"trigger:{self.name}:{record_id}"

    def worker_job(self, record_id: int, *, scheduler_job: int | None = None) -> NewJob:
        from ashjobs.store.jobs import NewJob

        states = rules.STATES if self.cfg.trigger_once else rules.INCOMPLETE
        meta: dict[str, Any] = {"trigger": self.name, "resource": self.resource.name, "action": self.cfg.action,
                                "actor": self.cfg.actor}
        if self.cfg.on_error:
            meta["on_error"] = self.cfg.on_error
        if scheduler_job is not None:
            meta["scheduler_job"] = scheduler_job
        return NewJob(task=WORK_TASK, args={"trigger": self.name, "record_id": record_id}, queue=self.cfg.queue,
                      priority=self.cfg.priority, max_attempts=self.cfg.max_attempts, meta=meta,
                      actor=self.cfg.actor,
                      unique=rules.Unique(key=self.unique_key(record_id), states=states, period=None))


# Triggers declared in Python (by an [app] module or a built-in app).
_DECLARED: dict[str, TriggerConfig] = {}


def declare(trigger: TriggerConfig) -> TriggerConfig:
    problem = trigger.validate()
    if problem:
        raise ConfigError(f"trigger {trigger.name!r}: {problem}")
    _DECLARED[trigger.name] = trigger
    return trigger


def builtin_triggers(cfg: Any) -> list[TriggerConfig]:
    """The built-in apps' triggers that the config leaves enabled."""
    from ashjobs.apps import alerts, packages

    return [*alerts.triggers(cfg), *packages.triggers(cfg)]


def configs(cfg: Any) -> list[TriggerConfig]:
    """Every trigger's config: built-ins, then Python-declared, then [[trigger]] (which may override either)."""
    merged: dict[str, TriggerConfig] = {t.name: t for t in builtin_triggers(cfg)}
    merged.update(_DECLARED)
    raw = cfg.raw.get("trigger", []) if isinstance(cfg.raw.get("trigger"), list) else []
    seen: set[str] = set()
    for i, entry in enumerate(cfg.section("trigger")):
        if entry.name in seen:
            raise ConfigError(f"{cfg._where()}: trigger[{entry.name!r}]: name used twice")
        seen.add(entry.name)
        base = merged.get(entry.name)
        if base is not None and i < len(raw):
            # Override only the keys this table sets; the rest of the built-in stays.
            entry = dataclasses.replace(base, **{k: getattr(entry, k) for k in raw[i] if k != "name"})
        merged[entry.name] = entry
    return list(merged.values())


def compile_trigger(tc: TriggerConfig) -> Trigger:
    from ashjobs import resources
    from ashjobs.where import parse

    for key in ("resource", "action"):
        if not getattr(tc, key):
            raise ConfigError(f"trigger {tc.name!r}: {key}: required")
    try:
        res = resources.get(tc.resource)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"trigger {tc.name!r}: resource: {e}") from None
    for key in ("action", "on_error"):
        action = getattr(tc, key)
        if action and action not in res.actions:
            raise ConfigError(f"trigger {tc.name!r}: {key}: resource {res.name!r} has no action {action!r} "
                              f"(known: {', '.join(sorted(res.actions)) or 'none'})")
    problem = _schedule_problem(tc)
    if problem:
        raise ConfigError(f"trigger {tc.name!r}: {problem}")
    return Trigger(tc, res, parse(tc.where, res.columns, trigger=tc.name))


def _schedule_problem(tc: TriggerConfig) -> str | None:
    """The schedule and time zone, checked by the cron module's rules (named after the trigger)."""
    try:
        from ashjobs.cron import schedule_problem, zone_problem
    except ImportError:  # a copy without cron: nothing fires triggers anyway
        return None
    problem = schedule_problem(tc.schedule)
    if problem:
        return f"schedule: {problem}"
    problem = zone_problem(tc.timezone)
    return f"timezone: {problem}" if problem else None


_cache: dict[int, tuple[Any, dict[str, Trigger]]] = {}


def load(cfg: Any) -> dict[str, Trigger]:
    """Every trigger of this config, checked (ConfigError naming the trigger and key). Cached per config."""
    hit = _cache.get(id(cfg))
    if hit is not None and hit[0] is cfg:
        return hit[1]
    own = {t.name for t in cfg.section("trigger")}
    out = {}
    for tc in configs(cfg):
        try:
            out[tc.name] = compile_trigger(tc)
        except ConfigError as e:
            if tc.name not in own:
                raise
            raise ConfigError(f"{cfg._where()}: {e}") from None  # a [[trigger]] table: name the file
    if len(_cache) > 16:  # a daemon has one config; tests and tools make many
        _cache.clear()
    _cache[id(cfg)] = (cfg, out)
    return out


def get(cfg: Any, name: str) -> Trigger:
    triggers = load(cfg)
    try:
        return triggers[name]
    except KeyError:
        from ashjobs.errors import UsageError

        raise UsageError(f"unknown trigger {name!r} (known: {', '.join(sorted(triggers)) or 'none'})") from None


def cron_entries(cfg: Any) -> list[CronEntry]:
    """One cron entry per trigger, firing its scheduler job (a provider of ashjobs.cron)."""
    from ashjobs.cron import CronEntry

    return [CronEntry(name=f"trigger:{t.name}", task=SCHEDULE_TASK, schedule=t.cfg.schedule,
                      timezone=t.cfg.timezone, args={"trigger": t.name}, queue=t.cfg.queue,
                      priority=t.cfg.priority, max_attempts=3, paused=t.cfg.paused,
                      meta={"trigger": t.name})
            for t in load(cfg).values()]


# The scheduler: select matching ids page by page, enqueue one worker job per record.

@dataclass
class Page:
    last_id: int
    found: int
    enqueued: int
    job_ids: list[int]


def _page(conn: sqlite3.Connection, **kw: Any) -> Page:
    return enqueue_page(conn, **kw)


def enqueue_page(conn: sqlite3.Connection, trig: Trigger, now: float, *, after_id: int, limit: int,
                 scheduler_job: int | None = None, collect_ids: bool = False, cap: int | None = None) -> Page:
    """One page of the scheduler in the caller's transaction: up to `limit` matching ids after `after_id`,
    a worker job each (existing incomplete ones are kept: uniqueness). With `cap`, at most that many new
    jobs: the page ends at the record that reaches it. With `collect_ids`, also the ids of the page's worker
    jobs, new or already there."""
    from ashjobs.store import resources as sql

    sql.ensure(conn, trig.resource)
    where_sql, params = trig.where_sql(now)
    ids = sql.matching_ids(conn, trig.resource, where_sql, params, after_id=after_id, limit=limit)
    if not ids:
        return Page(after_id, 0, 0, [])
    keys = {i: rules.unique_key(trig.worker_job(i).unique, {}, now) for i in ids}  # type: ignore[arg-type]

    def existing(some: list[int]) -> list[int]:
        wanted = [keys[i] for i in some]
        return [r[0] for r in conn.execute(
            f"SELECT id FROM jobs WHERE unique_key IN ({','.join('?' * len(wanted))}) ORDER BY id", wanted)]

    if cap is not None and cap < len(ids):
        queued = {r[0] for r in conn.execute(
            f"SELECT unique_key FROM jobs WHERE unique_key IN ({','.join('?' * len(ids))})", list(keys.values()))}
        fresh = [i for i in ids if keys[i] not in queued]
        if len(fresh) > cap:
            ids = ids[:ids.index(fresh[cap - 1]) + 1]
    inserted = sql.enqueue_many(conn, [trig.worker_job(i, scheduler_job=scheduler_job) for i in ids], now)
    return Page(ids[-1], len(ids), inserted, existing(ids) if collect_ids else [])


@dataclass
class Fire:
    """The outcome of one scheduler run."""

    trigger: str
    at: float
    matched: int = 0
    enqueued: int = 0
    job_ids: list[int] = field(default_factory=list)
    outcome: str = "ok"


def run_scheduler(write: Callable[[Callable[[sqlite3.Connection], Any]], Any], trig: Trigger, now: float, *,
                  scheduler_job: int | None = None, collect_ids: bool = False,
                  page_size: int = PAGE_SIZE) -> Fire:
    """Run a trigger's scheduler through `write(fn)` (one transaction per page): sync callers pass
    `store.writer.call` or a `store.tx()` wrapper. `now` is fixed for the whole run."""
    fire = Fire(trig.name, now)
    if trig.cfg.paused:
        fire.outcome = "paused"
    else:
        try:
            _pages(write, trig, now, fire, scheduler_job, collect_ids, page_size)
        except Exception as e:  # recorded for `triggers list`, then the job fails and retries as usual
            fire.outcome = "error"
            write(functools.partial(_record_fire, fire=fire, error=f"{type(e).__name__}: {e}"))
            raise
    write(functools.partial(_record_fire, fire=fire))
    return fire


def _pages(write: Callable[[Callable[[sqlite3.Connection], Any]], Any], trig: Trigger, now: float, fire: Fire,
           scheduler_job: int | None, collect_ids: bool, page_size: int) -> None:
    after = 0
    while True:
        cap = None
        if trig.cfg.record_limit is not None:
            # The cap counts jobs this run enqueues, not records seen: records whose worker is still queued
            # (or, with trigger_once, ever ran) would otherwise fill it every run and starve the rest.
            cap = trig.cfg.record_limit - fire.enqueued
            if cap <= 0:
                return
        page: Page = write(functools.partial(_page, trig=trig, now=now, after_id=after, limit=page_size,
                                             scheduler_job=scheduler_job, collect_ids=collect_ids, cap=cap))
        fire.matched += page.found
        fire.enqueued += page.enqueued
        fire.job_ids += page.job_ids
        if page.found < page_size:
            return
        after = page.last_id


def _record_fire(conn: sqlite3.Connection, fire: Fire, error: str | None = None) -> None:
    from ashjobs.store import resources as sql

    sql.record_fire(conn, fire.trigger, at=fire.at, matched=fire.matched, enqueued=fire.enqueued,
                    outcome=fire.outcome, error=error)


def _services(ctx: JobContext) -> Any:
    if ctx.services is None:
        raise RuntimeError(f"{ctx.task} runs on a scheduler node (it needs the store)")
    return ctx.services


@task(SCHEDULE_TASK, context=True, max_attempts=3)
async def schedule(ctx: JobContext, trigger: str) -> dict[str, Any]:
    import asyncio

    svc = _services(ctx)
    trig = get(svc.cfg, trigger)
    # The pages go through the one writer (each a unit of its group commit); we wait off the event loop.
    fire = await asyncio.to_thread(run_scheduler, svc.writer.call, trig, svc.clock.now(), scheduler_job=ctx.job_id)
    if fire.enqueued:
        svc.wake()
    return {"matched": fire.matched, "enqueued": fire.enqueued, "outcome": fire.outcome}


# The worker: re-check and act, in one transaction.

def work_in(conn: sqlite3.Connection, trig: Trigger, record_id: int, *, now: float, actor: str | None,
            job_id: int | None) -> Any:
    """The worker's transaction: re-read the record, re-check `where`, run the action."""
    from ashjobs.store import resources as sql

    sql.ensure(conn, trig.resource)
    where_sql, params = trig.where_sql(now)
    if not sql.record_matches(conn, trig.resource, record_id, where_sql, params):
        raise Cancel(NO_LONGER_APPLIES)
    return trig.resource.run(conn, trig.cfg.action, record_id, now=now, actor=actor, job_id=job_id)


def _work_unit(svc: Any, trig: Trigger, record_id: int, actor: str | None, job_id: int | None
               ) -> Callable[[sqlite3.Connection], Any]:
    # `now` is read inside the transaction: the check sees the time the change commits at.
    return lambda conn: work_in(conn, trig, record_id, now=svc.clock.now(), actor=actor, job_id=job_id)


def _on_worker_finish(conn: sqlite3.Connection, done: FinishedAttempt) -> None:
    """Count final outcomes per trigger; run `on_error` on the record when the job is discarded."""
    from ashjobs import resources
    from ashjobs.store import resources as sql

    name = done.args.get("trigger")
    if not isinstance(name, str) or done.state not in rules.FINISHED:
        return
    sql.record_worker(conn, name, done.state, done.now)
    on_error = done.meta.get("on_error")
    if done.state != "discarded" or not on_error:
        return
    # A failing on_error must not undo the recording of the job's own failure.
    conn.execute("SAVEPOINT trigger_on_error")
    try:
        res = resources.get(done.meta["resource"])
        res.run(conn, on_error, int(done.args["record_id"]), now=done.now, actor=done.meta.get("actor"),
                args={"trigger": name, "error": done.error}, job_id=done.job_id)
    except Exception as e:
        conn.execute("ROLLBACK TO trigger_on_error")
        import logging

        logging.getLogger("ashjobs").error("trigger %s: on_error %s failed for job %s: %s", name, on_error,
                                           done.job_id, e)
    conn.execute("RELEASE trigger_on_error")


@task(WORK_TASK, context=True, max_attempts=1, on_finish=_on_worker_finish)
async def work(ctx: JobContext, trigger: str, record_id: int) -> Any:
    svc = _services(ctx)
    trig = get(svc.cfg, trigger)
    await svc.write(_work_unit(svc, trig, int(record_id), ctx.actor or trig.cfg.actor, ctx.job_id))
    return None


def matching_count(conn: sqlite3.Connection, trig: Trigger, now: float) -> int:
    from ashjobs.store import resources as sql

    if not sql.exists(conn, trig.resource):
        return 0
    where_sql, params = trig.where_sql(now)
    return sql.count(conn, trig.resource, where_sql, params)


# Scheduled actions: a [[cron]] entry running a resource's record-less action, e.g.
#   [[cron]]
#   name = "nightly_sweep"
#   schedule = "0 3 * * *"
#   task = "ashjobs.resource.action"
#   args = { resource = "alert", action = "sweep", args = { older_than = "30d" } }

@task(ACTION_TASK, context=True, max_attempts=3)
async def resource_action(ctx: JobContext, resource: str, action: str, args: dict[str, Any] | None = None) -> Any:
    """Run `action` of `resource` with no record, in one write transaction, as the job's actor."""
    from ashjobs import resources

    svc = _services(ctx)
    res = resources.get(resource)
    actor = ctx.actor or "system:scheduler"
    return await svc.write(lambda conn: res.run(conn, action, None, now=svc.clock.now(), actor=actor,
                                                args=args or {}, job_id=ctx.job_id))
