"""The local executor: claims unrouted jobs from the SQLite table and runs them on this node.

One cycle = one writer transaction that records every result gathered since the last cycle, stages due
jobs, and claims work for every queue with free slots. While that commit is in flight, jobs keep
finishing, so under load each fsync covers many jobs (group commit); when idle a job's result commits at
once. Every job runs under a lease (owner, fencing token, expiry); results are fenced by the token, so a
job cancelled by another process or rescued meanwhile cannot be overwritten by its old runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ashjobs import logs, tasks
from ashjobs.services import Services
from ashjobs.store import jobs as sql

LEASE_TTL = 30.0  # local leases only matter to other processes' views and to restart rescue
RENEW_EVERY = LEASE_TTL / 3
CHECK_EVERY = 1.0  # how often running jobs are checked for cancellation by another process
MAX_IDLE_WAIT = 5.0  # a safety net only: wake-ups come from inserts and the wake socket
MAX_INFLIGHT = 2  # cycles in flight: one committing, one gathering (deeper adds latency, not throughput)
# Results wait this long (or for this many) to share one fsync, while claims commit without one: a claim
# lost to a power cut only means its job runs again, a result is made durable before it is forgotten.
FLUSH_AFTER = 0.005
FLUSH_AT = 256


@dataclass
class Running:
    job_id: int
    token: int
    queue: str
    task: str
    attempt: int
    started_at: float
    handle: asyncio.Task[None]
    ctx: tasks.JobContext | None = None


@dataclass
class Cycle:
    claimed: list[sqlite3.Row]
    refused: list[sql.Result]
    paused: set[str] | None
    next_due: float | None
    gone: list[int]  # running jobs no longer executing under our lease (cancelled elsewhere)
    looked: bool  # paused and next_due were read in this cycle


class LocalExecutor:
    def __init__(self, svc: Services, *, claim: bool = True) -> None:
        self.svc = svc
        self.node = svc.node
        self.limits = dict(svc.cfg.queues)
        self.running: dict[int, Running] = {}
        self.per_queue: Counter[str] = Counter()
        self.results: list[sql.Result] = []
        self.paused: set[str] = set()
        self.claiming = claim
        self.draining = False
        self.finished = 0
        self.turns = 0  # loop iterations: an idle executor must not spin
        self._wake = asyncio.Event()
        self._check_leases = True
        self._last_renew = 0.0
        self._last_check = 0.0
        self._next_due: float | None = None
        # Cycles overlap: while one commits, the next gathers results. Slots asked for by cycles in flight are
        # reserved so the concurrency limit holds; a queue whose claim came back short is "dry" until woken.
        self._inflight = 0
        self._reserved: Counter[str] = Counter()
        self._dry: set[str] = set()
        self._tick = True
        self._results_since = 0.0  # monotonic time of the oldest result not yet submitted
        self._maintain = True  # the next cycle re-reads paused queues and stages due jobs
        self._cycles: set[asyncio.Task[None]] = set()
        svc.on_wake(self.wake)
        svc.extras["executor"] = self

    def wake(self, *, external: bool = False) -> None:
        if external:
            self._check_leases = True
        self._dry.clear()
        self._maintain = True
        self._wake.set()

    async def run(self) -> None:
        while True:
            self.turns += 1
            self._wake.clear()
            if self._inflight < MAX_INFLIGHT:
                flush = self._results_due()
                if self._tick or flush or self._free():
                    self._submit(flush=flush or self._tick)
                    self._tick = False
            self.svc.beat("executor")
            await self._sleep()

    async def _sleep(self) -> None:
        if self._inflight >= MAX_INFLIGHT:
            await self._wake.wait()  # a cycle's completion always wakes us: timers can wait for it
            return
        timeout = MAX_IDLE_WAIT
        if self._next_due is not None:
            timeout = min(timeout, max(0.0, self._next_due - self.svc.clock.now()))
        if self.running:
            timeout = min(timeout, CHECK_EVERY)
        flush_in = (self._results_since + FLUSH_AFTER - time.monotonic()) if self.results else math.inf
        if flush_in <= 0:
            return  # waiting results are due: the loop flushes them now
        try:
            # Not asyncio.wait_for: on 3.11 it can swallow a cancel that races with the wake-up.
            async with asyncio.timeout(min(timeout, flush_in)):
                await self._wake.wait()
        except TimeoutError:
            if flush_in >= timeout:  # not just the flush timer: time-driven work is due
                self._tick = True  # stage due jobs, renew leases, check for cancellations
                self._dry.clear()

    def _free(self) -> dict[str, int]:
        if not self.claiming or self.draining:
            return {}
        free = {}
        for q, limit in self.limits.items():
            n = limit - self.per_queue[q] - self._reserved[q]
            if n > 0 and q not in self.paused and q not in self._dry:
                free[q] = n
        return free

    def _results_due(self) -> bool:
        if not self.results:
            return False
        return (len(self.results) >= FLUSH_AT or time.monotonic() - self._results_since >= FLUSH_AFTER
                or not self.claiming or self.draining)

    def _submit(self, *, flush: bool) -> None:
        results: list[sql.Result] = []
        if flush:
            results, self.results = self.results, []
        free = self._free()
        self._reserved.update(free)
        mono = time.monotonic()
        renew = [(r.job_id, r.token) for r in self.running.values()] if mono - self._last_renew > RENEW_EVERY else []
        check = ([(r.job_id, r.token) for r in self.running.values()]
                 if (self._check_leases or mono - self._last_check > CHECK_EVERY) else [])
        if renew:
            self._last_renew = mono
        if check:
            self._last_check, self._check_leases = mono, False
        # Staging due jobs and re-reading paused queues is needed after a wake-up, a tick, flushed results
        # (retries) or when a job comes due: not in every claim of a busy queue.
        maintain = (self._maintain or self._tick or bool(results)
                    or (self._next_due is not None and self._next_due <= self.svc.clock.now()))
        self._maintain = False
        self._inflight += 1
        task = asyncio.create_task(self._cycle(results, free, renew, check, maintain))
        self._cycles.add(task)
        task.add_done_callback(self._cycles.discard)

    async def _cycle(self, results: list[sql.Result], free: dict[str, int], renew: list[tuple[int, int]],
                     check: list[tuple[int, int]], maintain: bool) -> None:
        now = self.svc.clock.now()

        def work(conn: sqlite3.Connection) -> Cycle:
            refused = sql.finish(conn, results, now, tasks.run_finish_hooks) if results else []
            if renew:
                sql.renew(conn, renew, now + LEASE_TTL)
            gone = []
            if check:
                states = sql.states_of(conn, [job_id for job_id, _ in check])
                gone = [job_id for job_id, token in check if states.get(job_id) != ("executing", token)]
            if maintain:
                sql.stage(conn, now)
            paused = sql.paused_queues(conn) if maintain else None
            claimed: list[sqlite3.Row] = []
            for queue, n in free.items():
                if queue not in (self.paused if paused is None else paused):
                    claimed.extend(sql.claim(conn, queue, n, self.node, now, LEASE_TTL))
            # A cycle that did not look leaves paused/next_due as they are (a concurrent one may have looked).
            return Cycle(claimed, refused, paused, sql.next_due(conn) if maintain else None, gone, maintain)

        try:
            cycle = await self.svc.write(work, durable=bool(results))
        except sqlite3.Error as e:  # e.g. disk full: keep the results, try again shortly
            self.svc.log.error("store write failed, retrying: %s", e)
            if results and not self.results:
                self._results_since = time.monotonic()
            self.results[:0] = results
            await asyncio.sleep(0.5)
            return
        finally:
            self._inflight -= 1
            self._reserved.subtract(free)
            self._wake.set()
        self.finished += len(results)
        if cycle.looked:
            self.paused = cycle.paused or set()
            self._next_due = cycle.next_due
        if results:  # flushed results may have made jobs available again (immediate retries)
            self._dry.clear()
        got = Counter(row["queue"] for row in cycle.claimed)
        self._dry.update(q for q, n in free.items() if got[q] < n and not results)
        for r in cycle.refused:
            self.svc.stats["stale_results_refused"] += 1
            self.svc.log.warning("result of job %s refused: its lease %s is no longer current", r.job_id, r.token)
        for job_id in cycle.gone:
            running = self.running.get(job_id)
            if running is not None:
                self.svc.log.info("job %s was cancelled elsewhere; stopping it", job_id)
                running.handle.cancel()
        for row in cycle.claimed:
            self._start(row)

    def _start(self, row: sqlite3.Row) -> None:
        job_id, token, queue = row["id"], row["lease_token"], row["queue"]
        started = self.svc.clock.now()
        handle = asyncio.create_task(self._execute(row, started), name=f"job-{job_id}")
        self.running[job_id] = Running(job_id, token, queue, row["task"], row["attempt"], started, handle)
        self.per_queue[queue] += 1

    async def _execute(self, row: sqlite3.Row, started: float) -> None:
        job_id, token = row["id"], row["lease_token"]
        result = sql.Result(job_id, token, "success", self.node, started, 0.0)
        try:
            await run_task(row, self.node, self.svc, result)
        except asyncio.CancelledError:
            if self.draining:  # handed back by the drain: no result, the job is requeued
                self._done(job_id, None)
                return
            result.outcome, result.error = "cancelled", "cancelled by request"
        self._done(job_id, result)

    def _done(self, job_id: int, result: sql.Result | None) -> None:
        running = self.running.pop(job_id, None)
        if running is not None:
            self.per_queue[running.queue] -= 1
        if result is not None:
            result.duration = max(0.0, self.svc.clock.now() - result.started_at)
            if not self.results:
                self._results_since = time.monotonic()
            self.results.append(result)
            _log_outcome(self.svc, result, running)
        # Wake the loop only when it has something new to decide: the first waiting result arms the flush
        # timer, a full batch flushes, and an idle loop may claim the freed slot. With a cycle in flight,
        # its completion wakes the loop anyway (one wake-up per job would cost more than the job).
        if len(self.results) in (1, FLUSH_AT) or self._inflight == 0 or result is None:
            self._wake.set()

    async def drain(self, grace: float) -> None:
        """Stop claiming; let running jobs finish within `grace`; hand the rest back without burning attempts."""
        self.claiming = False
        if self._cycles:  # a cycle in flight may still claim: its jobs must be running (or handed back) too
            await asyncio.wait(list(self._cycles))
        deadline = time.monotonic() + grace
        while self.running and time.monotonic() < deadline:
            await asyncio.wait([r.handle for r in self.running.values()], timeout=deadline - time.monotonic())
        self.draining = True
        leftover = [(r.job_id, r.token) for r in self.running.values()]
        for r in list(self.running.values()):
            r.handle.cancel()
        handles = [r.handle for r in self.running.values()]
        if handles:
            await asyncio.wait(handles, timeout=2.0)
        if self._cycles:
            await asyncio.wait(list(self._cycles))
        results, self.results = self.results, []
        now = self.svc.clock.now()

        def work(conn: sqlite3.Connection) -> int:
            sql.finish(conn, results, now, tasks.run_finish_hooks)
            return sql.requeue(conn, leftover)

        handed_back = await self.svc.write(work)
        if handed_back:
            self.svc.log.info("drain: %d running job(s) handed back as available", handed_back)


async def run_task(row: Any, node: str, services: Any, result: sql.Result) -> None:
    """Run one attempt of a job and fill in `result`. Shared by the local executor and pollers."""
    args = row["args"]
    if isinstance(args, str):
        import json

        args = json.loads(args)
    try:
        task = tasks.get(row["task"])
    except tasks.UnknownTask as e:
        result.outcome, result.error, result.discard = "failure", str(e), True
        return
    timeout = row["timeout"] if row["timeout"] is not None else task.timeout
    call_args: tuple[Any, ...] = ()
    if task.context:
        meta = row["meta"]
        call_args = (tasks.JobContext(row["id"], row["attempt"], row["max_attempts"], row["task"], row["queue"],
                                      node, row["actor"], meta if isinstance(meta, dict) else _loads(meta), services),)
    deadline: asyncio.Timeout | None = None
    try:
        if timeout is None:  # the common case skips the timeout machinery
            await _call(task, call_args, args)
        else:
            async with asyncio.timeout(timeout) as deadline:
                await _call(task, call_args, args)
    except tasks.Snooze as s:
        result.outcome, result.snooze = None, s.seconds
    except tasks.Cancel as c:
        result.outcome, result.error = "cancelled", c.reason
    except tasks.Discard as d:
        result.outcome, result.error, result.discard = "failure", d.reason, True
    except TimeoutError as e:
        if deadline is not None and deadline.expired():
            result.outcome, result.error = "timeout", f"timed out after {timeout:g}s"
        else:
            result.outcome, result.error = "failure", _describe(e)
    except asyncio.CancelledError:
        raise
    except Exception as e:
        result.outcome, result.error = "failure", _describe(e)
    if result.outcome == "failure" and task.backoff is not None and not result.discard:
        result.backoff = task.backoff(row["attempt"])


async def _call(task: tasks.Task, call_args: tuple[Any, ...], args: dict[str, Any]) -> None:
    if task.is_async:
        await task.fn(*call_args, **args)
    else:
        await asyncio.to_thread(task.fn, *call_args, **args)


def _loads(text: str) -> Any:
    import json

    return json.loads(text)


def _describe(e: BaseException) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _log_outcome(svc: Services, r: sql.Result, running: Running | None) -> None:
    logs.job_outcome(svc.log, r, running.task if running else "?", running.attempt if running else 0)


def run_until_done(cfg: Any, job_ids: list[int], timeout: float) -> dict[int, str]:
    """Run the given jobs (and whatever else is due on the local queues) in the foreground with the same
    executor the daemon uses, until all of them are finished or `timeout` passes. Returns final states."""
    import logging

    from ashjobs.clock import SYSTEM
    from ashjobs.queue import FINISHED
    from ashjobs.store import Store, Writer

    store = Store.from_config(cfg)
    tasks.load(cfg)
    writer = Writer(store)

    async def main() -> dict[int, str]:
        svc = Services(cfg=cfg, store=store, writer=writer, clock=SYSTEM, node=cfg.node.name,
                       log=logging.getLogger("ashjobs"))
        ex = LocalExecutor(svc)
        runner = asyncio.create_task(ex.run())
        deadline = time.monotonic() + timeout
        states: dict[int, str] = {}
        try:
            while time.monotonic() < deadline:
                states = {k: v[0] for k, v in sql.states_of(store.conn, job_ids).items()}
                if all(states.get(i) in FINISHED for i in job_ids):
                    break
                await asyncio.sleep(0.05)
        finally:
            await ex.drain(5.0)
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        return {k: v[0] for k, v in sql.states_of(store.conn, job_ids).items()}

    try:
        return asyncio.run(main())
    finally:
        writer.close()
        store.close()
