"""The poller's half of the cluster: run the jobs a scheduler sends, under its leases.

Per scheduler (by node name, across reconnects) the poller keeps the jobs it runs and the results it has not
delivered yet. Every heartbeat lists the running leases (renewing them); the reply names the ones to stop.
A lease is only as good as the last heartbeat the scheduler answered: past lease_ttl without one, the work is
stopped, because the scheduler has given it to someone else by then. Finished results stay queued across a
cut and are sent after it heals (the scheduler refuses those whose lease moved on).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard

from ashjobs.cluster.rpc import RpcError

if TYPE_CHECKING:
    from ashjobs.cluster.rpc import Peer
    from ashjobs.services import Services

log = logging.getLogger("ashjobs.cluster.poller")

MAX_OUTBOX = 10_000  # undelivered results kept per scheduler
MAX_ERROR = 4000


@dataclass
class Running:
    job_id: int
    token: int
    received: float  # monotonic
    task: asyncio.Task[None] | None = None


@dataclass
class Upstream:
    """One scheduler this poller works for."""

    node: str
    ttl: float
    peer: Peer | None = None
    renewed_at: float = 0.0  # monotonic send time of the last heartbeat it answered
    running: dict[int, Running] = field(default_factory=dict)
    outbox: deque[dict[str, Any]] = field(default_factory=deque)
    kick: asyncio.Event = field(default_factory=asyncio.Event)  # results to send
    beat: asyncio.Event = field(default_factory=asyncio.Event)  # heartbeat now
    loops: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def live(self) -> bool:
        return self.peer is not None and not self.peer.closed.is_set()


def _batch(outbox: deque[dict[str, Any]], max_frame: int) -> list[dict[str, Any]]:
    """The head of the outbox, as much as fits in half a frame (at least one result): a backlog after a
    long cut, or long error texts, must not make one call too big to send, forever."""
    import msgpack

    out: list[dict[str, Any]] = []
    size = 0
    for item in outbox:
        size += len(msgpack.packb(item, use_bin_type=True))
        if out and size > max_frame // 2:
            break
        out.append(item)
    return out


def _sane_ttl(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0.1 <= value <= 86400


class Runner:
    def __init__(self, svc: Services, *, capacity: int, lease_ttl: float, heartbeat: float) -> None:
        self.svc = svc
        self.capacity = capacity
        self.ttl = lease_ttl
        self.heartbeat = heartbeat
        self.upstreams: dict[str, Upstream] = {}
        self.draining = False
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return sum(len(u.running) for u in self.upstreams.values())

    # --- links -------------------------------------------------------------------------------------------

    def adopt(self, peer: Peer, registered: bool) -> bool:
        """A link to a scheduler is up. Our own registration wins over a link the scheduler dialled."""
        node = peer.remote_node
        roles = peer.remote_info.get("roles", [])
        if not isinstance(roles, list) or "scheduler" not in roles:
            return False
        up = self.upstreams.get(node)
        if up is None:
            up = self.upstreams[node] = Upstream(node, self.ttl)
            up.renewed_at = self.svc.clock.monotonic()
            up.loops = [asyncio.create_task(self._heartbeat_loop(up)), asyncio.create_task(self._send_loop(up))]
        if up.live and up.peer is not peer:
            if not (registered and up.peer is not None and up.peer.role == "server"):
                return False
            closing = asyncio.ensure_future(up.peer.close("replaced by our own registration"))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        ttl = peer.remote_info.get("lease_ttl")
        if _sane_ttl(ttl):  # the scheduler's TTL rules its leases (and a restarted one may have another)
            up.ttl = float(ttl)
        up.peer = peer
        up.kick.set()
        up.beat.set()  # renew at once: the leases we hold may be close to their end after a cut
        log.info("cluster: working for scheduler %s (%s)", node, "registered" if registered else "dialled")
        return True

    def dropped(self, peer: Peer) -> None:
        up = self.upstreams.get(peer.remote_node)
        if up is not None and up.peer is peer:
            up.peer = None

    def _upstream_of(self, peer: Peer) -> Upstream:
        up = self.upstreams.get(peer.remote_node)
        if up is None or up.peer is not peer:
            raise RpcError("not_linked", "this connection is not a scheduler link of this poller")
        return up

    # --- methods schedulers call -------------------------------------------------------------------------

    def handlers(self) -> dict[str, Any]:
        return {"run": self.on_run, "stop": self.on_stop}

    async def on_run(self, peer: Peer, params: dict[str, Any]) -> dict[str, Any]:
        up = self._upstream_of(peer)
        jobs = params.get("jobs")
        if not isinstance(jobs, list):
            raise RpcError("bad_params", "jobs: expected a list")
        ttl = params.get("lease_ttl")
        if _sane_ttl(ttl):
            up.ttl = float(ttl)
        refused: list[list[Any]] = []
        now = self.svc.clock.monotonic()
        for job in jobs:
            job_id = job.get("id") if isinstance(job, dict) else None
            token = job.get("token") if isinstance(job, dict) else None
            if not isinstance(job_id, int) or not isinstance(token, int):
                continue  # nothing to answer to
            if job_id in up.running:
                if up.running[job_id].token != token:  # the scheduler moved on: the new lease wins
                    self._stop(up, job_id, "superseded by a newer lease")
                else:
                    continue
            reason = self._refusal(job)
            if reason is not None:
                refused.append([job_id, reason])
                continue
            run = up.running[job_id] = Running(job_id, token, now)
            run.task = asyncio.create_task(self._execute(up, run, job))
        return {"refused": refused}

    async def on_stop(self, peer: Peer, params: dict[str, Any]) -> None:
        up = self._upstream_of(peer)
        ids = params.get("ids", [])
        for job_id in ids if isinstance(ids, list) else []:
            if isinstance(job_id, int):
                self._stop(up, job_id, "the scheduler said stop")

    def _refusal(self, job: dict[str, Any]) -> str | None:
        if self.draining:
            return "draining"
        if self.in_flight >= self.capacity:
            return "capacity"
        if not isinstance(job.get("task"), str):
            return "no task name"
        if not isinstance(job.get("args"), dict):
            return "args must be a map"
        for key in ("timeout", "attempt", "max_attempts"):
            if job.get(key) is not None and not isinstance(job.get(key), int | float):
                return f"bad {key}"
        return None

    def _stop(self, up: Upstream, job_id: int, why: str) -> None:
        run = up.running.pop(job_id, None)
        if run is not None and run.task is not None:
            log.warning("cluster: stopping job %d for %s: %s", job_id, up.node, why)
            run.task.cancel()

    # --- running a job -----------------------------------------------------------------------------------

    async def _execute(self, up: Upstream, run: Running, job: dict[str, Any]) -> None:
        from ashjobs.executor import run_task
        from ashjobs.store.jobs import Result

        started = time.monotonic()
        r = Result(run.job_id, run.token, "success", self.svc.node, self.svc.clock.now(), 0.0)
        try:
            await run_task(job, self.svc.node, None, r)
        except asyncio.CancelledError:
            if up.running.get(run.job_id) is run:
                up.running.pop(run.job_id, None)
            raise
        except Exception as e:  # run_task reports task errors itself; this is a bug of ours
            log.exception("cluster: job %d crashed the runner", run.job_id)
            r.outcome, r.error = "failure", f"{type(e).__name__}: {e}"
        result = {"id": r.job_id, "token": r.token, "outcome": r.outcome, "error": (r.error or "")[:MAX_ERROR] or None,
                  "duration": time.monotonic() - started, "snooze": r.snooze, "backoff": r.backoff,
                  "discard": r.discard}
        if up.running.get(run.job_id) is run:
            del up.running[run.job_id]
            if len(up.outbox) >= MAX_OUTBOX:
                up.outbox.popleft()
            up.outbox.append(result)
            up.kick.set()

    # --- talking to the scheduler ------------------------------------------------------------------------

    async def _send_loop(self, up: Upstream) -> None:
        """Deliver results in batches, one call in flight per scheduler; keep them across a cut."""
        while True:
            await up.kick.wait()
            up.kick.clear()
            while up.outbox and up.live:
                assert up.peer is not None
                batch = _batch(up.outbox, up.peer.max_frame)
                try:
                    reply = await up.peer.call("result", {"results": batch}, timeout=up.ttl)
                except RpcError as e:  # the scheduler read and rejected them: sending again would not help
                    log.error("cluster: scheduler %s rejected %d result(s): %s", up.node, len(batch), e)
                    reply = None
                except ValueError as e:  # one result alone over the frame limit: it can never be sent
                    log.error("cluster: dropping a result for %s: %s", up.node, e)
                    reply = None
                except Exception as e:
                    log.info("cluster: cannot deliver %d result(s) to %s yet: %s", len(batch), up.node, e)
                    await asyncio.sleep(min(1.0, up.ttl / 4))
                    continue
                # The batch is what is left of the outbox's head: new results went to its tail meanwhile, and
                # trimming a full outbox may have dropped some of the batch from its head.
                sent = {id(r) for r in batch}
                while up.outbox and id(up.outbox[0]) in sent:
                    up.outbox.popleft()
                stop = reply.get("stop") if isinstance(reply, dict) else None
                if stop:
                    log.warning("cluster: scheduler %s refused %d late result(s)", up.node, len(stop))

    async def heartbeat_now(self, up: Upstream) -> None:
        if not up.live:
            return
        assert up.peer is not None
        sent = self.svc.clock.monotonic()
        leases = [[r.job_id, r.token] for r in up.running.values()]
        try:
            reply = await up.peer.call("heartbeat", {"leases": leases, "in_flight": self.in_flight,
                                                     "capacity": self.capacity, "draining": self.draining},
                                       timeout=max(self._interval(up), 0.5))
        except Exception as e:
            log.info("cluster: heartbeat to %s failed: %s", up.node, e)
            return
        up.renewed_at = max(up.renewed_at, sent)
        stop = reply.get("stop") if isinstance(reply, dict) else None
        sent_ids = {pair[0] for pair in leases}
        for job_id in stop if isinstance(stop, list) else []:
            if isinstance(job_id, int) and job_id in sent_ids:
                self._stop(up, job_id, "its lease is no longer ours")

    def _interval(self, up: Upstream) -> float:
        """Our heartbeat, but never slower than a third of the scheduler's lease TTL (configs may differ)."""
        return min(self.heartbeat, up.ttl / 3)

    async def _heartbeat_loop(self, up: Upstream) -> None:
        was_live = False
        while True:
            if up.live and not was_live:
                up.kick.set()
            was_live = up.live
            await self.heartbeat_now(up)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval(up) if up.live else min(self._interval(up), 0.2)):
                    await up.beat.wait()
            up.beat.clear()

    async def run(self) -> None:
        """The watchdog: a heartbeat call may hang on a silent cut, so expiry is checked on its own beat."""
        while True:
            await asyncio.sleep(min(0.1, self.ttl / 10))
            for up in list(self.upstreams.values()):
                self._expire(up)

    def _expire(self, up: Upstream) -> None:
        """Stop the work whose lease the scheduler has surely given away: no answered heartbeat for a TTL."""
        now = self.svc.clock.monotonic()
        for run in list(up.running.values()):
            if now - max(run.received, up.renewed_at) > up.ttl:
                self._stop(up, run.job_id, f"no contact with scheduler for over {up.ttl:g}s")

    # --- stopping ----------------------------------------------------------------------------------------

    async def drain(self, grace: float) -> None:
        """Take no new work, say so, finish within `grace`, hand back what is left without burning attempts."""
        self.draining = True
        for up in self.upstreams.values():
            if up.live:
                assert up.peer is not None
                with contextlib.suppress(Exception):
                    await up.peer.notify("draining", {})
        deadline = time.monotonic() + grace
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for up in self.upstreams.values():
            left = list(up.running.values())
            for run in left:
                self._stop(up, run.job_id, "grace period over: handing it back")
            if left and up.live:
                assert up.peer is not None
                with contextlib.suppress(Exception):
                    await up.peer.call("handback", {"leases": [[r.job_id, r.token] for r in left]}, timeout=2.0)
        flush_until = time.monotonic() + 2.0
        while any(u.outbox and u.live for u in self.upstreams.values()) and time.monotonic() < flush_until:
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        for up in self.upstreams.values():
            for run in list(up.running.values()):
                self._stop(up, run.job_id, "shutting down")
            for t in up.loops:
                t.cancel()
            await asyncio.gather(*up.loops, return_exceptions=True)
