"""The cron loop: a daemon component (scheduler role) that fires each cron slot exactly once.

It sleeps until the next slot of any entry, then records the due slots and inserts their jobs through the
daemon's writer, one transaction per tick (`store.cron.fire`: slot row + job, refused if the slot is already
recorded). Decisions (`due`) are pure over the entries, the per-entry cursors and the time; tests drive
`tick(now)` with a FakeClock.

Cursors: every slot at or before an entry's cursor is dealt with. At start the cursor is the entry's newest
recorded slot (or the start time for an entry never fired), so slots missed while the daemon was down go
through the entry's `missed` policy. A wall clock stepped back leaves the cursor ahead of `now`: nothing
fires until time passes it again, and the slot rows refuse any repeat anyway.

Stats (svc.stats): cron_fired, cron_late (fired by catch-up), cron_dropped (ticks where a policy dropped
missed slots), cron_refused (slot already recorded elsewhere), cron_errors, and cron_lag_ms: the lag of the
newest fire, slot time → its transaction, in milliseconds.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ashjobs import cron
from ashjobs.clock import iso
from ashjobs.cron import CronEntry

if TYPE_CHECKING:
    from ashjobs.services import Services

MAX_SLEEP = 1.0  # re-read the wall clock at least this often: it may be stepped while we sleep
RETRY_AFTER = 1.0  # after a failed write
PRUNE_EVERY = 3600.0
ACTOR = "system:scheduler"


@dataclass(frozen=True)
class Fire:
    entry: CronEntry
    slot: float
    late: bool = False


def new_job(entry: CronEntry, slot: float, late: bool = False) -> Any:
    from ashjobs.queue import Unique
    from ashjobs.store.jobs import NewJob

    meta = {**entry.meta, "cron": entry.name, "slot": iso(slot)}
    if late:
        meta["late"] = True
    return NewJob(task=entry.task, args=dict(entry.args), queue=entry.queue, priority=entry.priority,
                  max_attempts=entry.max_attempts, partition=entry.partition, domain=entry.domain, meta=meta,
                  unique=Unique(period=entry.unique_for) if entry.unique_for else None, actor=ACTOR)


def record(conn: sqlite3.Connection, fires: list[Fire], now: float) -> list[tuple[str, float, int | None]]:
    """Record each slot and insert its job (in the caller's transaction). job id None: already recorded."""
    from ashjobs.store import cron as cron_sql

    return [(f.entry.name, f.slot, cron_sql.fire(conn, f.entry.name, f.slot, new_job(f.entry, f.slot, f.late),
                                                  now, late=f.late)) for f in fires]


class CronLoop:
    def __init__(self, svc: Services, entries: list[CronEntry] | None = None) -> None:
        self.svc = svc
        self.entries = cron.entries(svc.cfg) if entries is None else entries
        self.started: float | None = None
        self.cursor: dict[str, float] = {}
        self.next_at: dict[str, float] = {}
        self._reboot: list[CronEntry] = []
        self._pruned_at = -math.inf

    # -------------------------------------------------------------------- decisions

    def start(self, now: float, last: dict[str, float]) -> None:
        """Begin a run at `now`, given each entry's newest recorded slot."""
        self.started = now
        self.cursor = {e.name: last.get(e.name, now) for e in self.entries}
        self._reboot = [e for e in self.entries if cron.is_reboot(e) and not e.paused]
        self.next_at = {e.name: self._next(e) for e in self.entries}

    def _next(self, e: CronEntry) -> float:
        return math.inf if e.paused else cron.next_fire(e, self.cursor[e.name])

    def due(self, now: float) -> tuple[list[Fire], int]:
        """The slots to fire at `now` (without moving any cursor), and how many entries dropped missed slots."""
        fires = [Fire(e, self.started or now) for e in self._reboot]
        dropped = 0
        for e in self.entries:
            if e.paused or self.next_at[e.name] > now:
                continue
            slots, some_dropped = cron.plan(e, self.cursor[e.name], now)
            dropped += some_dropped
            fires.extend(Fire(e, slot, late) for slot, late in slots)
        return fires, dropped

    def advance(self, now: float) -> None:
        """Everything up to `now` is dealt with."""
        self._reboot = []
        for e in self.entries:
            if self.next_at[e.name] <= now:
                self.cursor[e.name] = max(self.cursor[e.name], now)
                self.next_at[e.name] = self._next(e)

    def next_wake(self) -> float:
        return min(self.next_at.values(), default=math.inf)

    # -------------------------------------------------------------------- effects

    async def tick(self, now: float | None = None) -> list[tuple[str, float, int | None]]:
        """Fire what is due at `now` (default: the clock). Returns (entry, slot, job id or None if the slot
        was already recorded) for each slot fired."""
        from ashjobs.store import cron as cron_sql

        svc = self.svc
        if now is None:
            now = svc.clock.now()
        if self.started is None:
            self.start(now, cron_sql.last_slots(svc.store.conn))
        fires, dropped = self.due(now)
        prune_before = None
        if now - self._pruned_at >= PRUNE_EVERY:
            prune_before = now - svc.cfg.store.prune_after
        if not fires and prune_before is None:
            return []

        def write(conn: sqlite3.Connection) -> tuple[list[tuple[str, float, int | None]], float]:
            at = svc.clock.now()
            out = record(conn, fires, at)
            if prune_before is not None:
                cron_sql.prune(conn, prune_before)
            return out, at

        done, at = await svc.write(write)
        self.advance(now)
        if prune_before is not None:
            self._pruned_at = now
        s = svc.stats
        for (name, slot, job_id), f in zip(done, fires, strict=True):
            if job_id is None:
                s["cron_refused"] += 1
                continue
            s["cron_fired"] += 1
            s["cron_late"] += f.late
            if not f.late:
                s["cron_lag_ms"] = max(0, round((at - slot) * 1000))
            svc.log.debug("cron %s: slot %s → job %s", name, iso(slot), job_id)
        s["cron_dropped"] += dropped
        if dropped:
            svc.log.info("cron: missed slots dropped by the 'missed' policy (daemon down or clock jumped)")
        if fires:
            svc.wake()
        return done

    async def run(self) -> None:
        svc = self.svc
        names = ", ".join(e.name for e in self.entries) or "none"
        svc.log.info("cron: %d entries (%s)", len(self.entries), names)
        while not svc.stopping.is_set():  # a stopping daemon enqueues nothing new
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                svc.stats["cron_errors"] += 1
                svc.log.exception("cron: tick failed; retrying")
                svc.beat("cron")
                await asyncio.sleep(RETRY_AFTER)
                continue
            svc.beat("cron")
            delay = self.next_wake() - svc.clock.now()
            await asyncio.sleep(min(max(delay, 0.0), MAX_SLEEP))


def describe(conn: sqlite3.Connection, entries: list[CronEntry], now: float) -> dict[str, dict[str, Any]]:
    """What `triggers list` shows per entry name: schedule, next fire, last fire and its outcome."""
    from ashjobs.store import cron as cron_sql

    last = cron_sql.last_fires(conn)
    out = {}
    for e in entries:
        nxt = None if e.paused else cron.next_fire(e, now)
        lf = last.get(e.name)
        out[e.name] = {
            "schedule": e.schedule or (f"every {e.every:g}s" if e.every else ""), "timezone": e.timezone,
            "paused": e.paused, "next_fire": iso(nxt) if nxt is not None and nxt != math.inf else None,
            "last_fire": iso(lf.slot) if lf else None, "last_fired_at": iso(lf.fired_at) if lf else None,
            "last_job_id": lf.job_id if lf else None, "last_outcome": lf.outcome if lf else None,
        }
    return out
