"""`ashjobs alerts`: raise, list, acknowledge and resolve alerts (the built-in `alert` resource)."""

from __future__ import annotations

from typing import Any

import click

from ashjobs.cli.common import Env, console, emit_json, json_option, pass_env

SEVERITIES = ("info", "warning", "critical", "emergency")
STATUSES = ("pending", "acknowledged", "resolved", "escalated", "suppressed")


def actor() -> str:
    import getpass

    try:
        return f"user:{getpass.getuser()}"
    except Exception:  # no login name (container without passwd entry)
        return "user:unknown"


@click.group("alerts")
def alerts() -> None:
    """Alerts: pending until acknowledged or resolved; a critical or emergency alert left pending longer
    than [apps.alerts] escalate_after (30m) is escalated and a notification is sent."""


@alerts.command("raise")
@click.option("--severity", required=True, type=click.Choice(SEVERITIES))
@click.option("--source", required=True, metavar="X", help="What raised it, e.g. a check or host name.")
@click.option("--partition", metavar="P")
@click.option("--message", default="", metavar="M")
@click.option("--triggered-at", metavar="ISO8601", help="When the problem started (default: now).")
@json_option
@pass_env
def raise_(env: Env, severity: str, source: str, partition: str | None, message: str, triggered_at: str | None,
           as_json: bool) -> None:
    """Raise an alert; prints its id (--json: the alert).

    \b
    Example: ashjobs alerts raise --severity critical --source edge-7/disk --message "/var 99% full"
    """
    from ashjobs.apps import alerts as app
    from ashjobs.clock import SYSTEM, parse_iso
    from ashjobs.errors import UsageError

    require_enabled(env, "alerts")
    at = None
    if triggered_at is not None:
        try:
            at = parse_iso(triggered_at)
        except ValueError:
            raise UsageError(f"--triggered-at: not an ISO 8601 time: {triggered_at!r}") from None
    with env.store() as store, store.tx() as conn:
        record = app.raise_alert(conn, SYSTEM.now(), severity=severity, source=source, partition=partition,
                                 message=message, triggered_at=at, actor=actor())
    if as_json:
        emit_json(app.to_dict(record))
    else:
        click.echo(record["id"])


def require_enabled(env: Env, app: str) -> None:
    """Refuse to create records for a built-in app the config turned off: nothing would act on them."""
    from ashjobs.errors import UsageError

    if not getattr(env.cfg.section("apps"), app).enabled:
        raise UsageError(f"{env.cfg._where()}: [apps.{app}] enabled = false: the {app} app is turned off")


@alerts.command("list")
@click.option("--status", type=click.Choice(STATUSES), help="Only alerts in this status.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True, help="Newest first.")
@json_option
@pass_env
def list_(env: Env, status: str | None, limit: int, as_json: bool) -> None:
    """List alerts, newest first.

    \b
    Example: ashjobs alerts list --status escalated --json
    """
    from ashjobs.apps import alerts as app

    rows: list[dict[str, Any]] = []
    if env.cfg.db_path.exists():
        with env.store(create=False) as store:
            conn = store.conn  # a read: no write lock, so a busy daemon is not held up
            rows = [app.to_dict(r) for r in app.list_alerts(conn, status=status, limit=limit)]
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table

    table = Table("id", "status", "severity", "source", "partition", "triggered", "level", "notified", "message")
    colour = {"pending": "yellow", "escalated": "red", "acknowledged": "cyan", "resolved": "green",
              "suppressed": "dim"}
    for a in rows:
        table.add_row(str(a["id"]), f"[{colour[a['status']]}]{a['status']}[/]", a["severity"], a["source"],
                      a["partition"] or "", a["triggered_at"] or "", str(a["escalation_level"]),
                      str(a["notification_count"]), a["message"] or "")
    console().print(table if rows else "no alerts")


def _change(env: Env, alert_id: int, action: str, done: str) -> None:
    from ashjobs.apps import alerts as app
    from ashjobs.clock import SYSTEM

    with env.store() as store, store.tx() as conn:
        app.set_status(conn, SYSTEM.now(), alert_id, action, actor=actor())
    click.echo(f"alert {alert_id} {done}")


@alerts.command("ack")
@click.argument("alert_id", type=int)
@pass_env
def ack(env: Env, alert_id: int) -> None:
    """Acknowledge alert ALERT_ID: someone is on it (it will not be escalated)."""
    _change(env, alert_id, "acknowledge", "acknowledged")


@alerts.command("resolve")
@click.argument("alert_id", type=int)
@pass_env
def resolve(env: Env, alert_id: int) -> None:
    """Resolve alert ALERT_ID."""
    _change(env, alert_id, "resolve", "resolved")
