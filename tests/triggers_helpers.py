"""Shared by the trigger/alert/package tests: services over a real SQLite file with a fake clock, and the
real local executor run until the given jobs are finished."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from ashjobs import config
from ashjobs.clock import FakeClock, parse_iso
from ashjobs.executor import LocalExecutor
from ashjobs.queue import FINISHED
from ashjobs.services import Services
from ashjobs.store import Store, Writer
from ashjobs.store import jobs as sql

# A slot of "*/5 * * * *" (auto_escalate) and one of "0 * * * *" (expire_packages).
SLOT = parse_iso("2026-03-02T10:05:00Z")
HOUR_SLOT = parse_iso("2026-03-02T11:00:00Z")


def services(tmp_path: Any, raw: dict[str, Any] | None = None, *, start: float = SLOT) -> Services:
    raw = dict(raw or {})
    raw.setdefault("queues", {"default": 10, "alerts": 5, "onboarding": 5})
    cfg = config.from_dict(raw, data_dir=str(tmp_path))
    store = Store.from_config(cfg)
    return Services(cfg=cfg, store=store, writer=Writer(store), clock=FakeClock(start), node="test",
                    log=logging.getLogger("ashjobs.test"))


def close(svc: Services) -> None:
    svc.writer.close()
    svc.store.close()


def states(svc: Services, ids: list[int]) -> dict[int, str]:
    return {k: v[0] for k, v in sql.states_of(svc.store.conn, ids).items()}


def run_jobs(svc: Services, ids: list[int], timeout: float = 20.0) -> dict[int, str]:
    """Run the local executor (claiming every configured queue) until every job in `ids` is finished.
    Then stop claiming and wait for the cycles in flight and the jobs they started before draining, so no
    job claimed by a last cycle is left executing without a runner."""

    async def main() -> dict[int, str]:
        ex = LocalExecutor(svc)
        runner = asyncio.create_task(ex.run())
        try:
            async with asyncio.timeout(timeout):
                while not all(s in FINISHED for s in states(svc, ids).values()):
                    await asyncio.sleep(0.01)
                ex.claiming = False
                while ex._cycles or ex.running or ex.results:
                    ex.wake()
                    await asyncio.sleep(0.01)
        except TimeoutError:
            detail = {i: (sql.get(svc.store.conn, i), sql.attempts(svc.store.conn, i)) for i in ids}
            raise AssertionError(f"jobs not finished after {timeout}s: {detail}") from None
        finally:
            await ex.drain(2.0)
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        return states(svc, ids)

    return asyncio.run(main())


def tx_write(svc: Services) -> Any:
    """A `write` for run_scheduler that goes through the daemon's writer, as the scheduler task does."""
    return svc.writer.call


def attempts_errors(svc: Services, job_id: int) -> list[tuple[str, str | None]]:
    return [(a["outcome"], a["error"]) for a in sql.attempts(svc.store.conn, job_id)]
