"""What the daemon hands to each of its components: config, store, the single writer, the clock.

A component is an object made by `factory(svc)` with `async run()` (runs until cancelled) and optionally
`async drain(grace: float)` (finish or hand back work on a clean stop). The daemon lists its components in
`ashjobs.daemon.COMPONENTS`.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ashjobs.clock import Clock

if TYPE_CHECKING:
    from ashjobs.config import Config
    from ashjobs.store import Store, Writer

T = TypeVar("T")


@dataclass
class Services:
    cfg: Config
    store: Store  # reads on the event-loop thread: keep them short
    writer: Writer  # every write of the daemon goes through here (group commit)
    clock: Clock
    node: str
    log: logging.Logger
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    # Counters any component may bump; metrics and status read them ("stale_results_refused", ...).
    stats: Counter[str] = field(default_factory=Counter)
    # Component name → monotonic time it last proved alive (for /healthz and the watchdog).
    alive: dict[str, float] = field(default_factory=dict)
    # Callbacks run when new work may be available (a local insert, a cross-process wake-up).
    _wakers: list[Callable[[], None]] = field(default_factory=list)
    # Shared objects components publish for each other (e.g. "registry", "executor").
    extras: dict[str, Any] = field(default_factory=dict)

    async def write(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """Run fn(conn) in the writer's next transaction and wait for its commit (durable unless told)."""
        return await asyncio.wrap_future(self.writer.submit(fn, durable=durable))

    def on_wake(self, cb: Callable[[], None]) -> None:
        self._wakers.append(cb)

    def wake(self) -> None:
        for cb in self._wakers:
            cb()

    def beat(self, component: str) -> None:
        self.alive[component] = self.clock.monotonic()
