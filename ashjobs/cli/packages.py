"""`ashjobs packages`: issue, list, verify and revoke edge onboarding packages."""

from __future__ import annotations

import sys
from typing import Any

import click

from ashjobs.cli.common import Env, console, emit_json, json_option, pass_env


@click.group("packages")
def packages() -> None:
    """Edge onboarding packages. Each has a download token shown once at issue (only its hash is kept);
    an issued package whose download and join tokens have both expired is expired by the hourly
    expire_packages trigger, and its token stops verifying."""


def _duration(value: str, option: str) -> float:
    from ashjobs.config import parse_duration
    from ashjobs.errors import UsageError

    try:
        seconds = parse_duration(value)
    except ValueError as e:
        raise UsageError(f"{option}: {e}") from None
    if seconds <= 0:
        raise UsageError(f"{option}: must be > 0")
    return seconds


@packages.command("issue")
@click.option("--site", required=True, metavar="S")
@click.option("--partition", metavar="P")
@click.option("--ttl", default="24h", show_default=True, metavar="DURATION", help="Download token lifetime.")
@click.option("--join-ttl", default="24h", show_default=True, metavar="DURATION", help="Join token lifetime.")
@json_option
@pass_env
def issue(env: Env, site: str, partition: str | None, ttl: str, join_ttl: str, as_json: bool) -> None:
    """Issue a package; prints its download token (the only time it is shown).

    \b
    Example: ashjobs packages issue --site edge-7 --partition p1 --ttl 2h
    """
    from ashjobs.apps import packages as app
    from ashjobs.cli.alerts import actor, require_enabled
    from ashjobs.clock import SYSTEM

    require_enabled(env, "packages")
    ttl_s, join_s = _duration(ttl, "--ttl"), _duration(join_ttl, "--join-ttl")
    with env.store() as store, store.tx() as conn:
        record, token = app.issue(conn, SYSTEM.now(), site=site, partition=partition, ttl=ttl_s, join_ttl=join_s,
                                  actor=actor())
    if as_json:
        emit_json({**app.to_dict(record), "token": token})
    else:
        click.echo(f"package {record['id']} issued for site {site}; download token (shown only now):", err=True)
        click.echo(token)


@packages.command("list")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True, help="Newest first.")
@json_option
@pass_env
def list_(env: Env, limit: int, as_json: bool) -> None:
    """List packages, newest first (tokens are never shown again)."""
    from ashjobs.apps import packages as app

    rows: list[dict[str, Any]] = []
    if env.cfg.db_path.exists():
        with env.store(create=False) as store:
            conn = store.conn  # a read: no write lock, so a busy daemon is not held up
            rows = [app.to_dict(r) for r in app.list_packages(conn, limit=limit)]
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table

    table = Table("id", "site", "partition", "status", "download token expires", "join token expires", "created")
    for p in rows:
        table.add_row(str(p["id"]), p["site"], p["partition"] or "", p["status"],
                      p["download_token_expires_at"] or "", p["join_token_expires_at"] or "", p["created_at"] or "")
    console().print(table if rows else "no packages")


@packages.command("verify")
@click.argument("token")
@json_option
@pass_env
def verify(env: Env, token: str, as_json: bool) -> None:
    """Check a download token: exit 0 if valid, else exit 1 and say why (expired, revoked, unknown)."""
    from ashjobs.apps import packages as app
    from ashjobs.clock import SYSTEM

    verdict = "unknown"
    if env.cfg.db_path.exists():
        with env.store(create=False) as store:
            verdict = app.verify(store.conn, token, SYSTEM.now())
    if as_json:
        emit_json({"valid": verdict == "ok", "reason": None if verdict == "ok" else verdict})
    else:
        click.echo("valid" if verdict == "ok" else f"invalid: {verdict}")
    if verdict != "ok":
        sys.exit(1)


@packages.command("revoke")
@click.argument("package_id", type=int)
@pass_env
def revoke(env: Env, package_id: int) -> None:
    """Revoke package PACKAGE_ID: its download token stops verifying at once."""
    from ashjobs.apps import packages as app
    from ashjobs.cli.alerts import actor
    from ashjobs.clock import SYSTEM

    with env.store() as store, store.tx() as conn:
        app.edge_package.run(conn, "revoke", package_id, now=SYSTEM.now(), actor=actor())
    click.echo(f"package {package_id} revoked")
