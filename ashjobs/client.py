"""The Python API for other programs: open the store by config or data dir and enqueue jobs.

    with ashjobs.connect(data_dir="/var/lib/ashjobs") as client:
        r = client.enqueue("command", {"argv": ["true"]}, queue="default", unique_for="5m")
        print(r.id, r.state, r.conflict)
        client.enqueue_many([("noop", {}), ("sleep", {"seconds": 1})])

A running daemon on that data dir is woken after each commit, so it starts the job at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ashjobs import presence, tasks
from ashjobs.clock import SYSTEM, Clock
from ashjobs.config import Config, parse_duration
from ashjobs.config import load as load_config
from ashjobs.errors import UsageError
from ashjobs.queue import INCOMPLETE, MAX_PRIORITY, Unique
from ashjobs.store import Store
from ashjobs.store import jobs as sql


@dataclass(frozen=True)
class EnqueueResult:
    id: int
    state: str
    conflict: bool

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "conflict": self.conflict}


def _seconds(value: str | float | None, what: str) -> float | None:
    if value is None or isinstance(value, int | float):
        return value
    try:
        return parse_duration(value)
    except ValueError as e:
        raise UsageError(f"{what}: {e}") from None


def build_job(task_name: str, args: dict[str, Any] | None = None, *, queue: str | None = None,
              priority: int | None = None, max_attempts: int | None = None, scheduled_at: float | None = None,
              delay: str | float | None = None, unique_for: str | float | None = None,
              unique: Unique | None = None, partition: str | None = None, domain: str | None = None,
              meta: dict[str, Any] | None = None, actor: str | None = None, timeout: str | float | None = None,
              now: float) -> sql.NewJob:
    """Validate options against the task's registration and defaults; raise UsageError on bad input."""
    t = tasks.get(task_name)
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise UsageError(f"args: expected a JSON object, got {type(args).__name__}")
    prio = t.priority if priority is None else priority
    if not 0 <= prio <= MAX_PRIORITY:
        raise UsageError(f"priority: expected 0 (highest) .. {MAX_PRIORITY}, got {prio}")
    attempts = t.max_attempts if max_attempts is None else max_attempts
    if attempts < 1:
        raise UsageError(f"max_attempts: expected >= 1, got {attempts}")
    d = _seconds(delay, "in")
    if d is not None:
        scheduled_at = now + d
    period = _seconds(unique_for, "unique_for")
    if period is not None:
        if period <= 0:
            raise UsageError("unique_for: must be a positive duration")
        unique = Unique(period=period)
    for name, value in (("partition", partition), ("domain", domain)):
        if value is not None and (not value or value != value.strip()):
            raise UsageError(f"{name}: expected a non-empty name without surrounding spaces, got {value!r}")
    if partition is None and (t.routed or domain is not None):  # naming a domain routes the job too
        partition = "default"
    return sql.NewJob(task=task_name, args=args, queue=queue or t.queue, priority=prio, max_attempts=attempts,
                      scheduled_at=scheduled_at, unique=unique or t.unique, partition=partition, domain=domain,
                      meta=meta or {}, actor=actor, timeout=_seconds(timeout, "timeout") or t.timeout)


class Client:
    def __init__(self, cfg: Config, *, clock: Clock = SYSTEM) -> None:
        self.cfg = cfg
        self.clock = clock
        self.store = Store.from_config(cfg)
        self._data_dir = str(cfg.data_dir)
        tasks.load(cfg)

    def enqueue(self, task: str, args: dict[str, Any] | None = None, **options: Any) -> EnqueueResult:
        """Insert one job in its own durable transaction. Options: queue, priority, max_attempts, delay
        ("30s"), scheduled_at (Unix seconds or datetime), unique_for ("5m"), unique, partition, domain,
        meta, actor, timeout."""
        now = self.clock.now()
        new = self._build((task, args, options), now)
        with self.store.tx() as conn:
            result = EnqueueResult(*sql.insert(conn, new, now))
        presence.wake(self._data_dir)
        return result

    def enqueue_many(self, items: Iterable[tuple[str, dict[str, Any] | None] |
                                           tuple[str, dict[str, Any] | None, dict[str, Any]]]) -> list[EnqueueResult]:
        """Insert many jobs in one transaction: all or none."""
        now = self.clock.now()
        templates: dict[str, sql.NewJob] = {}
        new = [self._build(item, now, templates) for item in items]
        with self.store.tx() as conn:
            rows = sql.insert_many(conn, new, now)
        presence.wake(self._data_dir)
        return [EnqueueResult(*r) for r in rows]

    def _build(self, item: Sequence[Any], now: float, templates: dict[str, sql.NewJob] | None = None) -> sql.NewJob:
        task, args, *rest = item
        options = dict(rest[0]) if rest else {}
        if not options and templates is not None and isinstance(args, dict):
            # Bulk fast path: validate each task's defaults once, then copy them.
            t = templates.get(task) or templates.setdefault(task, build_job(task, {}, now=now))
            return sql.NewJob(task, args, t.queue, t.priority, t.max_attempts, None, t.unique, t.partition,
                              t.domain, {}, None, t.timeout)
        at = options.get("scheduled_at")
        if isinstance(at, datetime):
            options["scheduled_at"] = at.timestamp()
        return build_job(task, args, now=now, **options)

    def get(self, job_id: int) -> sql.Job | None:
        return sql.get(self.store.conn, job_id)

    def wait(self, job_ids: Sequence[int], timeout: float = 30.0) -> dict[int, str]:
        """Poll until the jobs are finished (completed, cancelled or discarded) or timeout; their states."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            states = {k: v[0] for k, v in sql.states_of(self.store.conn, list(job_ids)).items()}
            if all(s not in INCOMPLETE for s in states.values()) or time.monotonic() > deadline:
                return states
            time.sleep(0.05)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(config: str | Path | None = None, *, data_dir: str | Path | None = None,
            clock: Clock = SYSTEM) -> Client:
    """Open the store named by a config file and/or data dir (same lookup as the CLI)."""
    cfg = load_config(config, data_dir=str(data_dir) if data_dir else None)
    return Client(cfg, clock=clock)


def wake(data_dir: str | Path) -> bool:
    return presence.wake(data_dir)
