"""The task registry: `@ashjobs.task("name", ...)` registers a sync or async function.

A task is called with its job's args as keyword arguments. A task declared with `context=True` also gets a
`JobContext` first (job id, attempt, actor, and the node's services, for tasks that need the database).
A task ends its attempt by returning (success) or raising: `Snooze(seconds)` runs it again later without
burning an attempt, `Cancel(reason)` ends the job `cancelled`, `Discard(reason)` ends it `discarded`, any
other exception is a failure (retried with backoff until max_attempts).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ashjobs.config import parse_duration
from ashjobs.errors import UnknownTask, UsageError
from ashjobs.queue import DEFAULT_MAX_ATTEMPTS, Unique, default_backoff

F = TypeVar("F", bound=Callable[..., Any])


class Snooze(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"snoozed for {seconds}s")
        self.seconds = float(seconds)


class Cancel(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Discard(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Task:
    name: str
    fn: Callable[..., Any]
    queue: str = "default"
    priority: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout: float | None = None
    backoff: Callable[[int], float] | None = None
    unique: Unique | None = None
    context: bool = False
    routed: bool = False  # a poll check: runs on a poller (partition defaults to "default")
    # Called by the scheduler inside the transaction that records each attempt's outcome.
    on_finish: Callable[[Any, Any], None] | None = None
    is_async: bool = field(init=False)

    def __post_init__(self) -> None:
        self.is_async = inspect.iscoroutinefunction(self.fn)


@dataclass
class JobContext:
    job_id: int
    attempt: int
    max_attempts: int
    task: str
    queue: str
    node: str
    actor: str | None
    meta: dict[str, Any]
    services: Any = None  # the daemon's services (store writer, config) on the scheduler; None on pollers
    cancelled: threading.Event = field(default_factory=threading.Event)


_REGISTRY: dict[str, Task] = {}
_OVERRIDES: dict[str, Task] = {}  # the registry as the loaded config's [tasks.NAME] tables change it
_lock = threading.Lock()
_loaded_builtins = False
_loaded_entry_points = False


def task(name: str, *, queue: str = "default", priority: int = 0, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
         timeout: str | float | None = None, backoff: Callable[[int], float] | None = None,
         unique: Unique | None = None, context: bool = False, routed: bool = False,
         on_finish: Callable[[Any, Any], None] | None = None) -> Callable[[F], F]:
    """Register `fn` as task `name`. `timeout` is seconds or a duration string like "30s"."""
    t = parse_duration(timeout) if isinstance(timeout, str) else timeout

    def deco(fn: F) -> F:
        register(Task(name, fn, queue=queue, priority=priority, max_attempts=max_attempts, timeout=t,
                      backoff=backoff, unique=unique, context=context, routed=routed, on_finish=on_finish))
        return fn

    return deco


def register(t: Task) -> None:
    with _lock:
        _REGISTRY[t.name] = t


def _ensure_builtins() -> None:
    global _loaded_builtins
    if not _loaded_builtins:
        _loaded_builtins = True
        importlib.import_module("ashjobs.tasks.builtin")
        for mod in ("ashjobs.tasks.checks", "ashjobs.notify", "ashjobs.apps.trace_summaries", "ashjobs.triggers"):
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as e:
                if e.name != mod:
                    raise


def load_modules(modules: list[str], *, entry_points: bool = True, options: dict[str, Any] | None = None) -> None:
    """Import user task modules ([app] modules) and the `ashjobs.tasks` entry-point group, then apply the
    config's [tasks.NAME] overrides."""
    global _loaded_entry_points
    _ensure_builtins()
    for mod in modules:
        try:
            importlib.import_module(mod)
        except ImportError as e:
            raise UsageError(f"[app] modules: cannot import {mod!r}: {e}") from None
    if entry_points and not _loaded_entry_points:
        _loaded_entry_points = True
        from importlib.metadata import entry_points as eps

        for ep in eps(group="ashjobs.tasks"):
            ep.load()
    overridden: dict[str, Task] = {}
    for name, opts in (options or {}).items():
        if name not in _REGISTRY:
            raise UsageError(f"[tasks.{name}]: unknown task (known tasks: {', '.join(sorted(_REGISTRY))})")
        changes = {a: getattr(opts, a) for a in ("queue", "priority", "max_attempts", "timeout")
                   if getattr(opts, a) is not None}
        if opts.backoff_scale is not None:
            scale = opts.backoff_scale
            changes["backoff"] = lambda attempt, _s=scale: default_backoff(attempt) * _s
        overridden[name] = dataclasses.replace(_REGISTRY[name], **changes)
    _OVERRIDES.clear()
    _OVERRIDES.update(overridden)


def load(cfg: Any) -> None:
    """Everything a config asks for: its [app] modules, entry points, and [tasks.NAME] overrides."""
    try:
        load_modules(cfg.app.modules, options=cfg.tasks)
    except UsageError as e:
        raise UsageError(f"{cfg.path or '<defaults>'}: {e}") from None


def get(name: str) -> Task:
    _ensure_builtins()
    try:
        return _OVERRIDES.get(name) or _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise UnknownTask(f"unknown task {name!r} (known tasks: {known})") from None


def names() -> list[str]:
    _ensure_builtins()
    return sorted(_REGISTRY)


class _FinishHooks:
    """The `on_finish` argument for store.jobs.finish/rescue: dispatch to each finished job's task hook."""

    @property
    def tasks(self) -> set[str]:
        merged = {**_REGISTRY, **_OVERRIDES}
        return {name for name, t in merged.items() if t.on_finish is not None}

    def __call__(self, conn: Any, done: Any) -> None:
        t = _OVERRIDES.get(done.task) or _REGISTRY.get(done.task)
        if t is None or t.on_finish is None:
            return
        # A hook is a side effect: its bug must not undo (or block forever) the attempt being recorded.
        conn.execute("SAVEPOINT finish_hook")
        try:
            t.on_finish(conn, done)
        except Exception:
            conn.execute("ROLLBACK TO finish_hook")
            import logging

            logging.getLogger("ashjobs.tasks").exception(
                "task %s: on_finish hook failed for job %s; the attempt is recorded anyway", done.task, done.job_id)
        conn.execute("RELEASE finish_hook")


run_finish_hooks = _FinishHooks()
