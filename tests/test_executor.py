"""The local executor in-process against a real SQLite file: outcomes, timeouts, cancel, drain, limits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from ashjobs import config, tasks
from ashjobs.clock import SYSTEM
from ashjobs.executor import LocalExecutor
from ashjobs.services import Services
from ashjobs.store import Store, Writer
from ashjobs.store import jobs as sql

gate = threading.Event()
order: list[int] = []


@tasks.task("test.fail_then_ok", max_attempts=3, backoff=lambda attempt: 0.0)
async def fail_then_ok(key: str) -> None:
    order.append(1)
    if order.count(1) < 2:
        raise RuntimeError("first try fails")


@tasks.task("test.sync_blocking")
def sync_blocking() -> str:
    gate.wait(5)
    return "ok"


@tasks.task("test.snooze")
async def snooze() -> None:
    raise tasks.Snooze(3600)


@tasks.task("test.discard", max_attempts=5)
async def discard() -> None:
    raise tasks.Discard("bad input, retrying cannot help")


@tasks.task("test.cancel_me")
async def cancel_me() -> None:
    raise tasks.Cancel("trigger_no_longer_applies")


@tasks.task("test.record", context=True)
async def record(ctx: tasks.JobContext, n: int) -> None:
    order.append(n)


@tasks.task("test.hang", timeout=0.2)
async def hang() -> None:
    await asyncio.sleep(60)


class Harness:
    def __init__(self, path: Path, queues: dict[str, int] | None = None) -> None:
        self.cfg = config.from_dict({"node": {"name": "n1", "data_dir": str(path)},
                                     "queues": queues or {"default": 10}})
        self.store = Store(self.cfg.db_path)
        self.writer = Writer(self.store)
        self.svc = Services(cfg=self.cfg, store=self.store, writer=self.writer, clock=SYSTEM, node="n1",
                            log=logging.getLogger("test"))
        self.executor = LocalExecutor(self.svc)
        self.runner: asyncio.Task[None] | None = None

    def insert(self, task: str, args: dict[str, Any] | None = None, **kw: Any) -> int:
        with self.store.tx() as conn:
            job_id = sql.insert(conn, sql.NewJob(task, args or {}, **kw), SYSTEM.now())[0]
        self.svc.wake()
        return job_id

    def job(self, job_id: int) -> sql.Job:
        job = sql.get(self.store.conn, job_id)
        assert job is not None
        return job

    async def until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "condition not reached"
            await asyncio.sleep(0.01)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_failure_then_success_records_both_attempts(tmp_path: Path) -> None:
    async def main() -> None:
        async with _harness(tmp_path) as h:
            job_id = h.insert("test.fail_then_ok", {"key": "a"}, max_attempts=3)
            await h.until(lambda: h.job(job_id).state == "completed")
            outcomes = [a["outcome"] for a in sql.attempts(h.store.conn, job_id)]
            assert outcomes == ["failure", "success"]
            assert h.job(job_id).errors[0]["error"] == "RuntimeError: first try fails"

    run(main())


@contextlib.asynccontextmanager
async def _harness(tmp_path: Path, queues: dict[str, int] | None = None) -> AsyncIterator[Harness]:
    order.clear()
    gate.clear()
    h = Harness(tmp_path, queues)
    h.runner = asyncio.create_task(h.executor.run())
    try:
        yield h
    finally:
        gate.set()
        h.runner.cancel()
        await asyncio.gather(h.runner, return_exceptions=True)
        h.writer.close()
        h.store.close()


def test_timeout_stops_the_task_and_records_timeout(tmp_path: Path) -> None:
    async def main() -> None:
        async with _harness(tmp_path) as h:
            job_id = h.insert("test.hang", max_attempts=1)
            await h.until(lambda: h.job(job_id).state == "discarded")
            (attempt,) = sql.attempts(h.store.conn, job_id)
            assert attempt["outcome"] == "timeout" and "timed out after 0.2s" in attempt["error"]

    run(main())


def test_command_nonzero_exit_fails_with_stderr_tail_and_timeout_kills(tmp_path: Path) -> None:
    async def main() -> None:
        async with _harness(tmp_path) as h:
            bad = h.insert("command", {"argv": ["sh", "-c", "echo oops >&2; exit 4"]}, max_attempts=1)
            slow = h.insert("command", {"argv": ["sleep", "30"], "timeout": "300ms"}, max_attempts=1)
            await h.until(lambda: h.job(bad).state == "discarded" and h.job(slow).state == "discarded")
            assert "exit 4: oops" in sql.attempts(h.store.conn, bad)[0]["error"]
            assert "timed out" in sql.attempts(h.store.conn, slow)[0]["error"]

    run(main())


def test_snooze_discard_and_cancel_signals(tmp_path: Path) -> None:
    async def main() -> None:
        async with _harness(tmp_path) as h:
            s = h.insert("test.snooze")
            d = h.insert("test.discard", max_attempts=5)
            c = h.insert("test.cancel_me")
            await h.until(lambda: h.job(s).state == "scheduled" and h.job(d).state == "discarded"
                          and h.job(c).state == "cancelled")
            assert h.job(s).attempt == 0
            assert h.job(d).attempt == 1
            assert sql.attempts(h.store.conn, c)[0]["error"] == "trigger_no_longer_applies"

    run(main())


def test_unknown_task_in_table_is_discarded_not_retried_forever(tmp_path: Path) -> None:
    async def main() -> None:
        async with _harness(tmp_path) as h:
            job_id = h.insert("no.such.task", max_attempts=20)
            await h.until(lambda: h.job(job_id).state == "discarded")
            assert h.job(job_id).attempt == 1

    run(main())


def test_cancel_from_another_connection_stops_an_executing_sync_job(tmp_path: Path) -> None:
    async def main() -> None:
        async with _harness(tmp_path) as h:
            job_id = h.insert("test.sync_blocking")
            await h.until(lambda: h.job(job_id).state == "executing")
            other = Store(h.cfg.db_path)
            with other.tx() as conn:
                sql.cancel(conn, job_id, SYSTEM.now())
            other.close()
            h.executor.wake(external=True)
            await h.until(lambda: job_id not in h.executor.running)
            gate.set()
            await asyncio.sleep(0.1)
            assert h.job(job_id).state == "cancelled"
            assert [a["outcome"] for a in sql.attempts(h.store.conn, job_id)] == ["cancelled"]

    run(main())


def test_queue_limit_and_priority_order(tmp_path: Path) -> None:
    async def main() -> None:
        async with _harness(tmp_path, {"default": 1}) as h:
            with h.store.tx() as conn:  # insert all before the executor can claim any
                now = SYSTEM.now()
                for n, prio in ((1, 5), (2, 0), (3, 9), (4, 0)):
                    sql.insert(conn, sql.NewJob("test.record", {"n": n}, priority=prio), now)
            h.svc.wake()
            await h.until(lambda: len(order) == 4)
            assert order == [2, 4, 1, 3]

    run(main())


def test_paused_queue_is_not_claimed_until_resumed(tmp_path: Path) -> None:
    async def main() -> None:
        async with _harness(tmp_path) as h:
            with h.store.tx() as conn:
                sql.set_paused(conn, "default", True, SYSTEM.now())
            job_id = h.insert("noop")
            await asyncio.sleep(0.3)
            assert h.job(job_id).state == "available"
            with h.store.tx() as conn:
                sql.set_paused(conn, "default", False, SYSTEM.now())
            h.svc.wake()
            await h.until(lambda: h.job(job_id).state == "completed")

    run(main())


def test_drain_hands_back_running_jobs_without_burning_attempts(tmp_path: Path) -> None:
    async def main() -> None:
        async with _harness(tmp_path) as h:
            job_id = h.insert("sleep", {"seconds": 30})
            await h.until(lambda: h.job(job_id).state == "executing")
            await h.executor.drain(0.2)
            job = h.job(job_id)
            assert (job.state, job.attempt, job.lease_token) == ("available", 0, None)

    run(main())


@tasks.task("test.fail_once_slow_retry", backoff=lambda attempt: 0.5)
async def fail_once_slow_retry(key: str) -> None:
    order.append(7)
    if order.count(7) < 2:
        raise RuntimeError("first try fails")


def test_waiting_for_a_retry_does_not_spin(tmp_path: Path) -> None:
    async def main() -> None:
        async with _harness(tmp_path) as h:
            job_id = h.insert("test.fail_once_slow_retry", {"key": "b"}, max_attempts=2)
            await h.until(lambda: h.job(job_id).state == "retryable")
            turns = h.executor.turns
            await h.until(lambda: h.job(job_id).state == "completed", timeout=5)
            # Half a second of waiting for the retry: a handful of wake-ups, not a busy loop.
            assert h.executor.turns - turns < 50

    run(main())
