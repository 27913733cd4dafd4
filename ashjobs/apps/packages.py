"""The built-in `edge_package` resource: an onboarding package for an edge site, with a download token.

The token is shown once at issue and never stored: the record keeps its SHA-256. The token reads
`<id>.<secret>`, so verifying looks the package up by id and compares hashes in constant time. Every hour
`expire_packages` moves issued packages whose download and join tokens have both expired to `expired` and
invalidates the download token (its hash moves out of the column that verification accepts, so it can
never verify again, yet `verify` can still say why it fails).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
from typing import Any, Literal

from ashjobs.clock import iso
from ashjobs.errors import UsageError
from ashjobs.resources import ActionCall, Resource, Transition
from ashjobs.triggers import TriggerConfig

STATUSES = ("issued", "delivered", "activated", "expired", "revoked")
QUEUE = "onboarding"
DEFAULT_TTL = 86400.0

Verdict = Literal["ok", "expired", "revoked", "unknown"]

edge_package = Resource(
    "edge_package",
    fields={
        "site": "text",
        "partition": "text",
        "download_token_hash": "text",  # sha256 hex of the live token; NULL once invalidated
        "invalidated_token_hash": "text",  # the hash of an invalidated token, to tell why it fails
        "download_token_expires_at": "timestamp",
        "join_token_expires_at": "timestamp",
        "created_at": "timestamp",
    },
    states=STATUSES,
    initial="issued",
    transitions=[
        Transition("deliver", ["issued"], "delivered"),
        Transition("activate", ["issued", "delivered"], "activated"),
        Transition("expire", ["issued"], "expired"),
        Transition("revoke", ["issued", "delivered", "activated"], "revoked"),
    ],
    indexes=[("status", "download_token_expires_at")],
)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def to_dict(record: dict[str, Any]) -> dict[str, Any]:
    """The JSON shape of a package: no hashes, times in ISO 8601."""
    return {"id": record["id"], "site": record["site"], "partition": record["partition"],
            "status": record["status"], "download_token_expires_at": iso(record["download_token_expires_at"]),
            "join_token_expires_at": iso(record["join_token_expires_at"]), "created_at": iso(record["created_at"])}


def _invalidate(record: dict[str, Any]) -> dict[str, Any]:
    return {"download_token_hash": None,
            "invalidated_token_hash": record["download_token_hash"] or record["invalidated_token_hash"]}


@edge_package.action("expire")
def expire(call: ActionCall) -> dict[str, Any]:
    assert call.record is not None
    return call.transition("expire", reason="download and join tokens expired", **_invalidate(call.record))


@edge_package.action("revoke")
def revoke(call: ActionCall) -> dict[str, Any]:
    assert call.record is not None
    return call.transition("revoke", reason=call.args.get("reason") or "revoked", **_invalidate(call.record))


@edge_package.action("deliver")
def deliver(call: ActionCall) -> dict[str, Any]:
    return call.transition("deliver")


@edge_package.action("activate")
def activate(call: ActionCall) -> dict[str, Any]:
    return call.transition("activate")


def issue(conn: sqlite3.Connection, now: float, *, site: str, partition: str | None = None,
          ttl: float = DEFAULT_TTL, join_ttl: float = DEFAULT_TTL, actor: str = "cli") -> tuple[dict[str, Any], str]:
    """Create a package in the caller's transaction. Returns (record, token): the token exists only here."""
    if not site:
        raise UsageError("--site: must not be empty")
    if ttl <= 0 or join_ttl <= 0:
        raise UsageError("--ttl/--join-ttl: must be > 0")
    record = edge_package.create(conn, {"site": site, "partition": partition, "created_at": now,
                                        "download_token_expires_at": now + ttl, "join_token_expires_at": now + join_ttl},
                                 now=now, actor=actor, action="issue")
    token = f"{record['id']}.{secrets.token_urlsafe(32)}"
    edge_package.update(conn, record, {"download_token_hash": token_hash(token)})
    return record, token


def verify(conn: sqlite3.Connection, token: str, now: float) -> Verdict:
    """ok, or why not: expired (by time or by the trigger), revoked, unknown (not a token we issued)."""
    from ashjobs.store import resources as sql

    head, sep, _ = token.strip().partition(".")
    if not sep or not head.isdigit() or not sql.exists(conn, edge_package):
        return "unknown"
    record = sql.get(conn, edge_package, int(head))
    if record is None:
        return "unknown"
    digest = token_hash(token.strip())
    live = hmac.compare_digest(digest, record["download_token_hash"] or "")
    dead = hmac.compare_digest(digest, record["invalidated_token_hash"] or "")
    if live:
        if record["status"] in ("expired", "revoked"):
            return record["status"]
        return "ok" if now < record["download_token_expires_at"] else "expired"
    if dead:
        return "revoked" if record["status"] == "revoked" else "expired"
    return "unknown"


def list_packages(conn: sqlite3.Connection, limit: int = 100) -> list[dict[str, Any]]:
    from ashjobs.store import resources as sql

    if not sql.exists(conn, edge_package):
        return []
    return sql.select(conn, edge_package, limit=limit)


def triggers(cfg: Any) -> list[TriggerConfig]:
    if not cfg.section("apps").packages.enabled:
        return []
    return [TriggerConfig(
        name="expire_packages", resource="edge_package", action="expire", schedule="0 * * * *", queue=QUEUE,
        where={"status": "issued", "download_token_expires_at": {"older_than": 0},
               "join_token_expires_at": {"older_than": 0}},
    )]
