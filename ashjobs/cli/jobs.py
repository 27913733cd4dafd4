"""enqueue, jobs list|show|retry|cancel, queues pause|resume."""

from __future__ import annotations

from typing import Any

import click

from ashjobs.cli.common import Env, console, emit_json, json_option, parse_json_arg, pass_env

JOB_ID = click.IntRange(1, 2**63 - 1)  # SQLite's integer range: a larger id is a usage error, not a crash
STATE_CHOICE = click.Choice(["available", "scheduled", "executing", "retryable", "completed", "discarded",
                             "cancelled"])


@click.command()
@click.argument("task")
@click.option("--args", "args_json", default="{}", metavar="JSON", help="Task arguments as a JSON object.")
@click.option("--queue", metavar="Q", help="Queue (default: the task's queue).")
@click.option("--priority", type=click.IntRange(0, 9), help="0 (highest) .. 9.")
@click.option("--max-attempts", type=click.IntRange(1), help="Attempts before the job is discarded (default 20).")
@click.option("--in", "delay", metavar="DURATION", help="Run after this long, e.g. 30s, 5m.")
@click.option("--at", "at", metavar="ISO8601", help="Run at this time (UTC unless the time names a zone).")
@click.option("--unique-for", metavar="DURATION", help="Refuse a duplicate (same task, queue, args) for this long.")
@click.option("--partition", metavar="P", help="Route to a poller of this partition.")
@click.option("--domain", metavar="D", help="Route to a poller serving this domain (site).")
@json_option
@pass_env
def enqueue(env: Env, task: str, args_json: str, queue: str | None, priority: int | None,
            max_attempts: int | None, delay: str | None, at: str | None, unique_for: str | None,
            partition: str | None, domain: str | None, as_json: bool) -> None:
    """Insert a job and print its id. Works with or without a running daemon.

    \b
    Examples:
      ashjobs enqueue sleep --args '{"seconds": 1}'
      ashjobs enqueue command --args '{"argv": ["/usr/bin/true"]}' --in 5m --unique-for 1h
      ashjobs enqueue tcp --args '{"host": "10.0.0.5", "port": 22}' --partition p1 --domain site-a
    """
    from ashjobs.client import Client
    from ashjobs.clock import parse_iso

    if delay and at:
        raise click.UsageError("--in and --at: give one of them, not both")
    args = parse_json_arg(args_json, "--args")
    scheduled_at = None
    if at:
        try:
            scheduled_at = parse_iso(at)
        except ValueError:
            raise click.UsageError(f"--at: not an ISO 8601 time: {at!r}") from None
    with Client(env.cfg) as client:
        r = client.enqueue(task, args, queue=queue, priority=priority, max_attempts=max_attempts, delay=delay,
                           scheduled_at=scheduled_at, unique_for=unique_for, partition=partition, domain=domain)
    if as_json:
        emit_json(r.to_dict())
    else:
        click.echo(f"{r.id}" + (" (conflict: an identical unique job exists)" if r.conflict else ""))


@click.group()
def jobs() -> None:
    """List, show, retry and cancel jobs."""


@jobs.command("list")
@click.option("--state", type=STATE_CHOICE)
@click.option("--queue", metavar="Q")
@click.option("--task", metavar="T")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@json_option
@pass_env
def jobs_list(env: Env, state: str | None, queue: str | None, task: str | None, limit: int, as_json: bool) -> None:
    """Newest jobs first, filtered by state, queue and task."""
    from ashjobs.clock import iso
    from ashjobs.store import jobs as sql

    with env.store() as store:
        rows = sql.list_jobs(store.conn, state=state, queue=queue, task=task, limit=limit)
    if as_json:
        emit_json([j.to_dict() for j in rows])
        return
    from rich.table import Table

    table = Table("id", "task", "queue", "state", "attempt", "partition", "domain", "scheduled", box=None)
    for j in rows:
        table.add_row(str(j.id), j.task, j.queue, _styled(j.state), f"{j.attempt}/{j.max_attempts}",
                      j.partition or "", j.domain or "", iso(j.scheduled_at) or "")
    console().print(table)


def _styled(state: str) -> str:
    color = {"completed": "green", "executing": "cyan", "retryable": "yellow", "discarded": "red",
             "cancelled": "magenta"}.get(state)
    return f"[{color}]{state}[/]" if color else state


@jobs.command("show")
@click.argument("job_id", type=JOB_ID)
@json_option
@pass_env
def jobs_show(env: Env, job_id: int, as_json: bool) -> None:
    """One job with its attempt history."""
    from ashjobs.errors import NotFound
    from ashjobs.store import jobs as sql

    with env.store() as store:
        job = sql.get(store.conn, job_id)
        if job is None:
            raise NotFound(f"job {job_id}: no such job (it may have been pruned; its attempts are kept)")
        data: dict[str, Any] = job.to_dict()
        data["attempts"] = sql.attempts(store.conn, job_id)
    if as_json:
        emit_json(data)
        return
    from rich.table import Table

    c = console()
    for key in ("id", "task", "queue", "state", "attempt", "max_attempts", "priority", "args", "partition",
                "domain", "actor", "scheduled_at", "inserted_at", "attempted_at", "completed_at", "cancelled_at",
                "discarded_at", "lease", "meta"):
        if data.get(key) not in (None, {}, ""):
            c.print(f"[bold]{key:>13}[/] {data[key]}", highlight=False)
    if data["attempts"]:
        table = Table("attempt", "node", "outcome", "started", "finished", "error", box=None)
        for a in data["attempts"]:
            table.add_row(str(a["attempt"]), a["node"] or "", a["outcome"], a["started_at"], a["finished_at"],
                          (a["error"] or "")[:120])
        c.print(table)


@jobs.command("retry")
@click.argument("job_id", type=JOB_ID)
@pass_env
def jobs_retry(env: Env, job_id: int) -> None:
    """Run a discarded, cancelled or completed job again (retryable and scheduled ones: now)."""
    _change(env, job_id, "retry")


@jobs.command("cancel")
@click.argument("job_id", type=JOB_ID)
@pass_env
def jobs_cancel(env: Env, job_id: int) -> None:
    """Cancel a job that has not finished; an executing job is stopped."""
    _change(env, job_id, "cancel")


def _change(env: Env, job_id: int, action: str) -> None:
    from ashjobs import presence
    from ashjobs.clock import SYSTEM
    from ashjobs.errors import NotFound
    from ashjobs.store import jobs as sql

    fn = sql.retry if action == "retry" else sql.cancel
    with env.store() as store, store.tx() as conn:
        before = fn(conn, job_id, SYSTEM.now())
    if before is None:
        raise NotFound(f"job {job_id}: no such job")
    presence.wake(env.cfg.data_dir)
    if action == "cancel" and before in ("completed", "discarded", "cancelled"):
        click.echo(f"job {job_id} already {before}; nothing to cancel")
    elif action == "retry" and before in ("available", "executing"):
        click.echo(f"job {job_id} is {before}; nothing to retry")
    else:
        click.echo(f"job {job_id}: {before} → {'cancelled' if action == 'cancel' else 'available'}")


@click.group()
def queues() -> None:
    """Pause and resume queues (persisted across restarts)."""


@queues.command("pause")
@click.argument("queue")
@pass_env
def queues_pause(env: Env, queue: str) -> None:
    """Stop starting jobs of QUEUE (running ones finish)."""
    _pause(env, queue, True)


@queues.command("resume")
@click.argument("queue")
@pass_env
def queues_resume(env: Env, queue: str) -> None:
    """Start jobs of QUEUE again."""
    _pause(env, queue, False)


def _pause(env: Env, queue: str, paused: bool) -> None:
    from ashjobs import presence
    from ashjobs.clock import SYSTEM
    from ashjobs.store import jobs as sql

    with env.store() as store, store.tx() as conn:
        sql.set_paused(conn, queue, paused, SYSTEM.now())
    presence.wake(env.cfg.data_dir)
    known = "" if queue in env.cfg.queues else " (note: not a configured queue; its jobs never run here)"
    click.echo(f"queue {queue} {'paused' if paused else 'resumed'}{known}")
