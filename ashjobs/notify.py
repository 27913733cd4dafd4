"""Delivering notifications from the outbox (`ashjobs.apps.notifications.put`) through the channels of the
[notify] section: a signed webhook, a command that reads the notification JSON on stdin, the daemon's log.

Each notification is delivered by its own job (task `ashjobs.notify.deliver`, queue "notifications"). A round
tries every configured channel that has not yet accepted it, recording each try; a channel accepts with an
HTTP 2xx or exit status 0. The notification is `sent` once every channel has accepted it; otherwise the job
fails and retries with backoff, re-trying only the channels still missing, so a receiver that accepted is
not sent the same notification again by a later round. After the last attempt it is `failed`.

Webhook signature: with `secret` (or `secret_file`) set, the request carries `X-Ashjobs-Timestamp: <unix seconds>` and
`X-Ashjobs-Signature: sha256=<hex>`, the HMAC-SHA256 under the secret of `<timestamp>.` followed by the exact
body bytes. A receiver recomputes it (`verify_signature`), compares in constant time and rejects stale
timestamps; `X-Ashjobs-Notification` (the id) lets it drop a duplicate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ashjobs.config import Duration
from ashjobs.tasks import task

if TYPE_CHECKING:
    import logging
    import sqlite3

    from ashjobs.config import Config
    from ashjobs.services import Services
    from ashjobs.tasks import JobContext

Channel = Literal["webhook", "command", "log"]
SIGNATURE_HEADER = "X-Ashjobs-Signature"
TIMESTAMP_HEADER = "X-Ashjobs-Timestamp"
ID_HEADER = "X-Ashjobs-Notification"
ERROR_TAIL = 500  # characters of a response body or stderr kept as the error
WEBHOOK_TIMEOUT = Duration(10.0)
COMMAND_TIMEOUT = Duration(30.0)


def _url_problem(url: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        return f"not a valid URL ({e}): {url!r}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"expected an http:// or https:// URL with a host, got {url!r}"
    return None


@dataclass
class WebhookConfig:
    url: str = ""
    secret: str = ""  # when set, requests are signed (HMAC-SHA256)
    secret_file: str = ""  # or: read the secret from this file (keeps it out of the config)
    timeout: Duration = WEBHOOK_TIMEOUT

    def validate(self) -> str | None:
        if self.url and (problem := _url_problem(self.url)):
            return f"url: {problem}"
        if self.secret and self.secret_file:
            return "secret_file: set either 'secret' or 'secret_file', not both"
        if self.timeout <= 0:
            return "timeout: must be > 0"
        return None


@dataclass
class CommandConfig:
    argv: list[str] = field(default_factory=list)  # run without a shell; the notification JSON on stdin
    timeout: Duration = COMMAND_TIMEOUT

    def validate(self) -> str | None:
        if self.timeout <= 0:
            return "timeout: must be > 0"
        return None


@dataclass
class NotifyConfig:
    """[notify]: channels every notification goes through, in order."""

    channels: list[Channel] = field(default_factory=lambda: ["log"])
    webhook: WebhookConfig = field(default_factory=WebhookConfig)
    command: CommandConfig = field(default_factory=CommandConfig)

    def validate(self) -> str | None:
        if not self.channels:
            return "channels: at least one of 'webhook', 'command', 'log' (use ['log'] to only log)"
        if len(set(self.channels)) != len(self.channels):
            return f"channels: a channel is listed twice: {self.channels!r}"
        if "webhook" in self.channels and not self.webhook.url:
            return "webhook.url: required when channels include 'webhook'"
        if "command" in self.channels and not (self.command.argv and all(self.command.argv)):
            return "command.argv: a non-empty list of strings is required when channels include 'command'"
        return None


# --- the wire form --------------------------------------------------------------------------------------


def document(row: dict[str, Any]) -> dict[str, Any]:
    """The JSON a receiver gets: the same for every try of one notification."""
    from ashjobs.clock import iso

    return {"id": row["id"], "kind": row["kind"], "subject": row["subject"], "body": row["body"],
            "payload": row["payload"], "source": row["source"], "actor": row["actor"],
            "created_at": iso(row["created_at"])}


def encode(doc: dict[str, Any]) -> bytes:
    import json

    return json.dumps(doc, separators=(",", ":"), sort_keys=True, default=str).encode()


def sign(secret: str | bytes, timestamp: int, body: bytes) -> str:
    import hashlib
    import hmac

    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def verify_signature(secret: str | bytes, timestamp: str, body: bytes, signature: str, *, now: float,
                     max_age: float = 300.0) -> bool:
    """For receivers: the signature matches and the timestamp is within `max_age` of `now`."""
    import hmac

    try:
        ts = int(timestamp)
    except ValueError:
        return False
    return abs(now - ts) <= max_age and hmac.compare_digest(sign(secret, ts, body), signature)


# --- channels -------------------------------------------------------------------------------------------


@dataclass
class Delivery:
    """One try of one channel."""

    channel: str
    accepted: bool
    code: int | None = None  # HTTP status or exit status
    error: str | None = None
    duration: float = 0.0


def post_webhook(cfg: WebhookConfig, body: bytes, *, notification_id: int, timestamp: int) -> Delivery:
    """POST the body; blocking (run it in a thread). Redirects are not followed: a 3xx is a refusal."""
    import http.client
    from pathlib import Path
    from urllib.parse import urlsplit

    from ashjobs import __version__

    started = time.monotonic()
    parts = urlsplit(cfg.url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {"Content-Type": "application/json", "User-Agent": f"ashjobs/{__version__}",
               ID_HEADER: str(notification_id), TIMESTAMP_HEADER: str(timestamp)}
    if cfg.secret_file:
        try:
            secret = Path(cfg.secret_file).expanduser().read_bytes().strip()
        except OSError as e:
            return Delivery("webhook", False, None, f"notify.webhook.secret_file: cannot read {cfg.secret_file}: "
                            f"{e.strerror}")
        if not secret:
            return Delivery("webhook", False, None, f"notify.webhook.secret_file: {cfg.secret_file} is empty")
        headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
    elif cfg.secret:
        headers[SIGNATURE_HEADER] = sign(cfg.secret, timestamp, body)
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(parts.hostname or "", parts.port, timeout=cfg.timeout)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        excerpt = resp.read(ERROR_TAIL).decode(errors="replace").strip()
        status = resp.status
    except (OSError, http.client.HTTPException) as e:
        return Delivery("webhook", False, None, f"{type(e).__name__}: {e}"[:ERROR_TAIL],
                        time.monotonic() - started)
    finally:
        conn.close()
    elapsed = time.monotonic() - started
    if 200 <= status < 300:
        return Delivery("webhook", True, status, None, elapsed)
    return Delivery("webhook", False, status, f"HTTP {status}" + (f": {excerpt}" if excerpt else ""), elapsed)


async def run_command(cfg: CommandConfig, body: bytes, *, notification_id: int, kind: str) -> Delivery:
    """Run argv with the notification JSON on stdin; exit 0 accepts."""
    import asyncio
    import os

    started = time.monotonic()
    env = {**os.environ, "ASHJOBS_NOTIFICATION_ID": str(notification_id), "ASHJOBS_NOTIFICATION_KIND": kind}
    try:
        proc = await asyncio.create_subprocess_exec(
            *cfg.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True)
    except OSError as e:
        return Delivery("command", False, None, f"cannot run {cfg.argv[0]!r}: {e.strerror or e}",
                        time.monotonic() - started)
    try:
        async with asyncio.timeout(cfg.timeout):  # not wait_for: on 3.11 it can swallow a racing cancel
            _, err = await proc.communicate(body)
    except (TimeoutError, asyncio.CancelledError) as e:
        try:
            os.killpg(proc.pid, 9)  # the whole group: a script's children must not outlive it
        except ProcessLookupError:
            pass
        await proc.wait()
        if isinstance(e, asyncio.CancelledError):
            raise
        return Delivery("command", False, None, f"timed out after {cfg.timeout:g}s", time.monotonic() - started)
    elapsed = time.monotonic() - started
    code = proc.returncode
    if code == 0:
        return Delivery("command", True, 0, None, elapsed)
    tail = err.decode(errors="replace").strip()[-ERROR_TAIL:]
    return Delivery("command", False, code, f"exit {code}" + (f": {tail}" if tail else ""), elapsed)


def log_notification(log: logging.Logger, doc: dict[str, Any]) -> Delivery:
    log.warning("notification %s [%s] %s: %s", doc["id"], doc["kind"], doc["subject"], doc["body"],
                extra={"notification": doc})
    return Delivery("log", True)


# --- the delivery task ----------------------------------------------------------------------------------


class DeliveryFailed(Exception):
    """Some channel did not accept the notification this round; the job retries."""


def backoff(attempt: int) -> float:
    """Seconds before the next round: 10 s doubling per attempt, at most 15 minutes (an alert is urgent)."""
    return float(min(10 * 2 ** max(attempt - 1, 0), 900))


def _enabled(cfg: Config) -> bool:
    try:
        return bool(cfg.section("apps").notifications.enabled)
    except ImportError:  # a copy without the apps section
        return True


def _record(conn: sqlite3.Connection, *, notification_id: int, attempt: int, delivery: Delivery,
            now: float) -> None:
    from ashjobs.store import notifications as outbox

    d = delivery
    outbox.record_delivery(conn, notification_id, attempt=attempt, channel=d.channel,
                           outcome="accepted" if d.accepted else "failed", code=d.code, error=d.error, at=now,
                           duration=d.duration)


async def deliver_notification(svc: Services, notification_id: int, *, attempt: int, max_attempts: int) -> str:
    """One delivery round of one notification. Returns what happened; raises DeliveryFailed to retry."""
    import asyncio
    import functools

    from ashjobs.store import notifications as outbox
    from ashjobs.tasks import Cancel, Discard

    cfg: NotifyConfig = svc.cfg.section("notify")
    row = outbox.get(svc.store.conn, notification_id)
    if row is None:
        raise Discard(f"notification {notification_id} does not exist")
    if row["status"] == "sent":
        return "already sent"
    if not _enabled(svc.cfg):
        reason = "not delivered: notifications are turned off ([apps.notifications] enabled = false)"
        now = svc.clock.now()
        await svc.write(lambda conn: outbox.finish_round(conn, notification_id, status="failed", attempt=attempt,
                                                         now=now, error=reason))
        raise Cancel(reason)
    done = outbox.accepted_channels(svc.store.conn, notification_id)
    doc = document(row)
    body = encode(doc)
    errors = []
    for channel in cfg.channels:
        if channel in done:
            continue
        if channel == "webhook":
            d = await asyncio.to_thread(post_webhook, cfg.webhook, body, notification_id=notification_id,
                                        timestamp=int(svc.clock.now()))
        elif channel == "command":
            d = await run_command(cfg.command, body, notification_id=notification_id, kind=row["kind"])
        else:
            d = log_notification(svc.log, doc)
        if not d.accepted:
            errors.append(f"{channel}: {d.error}")
        now = svc.clock.now()
        # Recorded at once: a crash later in the round must not make us send this channel again.
        await svc.write(functools.partial(_record, notification_id=notification_id, attempt=attempt, delivery=d,
                                          now=now))
    error = "; ".join(errors) or None
    status = "sent" if not errors else ("failed" if attempt >= max_attempts else "pending")
    now = svc.clock.now()
    await svc.write(lambda conn: outbox.finish_round(conn, notification_id, status=status, attempt=attempt,
                                                     now=now, error=error))
    if errors:
        raise DeliveryFailed(error)
    return f"sent via {', '.join(c for c in cfg.channels if c not in done) or 'earlier rounds'}"


@task("ashjobs.notify.deliver", queue="notifications", max_attempts=10, context=True, backoff=backoff,
      timeout=300.0)
async def deliver(ctx: JobContext, notification_id: int) -> str:
    if ctx.services is None:
        raise RuntimeError("ashjobs.notify.deliver runs on the scheduler (it needs the database)")
    return await deliver_notification(ctx.services, int(notification_id), attempt=ctx.attempt,
                                      max_attempts=ctx.max_attempts)
