"""`ashjobs triggers`: what each trigger is, when it fires, how it last went; run one now."""

from __future__ import annotations

import sys
from typing import Any

import click

from ashjobs.cli.common import Env, console, emit_json, json_option, pass_env


@click.group("triggers")
def triggers() -> None:
    """Resource triggers: a cron schedule, a resource, a `where` filter and an action.

    \b
    At each slot a trigger's scheduler job enqueues one worker job per matching record; the worker
    re-checks the record and runs the action. Declare them as [[trigger]] tables or in Python; the
    built-ins are auto_escalate (alerts) and expire_packages (edge packages).
    """


def _schedules(env: Env) -> dict[str, Any]:
    """The cron entry that fires each trigger's scheduler, by trigger name: a `[[cron]]` entry named
    `trigger:NAME` replaces the trigger's own schedule (that is how a migrated schedules table keeps one)."""
    try:
        from ashjobs import cron
    except ImportError:  # a copy without the cron loop
        return {}
    return {e.args["trigger"]: e for e in cron.entries(env.cfg)
            if e.name.startswith("trigger:") and isinstance(e.args.get("trigger"), str)}


def _next_fire(entry: Any, now: float) -> float | None:
    from ashjobs.cron import next_fire

    if entry is None or entry.paused:
        return None
    at = next_fire(entry, now)
    return at if at != float("inf") else None  # @reboot or a schedule that never fires again


def _rows(env: Env) -> list[dict[str, Any]]:
    from ashjobs import triggers as trig
    from ashjobs.clock import SYSTEM, iso
    from ashjobs.store import resources as rsql

    env.load_tasks()  # [app] modules may declare resources and triggers
    loaded = trig.load(env.cfg)
    schedules = _schedules(env)
    now = SYSTEM.now()
    states: dict[str, dict[str, Any]] = {}
    counts: dict[str, int | None] = {}
    if env.cfg.db_path.exists():
        with env.store(create=False) as store:
            states = rsql.trigger_states(store.conn, loaded)
            for name, t in loaded.items():
                counts[name] = trig.matching_count(store.conn, t, now)
    out = []
    for name, t in loaded.items():
        s = states.get(name, {})
        entry = schedules.get(name)
        out.append({
            "name": name, "resource": t.resource.name, "action": t.cfg.action,
            "schedule": entry.schedule if entry else t.cfg.schedule,
            "timezone": entry.timezone if entry else t.cfg.timezone, "queue": t.cfg.queue,
            "paused": entry.paused if entry else t.cfg.paused, "next_fire": iso(_next_fire(entry, now)), "last_fire": iso(s.get("last_fire_at")),
            "last_outcome": s.get("last_outcome"), "last_error": s.get("last_error"),
            "last_matched": s.get("last_matched"),
            "last_enqueued": s.get("last_enqueued"),
            "workers": {"completed": s.get("workers_completed", 0), "cancelled": s.get("workers_cancelled", 0),
                        "discarded": s.get("workers_discarded", 0), "last": s.get("last_worker_outcome")},
            "matching_now": counts.get(name, 0),
        })
    return out


@triggers.command("list")
@json_option
@pass_env
def list_(env: Env, as_json: bool) -> None:
    """Every trigger: schedule, next and last fire, last outcome, records matching now.

    \b
    Example: ashjobs triggers list --json
    """
    rows = _rows(env)
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table

    table = Table("name", "resource.action", "schedule", "tz", "next fire", "last fire", "last outcome",
                  "matching now")
    for r in rows:
        outcome = "" if r["last_outcome"] is None else f"{r['last_outcome']}, {r['last_enqueued']} enqueued"
        if r["workers"]["last"]:
            outcome += f"; last worker {r['workers']['last']}"
        table.add_row(r["name"] + (" (paused)" if r["paused"] else ""), f"{r['resource']}.{r['action']}",
                      r["schedule"], r["timezone"], r["next_fire"] or "", r["last_fire"] or "never", outcome,
                      str(r["matching_now"]))
    console().print(table if rows else "no triggers")


@triggers.command("run")
@click.argument("name")
@click.option("--wait", is_flag=True, help="Wait until its worker jobs are finished and print their outcomes.")
@click.option("--timeout", default="5m", show_default=True, metavar="DURATION", help="How long --wait waits.")
@json_option
@pass_env
def run(env: Env, name: str, wait: bool, timeout: str, as_json: bool) -> None:
    """Run trigger NAME's scheduler now: enqueue a worker job for every record matching now.

    \b
    With --wait, the workers are run by the daemon if one runs on this data dir, else here in the
    foreground; exit status 1 if any worker failed or did not finish in time.
    Example: ashjobs triggers run expire_packages --wait
    """
    from ashjobs import presence
    from ashjobs import triggers as trig
    from ashjobs.clock import SYSTEM
    from ashjobs.config import parse_duration
    from ashjobs.errors import UsageError

    try:
        limit = parse_duration(timeout)
    except ValueError as e:
        raise UsageError(f"--timeout: {e}") from None
    env.load_tasks()
    t = trig.get(env.cfg, name)
    with env.store() as store:

        def write(fn: Any) -> Any:
            with store.tx() as conn:
                return fn(conn)

        fire = trig.run_scheduler(write, t, SYSTEM.now(), collect_ids=True)
    if fire.enqueued:
        presence.wake(env.cfg.data_dir)
    result: dict[str, Any] = {"trigger": name, "outcome": fire.outcome, "matched": fire.matched,
                              "enqueued": fire.enqueued, "job_ids": fire.job_ids}
    failed = False
    if wait and fire.job_ids:
        _run_or_wait(env, fire.job_ids, limit)
        result["jobs"] = _outcomes(env, fire.job_ids)
        failed = any(j["state"] not in ("completed", "cancelled") for j in result["jobs"])
    if as_json:
        emit_json(result)
    else:
        click.echo(f"trigger {name}: {fire.outcome}, {fire.matched} matching, {fire.enqueued} worker job(s) "
                   f"enqueued ({len(fire.job_ids) - fire.enqueued} already queued)")
        for j in result.get("jobs", []):
            why = f" ({j['error']})" if j["error"] else ""
            click.echo(f"  job {j['id']} record {j['record_id']}: {j['state']}{why}")
    if failed:
        sys.exit(1)


def _run_or_wait(env: Env, job_ids: list[int], limit: float) -> None:
    """No daemon on this data dir: run the jobs here, holding the daemon's lock so that a daemon starting
    meanwhile cannot rescue them from under us (same node name). Else wait for the daemon to run them."""
    from ashjobs import presence
    from ashjobs.errors import AshError

    lock = presence.DaemonLock(env.cfg.data_dir)
    try:
        lock.acquire()
    except AshError:
        _wait_for_daemon(env, job_ids, limit)
        return
    try:
        from ashjobs.executor import run_until_done

        run_until_done(env.cfg, job_ids, limit)
    finally:
        lock.release()


def _wait_for_daemon(env: Env, job_ids: list[int], limit: float) -> None:
    import time

    from ashjobs.queue import FINISHED
    from ashjobs.store import jobs as sql

    deadline = time.monotonic() + limit
    with env.store() as store:
        while time.monotonic() < deadline:
            if all(s in FINISHED for s, _ in sql.states_of(store.conn, job_ids).values()):
                return
            time.sleep(0.05)


def _outcomes(env: Env, job_ids: list[int]) -> list[dict[str, Any]]:
    from ashjobs.store import jobs as sql

    out = []
    with env.store() as store:
        for job_id in job_ids:
            job = sql.get(store.conn, job_id)
            if job is None:  # pruned meanwhile
                continue
            tries = sql.attempts(store.conn, job_id)
            out.append({"id": job_id, "record_id": job.args.get("record_id"), "state": job.state,
                        "error": tries[-1]["error"] if tries else None})
    return out
