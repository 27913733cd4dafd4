"""The pruner: finished jobs older than `[store] prune_after` are deleted in batches (their attempt history
stays, so trace summaries and `jobs show` of a pruned id's attempts keep working)."""

from __future__ import annotations

import asyncio

from ashjobs.services import Services
from ashjobs.store import jobs as sql

EVERY = 60.0  # seconds between passes
BATCH = 5_000  # rows per transaction: short enough never to hold the writer up for long


class Pruner:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.after = svc.cfg.store.prune_after
        self.deleted = 0

    async def run(self) -> None:
        while True:
            await self.prune_once()
            self.svc.beat("pruner")
            await asyncio.sleep(EVERY)

    async def prune_once(self) -> int:
        before = self.svc.clock.now() - self.after
        total = 0
        while True:
            n = await self.svc.write(lambda conn: sql.prune(conn, before, BATCH))
            total += n
            if n < BATCH:
                break
            if total % (BATCH * 20) == 0:
                self.svc.log.info("pruning: %d finished jobs deleted so far", total)
            await asyncio.sleep(0)  # let other writes in between batches
        if total:
            self.deleted += total
            self.svc.stats["jobs_pruned"] += total
            self.svc.log.info("pruned %d finished job(s) older than %gs", total, self.after)
        return total
