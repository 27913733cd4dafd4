"""`ashjobs notifications`: the outbox and the history of every delivery try."""

from __future__ import annotations

from typing import Any

import click

from ashjobs.cli.common import Env, console, emit_json, json_option, pass_env

STATUSES = ("pending", "sent", "failed")


def _rows(env: Env, fn: Any) -> Any:
    """Run fn(conn) on the store; no database yet means nothing was ever notified."""
    if not env.cfg.db_path.exists():
        return None
    with env.store(create=False) as store:
        return fn(store.conn)


def _shape(n: dict[str, Any]) -> dict[str, Any]:
    from ashjobs.clock import iso

    return {"id": n["id"], "kind": n["kind"], "subject": n["subject"], "status": n["status"],
            "attempts": n["attempts"], "created_at": iso(n["created_at"]), "sent_at": iso(n["sent_at"]),
            "last_error": n["last_error"], "source": n["source"], "actor": n["actor"], "job_id": n["job_id"]}


@click.group("notifications")
def notifications() -> None:
    """The notification outbox: what was sent, what is still being retried, what failed.

    \b
    Channels are set in [notify] (webhook, command, log); each notification is delivered by a job on
    queue "notifications" and retried with backoff until every channel accepted it.
    """


@notifications.command("list")
@click.option("--status", type=click.Choice(STATUSES), help="Only notifications in this status.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True, help="Newest first.")
@json_option
@pass_env
def list_(env: Env, status: str | None, limit: int, as_json: bool) -> None:
    """List notifications, newest first.

    \b
    Example: ashjobs notifications list --status failed --json
    """
    from ashjobs.store import notifications as outbox

    rows = _rows(env, lambda conn: outbox.list_notifications(conn, status=status, limit=limit)) or []
    items = [_shape(r) for r in rows]
    if as_json:
        emit_json(items)
        return
    from rich.table import Table

    table = Table("id", "kind", "subject", "status", "attempts", "created", "sent", "last error")
    colour = {"sent": "green", "pending": "yellow", "failed": "red"}
    for n in items:
        table.add_row(str(n["id"]), n["kind"], n["subject"], f"[{colour[n['status']]}]{n['status']}[/]",
                      str(n["attempts"]), n["created_at"] or "", n["sent_at"] or "", n["last_error"] or "")
    console().print(table if items else "no notifications")


@notifications.command("show")
@click.argument("notification_id", type=int)
@json_option
@pass_env
def show(env: Env, notification_id: int, as_json: bool) -> None:
    """One notification with every delivery try (channel, outcome, HTTP status or exit code, error)."""
    from ashjobs.clock import iso
    from ashjobs.errors import NotFound
    from ashjobs.store import notifications as outbox

    found = _rows(env, lambda conn: (outbox.get(conn, notification_id), outbox.deliveries(conn, notification_id)))
    if not found or found[0] is None:
        raise NotFound(f"notification {notification_id}: not found")
    row, tries = found
    item = {**_shape(row), "body": row["body"], "payload": row["payload"],
            "deliveries": [{**d, "at": iso(d["at"]), "duration": round(d["duration"], 6)} for d in tries]}
    if as_json:
        emit_json(item)
        return
    out = console()
    out.print(f"[bold]notification {item['id']}[/] {item['kind']}: {item['subject']} — {item['status']}")
    out.print(item["body"])
    for d in item["deliveries"]:
        code = "" if d["code"] is None else f" ({d['code']})"
        out.print(f"  round {d['attempt']} {d['at']} {d['channel']}: {d['outcome']}{code}"
                  + (f" — {d['error']}" if d["error"] else ""))
