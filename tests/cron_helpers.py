"""Shared by the cron tests: a real Store + Writer on a temp file behind a Services, and a driver that
moves a FakeClock from slot to slot the way `CronLoop.run` sleeps."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from ashjobs import config
from ashjobs.clock import FakeClock
from ashjobs.cron_loop import CronLoop
from ashjobs.services import Services
from ashjobs.store import Store, Writer


def at(text: str, zone: str) -> float:
    """'2026-03-29T03:00' in `zone` (fold=0) → Unix seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


def local(ts: float, zone: str) -> str:
    return datetime.fromtimestamp(ts, ZoneInfo(zone)).isoformat()


# Cron tests look at their own entries only: switch off the built-in apps' entries.
NO_BUILTINS: dict[str, Any] = {"apps": {"alerts": {"enabled": False}, "packages": {"enabled": False},
                                        "trace_summaries": {"enabled": False}}}


class Node:
    """One daemon's worth of cron: its own Store connection and Writer on a shared SQLite file."""

    def __init__(self, db: Path, clock: FakeClock, entries: list[dict[str, Any]]) -> None:
        cfg = config.from_dict({"node": {"data_dir": str(db.parent)}, "cron": entries, **NO_BUILTINS})
        self.store = Store(db)
        self.writer = Writer(self.store)
        self.svc = Services(cfg=cfg, store=self.store, writer=self.writer, clock=clock, node="n1",
                            log=logging.getLogger("test.cron"))
        self.loop = CronLoop(self.svc)

    def close(self) -> None:
        self.writer.close()
        self.store.close()


async def drive(loop: CronLoop, clock: FakeClock, until: float, *, extra: float | None = None) -> None:
    """Tick at every wake-up until `until`; with `extra`, also tick every `extra` seconds in between."""
    await loop.tick(clock.now())
    while clock.now() < until:
        nxt = min(loop.next_wake(), until)
        if extra is not None:
            nxt = min(nxt, clock.now() + extra)
        clock.set(max(nxt, clock.now()))
        await loop.tick(clock.now())


def cron_jobs(store: Store, name: str) -> list[tuple[str, int]]:
    """(slot ISO, job id) of every job the cron entry `name` enqueued, by slot."""
    rows = store.conn.execute("SELECT id, meta FROM jobs ORDER BY id").fetchall()
    out = [(json.loads(m)["slot"], i) for i, m in rows if json.loads(m).get("cron") == name]
    return sorted(out)
