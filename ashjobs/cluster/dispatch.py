"""The scheduler's half of the cluster: routed jobs go to pollers under leases, and come back fenced.

One dispatch round reads a batch of available routed jobs, places them with `routing.assign`, writes their
leases in one transaction and sends each poller one "run" call for its share. Heartbeats renew leases (and
report load); results finish jobs through `store.jobs.finish`, which refuses a stale token; the lifeline
rescues leases whose deadline passed on this node's monotonic clock and dispatches the job again, preferring
another poller.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ashjobs import logs
from ashjobs.cluster import routing
from ashjobs.cluster.leases import LeaseTable
from ashjobs.cluster.registry import Registry, Source
from ashjobs.queue import OUTCOMES
from ashjobs.store import jobs as sj
from ashjobs.store import peers as sp

if TYPE_CHECKING:
    from ashjobs.cluster.rpc import Peer
    from ashjobs.services import Services

log = logging.getLogger("ashjobs.cluster.dispatch")

MAX_BATCH = 2000  # jobs per dispatch round
MAX_LIST = 100_000  # entries accepted in one heartbeat / result / handback list


class BadParams(ValueError):
    pass


def pairs_param(params: dict[str, Any], key: str) -> list[tuple[int, int]]:
    """A list of [job id, token] pairs from an untrusted peer."""
    raw = params.get(key, [])
    if not isinstance(raw, list) or len(raw) > MAX_LIST:
        raise BadParams(f"{key}: expected a list of [job id, token]")
    out = []
    for item in raw:
        if (not isinstance(item, list | tuple) or len(item) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in item)):
            raise BadParams(f"{key}: expected a list of [job id, token]")
        out.append((int(item[0]), int(item[1])))
    return out


def _result(item: Any, node: str, now: float) -> sj.Result:
    if not isinstance(item, dict):
        raise BadParams("results: expected maps")
    job_id, token = item.get("id"), item.get("token")
    outcome, error = item.get("outcome"), item.get("error")
    duration, snooze, backoff = item.get("duration", 0.0), item.get("snooze"), item.get("backoff")
    discard = item.get("discard") is True
    if not isinstance(job_id, int) or not isinstance(token, int):
        raise BadParams("results: id and token must be integers")
    if not (outcome is None and isinstance(snooze, int | float)) and outcome not in OUTCOMES:
        raise BadParams(f"results: bad outcome {outcome!r}")
    if outcome == "lost":
        raise BadParams("results: a poller cannot report 'lost'")
    for name, v in (("duration", duration), ("snooze", snooze), ("backoff", backoff)):
        if v is not None and (not isinstance(v, int | float) or isinstance(v, bool) or not 0 <= v < 10 ** 9):
            raise BadParams(f"results: bad {name}")
    if error is not None and not isinstance(error, str):
        raise BadParams("results: error must be a string")
    duration = float(duration or 0.0)
    # The poller's wall clock may be off: the attempt's start is placed on ours.
    return sj.Result(job_id, token, outcome, node, now - duration, duration, error[:4000] if error else None,
                     float(snooze) if snooze is not None else None, float(backoff) if backoff is not None else None,
                     discard=discard and outcome == "failure")


def _chunks(jobs: list[dict[str, Any]], budget: int) -> tuple[list[list[dict[str, Any]]], list[tuple[Any, int]]]:
    """Jobs split into "run" calls of at most `budget` bytes each (big args must not make one call too big to
    send, which would lose every job in it); → (chunks, [(job, size)] of those too big even alone)."""
    import msgpack

    chunks: list[list[dict[str, Any]]] = []
    too_big: list[tuple[Any, int]] = []
    size = 0
    for job in jobs:
        n = len(msgpack.packb(job, use_bin_type=True))
        if n > budget:
            too_big.append((job, n))
            continue
        if not chunks or size + n > budget:
            chunks.append([])
            size = 0
        chunks[-1].append(job)
        size += n
    return chunks, too_big


def _loads(text: str) -> Any:
    return {} if text == "{}" else json.loads(text)


def _finish_hooks() -> Any:
    from ashjobs import tasks

    return tasks.run_finish_hooks


class Dispatcher:
    def __init__(self, svc: Services, *, lease_ttl: float, heartbeat: float) -> None:
        self.svc = svc
        self.ttl = lease_ttl
        self.heartbeat = heartbeat
        self.registry = Registry(svc.clock, lease_ttl)
        self.leases = LeaseTable(lease_ttl)
        self.links: dict[str, Peer] = {}  # poller node → the one link work goes over
        self._wake = asyncio.Event()
        self._waiting: dict[tuple[str, str | None], str] = {}  # groups we marked with a reason
        self._tasks: set[asyncio.Task[Any]] = set()
        self._persisted = -1
        svc.on_wake(self._wake.set)

    # --- links -------------------------------------------------------------------------------------------

    def adopt(self, peer: Peer, source: Source, address: str) -> bool:
        """A link to a poller is up. A poller's own registration wins over a link we dialled."""
        node = peer.remote_node
        roles = peer.remote_info.get("roles", [])
        if not isinstance(roles, list) or "poller" not in roles:
            return False
        current = self.links.get(node)
        if current is not None and current is not peer and not current.closed.is_set():
            if not (source == "registered" and current.role == "client"):
                return False
            self._spawn(current.close("replaced by the poller's own registration"))
        self.links[node] = peer
        self.registry.linked(node, address, source, peer.remote_info)
        self.registry.set_leased(node, self.leases.held_by(node))
        log.info("cluster: poller %s linked (%s, %s)", node, source, address)
        self._wake.set()
        return True

    def dropped(self, peer: Peer) -> None:
        node = peer.remote_node
        if self.links.get(node) is peer:
            del self.links[node]
            self.registry.unlinked(node)
            log.info("cluster: link to poller %s closed (%s)", node, peer.close_reason)

    def linked_to(self, node: str | None) -> bool:
        peer = self.links.get(node) if node else None
        return peer is not None and not peer.closed.is_set()

    def _node_of(self, peer: Peer) -> str:
        if self.links.get(peer.remote_node) is not peer:
            from ashjobs.cluster.rpc import RpcError

            raise RpcError("not_linked", "this connection is not a poller link of this scheduler")
        return peer.remote_node

    # --- loops -------------------------------------------------------------------------------------------

    async def run(self) -> None:
        self.svc.extras["registry"] = self.registry  # for status lines (systemd); only with a live cluster
        loops = [self._dispatch_loop(), self._lifeline_loop(), self._housekeeping_loop()]
        await asyncio.gather(*loops)

    async def run_disabled(self, reason: str) -> None:
        """No cluster on this node: routed jobs stay available and say why."""
        while True:
            try:
                await self._mark_waiting(reason)
            except Exception:  # a bad row or a hook's bug must not take the daemon down: try again later
                log.exception("cluster: marking waiting jobs failed")
            self.svc.beat("cluster")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await self._wake.wait()
            self._wake.clear()

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Any) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _dispatch_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.heartbeat):
                    await self._wake.wait()
            self._wake.clear()
            self.svc.beat("cluster")
            try:
                if await self.dispatch_once() >= MAX_BATCH:
                    self._wake.set()
            except Exception:
                log.exception("cluster: dispatch round failed")
                await asyncio.sleep(0.5)

    async def dispatch_once(self) -> int:
        pollers = self.registry.pollers()
        room = sum(p.capacity - p.in_flight for p in pollers if p.has_room)
        if room <= 0:
            return 0
        served: dict[str, set[str]] = defaultdict(set)
        for p in pollers:
            if p.has_room:
                served[p.partition].update(p.domains)
        conn = self.svc.store.conn
        rows = sp.available_routed(conn, served, min(room, MAX_BATCH), sj.paused_queues(conn))
        if not rows:
            return 0
        batch, marked = [], set()
        for job_id, partition, domain, args, waiting in rows:
            parsed = {}
            if args != "{}":
                try:
                    parsed = json.loads(args)
                except ValueError:
                    pass
            target = routing.target_key(job_id, partition, parsed if isinstance(parsed, dict) else {})
            batch.append(routing.Routable(job_id, partition, domain, target,
                                          frozenset(self.leases.lost_on.get(job_id, ()))))
            if waiting:
                marked.add(job_id)
        placed, _ = routing.assign(batch, pollers)
        per_node: dict[str, list[int]] = defaultdict(list)
        for job_id, node in placed.items():
            per_node[node].append(job_id)
        now, ttl = self.svc.clock.now(), self.ttl

        def write(conn: sqlite3.Connection) -> dict[str, list[sqlite3.Row]]:
            out = {node: sj.lease(conn, ids, node, now, ttl) for node, ids in per_node.items()}
            if marked:
                sp.clear_waiting(conn, [i for i in placed if i in marked])
            return out

        leased = await self.svc.write(write)
        mono = self.svc.clock.monotonic()
        n = 0
        for node, got in leased.items():
            for row in got:
                self.leases.add(row["id"], node, row["lease_token"], mono)
            self.registry.set_leased(node, self.leases.held_by(node))
            n += len(got)
            if got:
                self._spawn(self._send_run(node, got))
        self.svc.stats["cluster_dispatched"] += n
        return n

    async def _send_run(self, node: str, rows: list[sqlite3.Row]) -> None:
        jobs = [{"id": r["id"], "token": r["lease_token"], "task": r["task"], "queue": r["queue"],
                 "args": _loads(r["args"]), "meta": _loads(r["meta"]), "attempt": r["attempt"],
                 "max_attempts": r["max_attempts"], "timeout": r["timeout"], "actor": r["actor"]} for r in rows]
        peer = self.links.get(node)
        chunks, too_big = _chunks(jobs, peer.max_frame // 2 if peer is not None else 1 << 62)
        if too_big:  # sending it again would not help: fail it for good, saying why
            now = self.svc.clock.now()
            failed = [sj.Result(j["id"], j["token"], "failure", node, now, 0.0,
                                f"job too big to send to a poller ({size} bytes; frame limit "
                                f"{peer.max_frame if peer else 0})", discard=True) for j, size in too_big]
            await self._finish_refused(node, [], failed)
        for chunk in chunks:
            await self._send_chunk(node, peer, chunk)

    async def _send_chunk(self, node: str, peer: Peer | None, jobs: list[dict[str, Any]]) -> None:
        try:
            if peer is None:
                raise ConnectionError("no link")
            reply = await peer.call("run", {"jobs": jobs, "lease_ttl": self.ttl}, timeout=self.ttl)
        except Exception as e:  # we cannot know whether it started: record the attempt lost, run it again
            log.warning("cluster: sending %d job(s) to %s failed: %s", len(jobs), node, e)
            await self._rescue({node: [(j["id"], j["token"]) for j in jobs]}, f"dispatch to {node} failed: {e}")
            return
        refused = reply.get("refused", []) if isinstance(reply, dict) else []
        tokens = {j["id"]: j["token"] for j in jobs}
        back, failed = [], []
        for item in refused if isinstance(refused, list) else []:
            if not (isinstance(item, list) and len(item) == 2 and item[0] in tokens):
                continue
            job_id, reason = item[0], str(item[1])[:500]
            if reason in ("capacity", "draining"):
                back.append((job_id, tokens[job_id]))
                self.registry.mark_full(node)  # it works for others too: no more until it says otherwise
            else:
                failed.append(sj.Result(job_id, tokens[job_id], "failure", node, self.svc.clock.now(), 0.0,
                                        f"poller {node} refused the job: {reason}"))
        if back or failed:
            await self._finish_refused(node, back, failed)

    async def _finish_refused(self, node: str, back: list[tuple[int, int]], failed: list[sj.Result]) -> None:
        """Jobs a poller did not start: those it had no room for go back, the rest fail."""
        hooks = _finish_hooks()
        now = self.svc.clock.now()

        def write(conn: sqlite3.Connection) -> None:
            sj.requeue(conn, back)
            sj.finish(conn, failed, now, on_finish=hooks)

        await self.svc.write(write)
        for job_id, token in [*back, *((r.job_id, r.token) for r in failed)]:
            self.leases.release(job_id, token)
        self.registry.set_leased(node, self.leases.held_by(node))
        self._wake.set()

    async def _rescue(self, by_node: dict[str, list[tuple[int, int]]], reason: str | None = None) -> None:
        """Record the attempts lost and make the jobs available again (fenced: only the leases we name)."""
        hooks = _finish_hooks()
        now = self.svc.clock.now()

        def write(conn: sqlite3.Connection) -> int:
            n = 0
            for node, leases in by_node.items():
                current = sp.routed_executing(conn, [i for i, _ in leases])
                ids = [i for i, tok in leases if current.get(i, (None, None))[1] == tok]
                if ids:
                    n += len(sj.rescue(conn, now, ids=ids, reason=reason or f"lease expired on {node}",
                                       on_finish=hooks))
            return n

        n = await self.svc.write(write)
        for node, leases in by_node.items():
            for job_id, token in leases:
                if self.leases.release(job_id, token) is not None or job_id not in self.leases:
                    self.leases.note_lost(job_id, node)
            self.registry.set_leased(node, self.leases.held_by(node))
        self.svc.stats["cluster_leases_lost"] += n
        if reason is None:  # the lifeline: these leases expired (not a failed dispatch)
            self.svc.stats["leases_expired"] += n
        self._wake.set()

    async def _lifeline_loop(self) -> None:
        step = min(0.1, self.ttl / 10)
        while True:
            await asyncio.sleep(step)
            for _node, state in self.registry.tick():
                if state == "available":
                    self._wake.set()
            gone = self.leases.expired(self.svc.clock.monotonic())
            if gone:
                by_node: dict[str, list[tuple[int, int]]] = defaultdict(list)
                for lease in gone:
                    by_node[lease.node].append((lease.job_id, lease.token))
                    log.warning("cluster: lease of job %d on %s expired", lease.job_id, lease.node)
                try:
                    await self._rescue(by_node)
                except Exception:  # e.g. a task's on_finish hook raised; the stored expiry retries it
                    log.exception("cluster: rescuing expired leases failed")

    async def _housekeeping_loop(self) -> None:
        """Once a heartbeat: leases nobody here holds (a restart) expire by their stored wall-clock time,
        waiting jobs say why, and the registry snapshot goes to the peers table when it changed."""
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                await self._expire_orphans()
                await self._mark_waiting()
                if self.registry.version != self._persisted:
                    self._persisted = self.registry.version
                    await self._persist()
            except Exception:
                log.exception("cluster: housekeeping failed")

    async def _persist(self) -> None:
        rows, now, node = self.registry.rows(), self.svc.clock.now(), self.svc.node
        await self.svc.write(lambda conn: sp.replace_peers(conn, rows, node, now))

    async def _expire_orphans(self) -> None:
        expired = sp.expired_routed(self.svc.store.conn, self.svc.clock.now())
        orphans = [(i, owner) for i, owner in expired if i not in self.leases]
        if not orphans:
            return
        hooks = _finish_hooks()
        now = self.svc.clock.now()

        def write(conn: sqlite3.Connection) -> int:
            return sum(len(sj.rescue(conn, now, ids=[job_id], expired_before=now, reason=f"lease expired on {owner}",
                                     on_finish=hooks)) for job_id, owner in orphans)

        self.svc.stats["leases_expired"] += await self.svc.write(write)
        for job_id, owner in orphans:
            if owner:
                self.leases.note_lost(job_id, owner)
        self._wake.set()

    async def _mark_waiting(self, off: str | None = None) -> None:
        pollers = self.registry.pollers()
        reasons: dict[tuple[str, str | None], str | None] = {}
        for group in sp.routed_groups(self.svc.store.conn):
            serving = [p for p in pollers if routing.serves(p, *group) and p.state in ("available", "busy")]
            reasons[group] = off or (None if serving else routing.why_not(*group, pollers))
        for group in self._waiting:
            reasons.setdefault(group, None)
        changes = {g: r for g, r in reasons.items() if self._waiting.get(g) != r}
        if not changes:
            return

        def write(conn: sqlite3.Connection) -> None:
            for (partition, domain), reason in changes.items():
                sp.set_waiting(conn, partition, domain, reason)

        await self.svc.write(write)
        for g, r in changes.items():
            if r is None:
                self._waiting.pop(g, None)
            else:
                self._waiting[g] = r

    # --- methods pollers call ----------------------------------------------------------------------------

    def handlers(self) -> dict[str, Callable[[Peer, dict[str, Any]], Any]]:
        return {"heartbeat": self.on_heartbeat, "result": self.on_result, "draining": self.on_draining,
                "handback": self.on_handback}

    async def on_heartbeat(self, peer: Peer, params: dict[str, Any]) -> dict[str, Any]:
        node = self._node_of(peer)
        held = self._checked(lambda: pairs_param(params, "leases"))
        in_flight = params.get("in_flight", len(held))
        draining = params.get("draining") is True
        renewal = self.leases.renew(node, held, self.svc.clock.monotonic())
        self.registry.heartbeat(node, in_flight=in_flight if isinstance(in_flight, int) else len(held),
                                ours=len(held), draining=draining)
        foreign: list[int] = []
        if renewal.unknown:  # leases from before this scheduler started: only the owner may renew them
            owners = sp.routed_executing(self.svc.store.conn, [i for i, _ in renewal.unknown])
            foreign = [i for i, _ in renewal.unknown if owners.get(i, (node, 0))[0] != node]
            renewal.unknown = [(i, t) for i, t in renewal.unknown if i not in foreign]
        ask = renewal.renewed + renewal.unknown
        lost: list[int] = list(foreign)
        if ask:
            expires = self.svc.clock.now() + self.ttl
            lost += await self.svc.write(lambda conn: sj.renew(conn, ask, expires))
        gone = set(lost)
        mono = self.svc.clock.monotonic()
        for job_id, _ in renewal.renewed:
            if job_id in gone:
                self.leases.forget(job_id)
        for job_id, token in renewal.unknown:
            if job_id not in gone:  # a lease from before this scheduler started: ours again
                self.leases.add(job_id, node, token, mono)
        self.registry.set_leased(node, self.leases.held_by(node))
        if draining:
            self.registry.set_draining(node)
        stop = renewal.stale + lost
        if stop:
            log.info("cluster: told %s to stop job(s) %s (lease no longer theirs)", node, stop[:20])
        return {"stop": stop}

    async def on_result(self, peer: Peer, params: dict[str, Any]) -> dict[str, Any]:
        node = self._node_of(peer)
        now = self.svc.clock.now()
        raw = params.get("results")
        if not isinstance(raw, list) or len(raw) > MAX_LIST:
            self._bad("results: expected a list")
        results, bad = [], 0
        for item in raw:  # type: ignore[union-attr]
            try:
                results.append(_result(item, node, now))
            except BadParams as e:
                bad += 1
                log.warning("cluster: ignored a malformed result from %s: %s", node, e)
        hooks = _finish_hooks()
        # A token is only good from the node it was leased to.
        held = {r.job_id: lease.node for r in results if (lease := self.leases.get(r.job_id)) is not None}
        unknown = [r.job_id for r in results if r.job_id not in held]
        if unknown:
            held.update((i, owner or "") for i, (owner, _) in sp.routed_executing(self.svc.store.conn, unknown).items())
        foreign = [r for r in results if held.get(r.job_id, node) != node]
        results = [r for r in results if held.get(r.job_id, node) == node]

        logging_outcomes = log.isEnabledFor(logging.INFO)
        leased: dict[int, tuple[str, int, int]] = {}

        def write(conn: sqlite3.Connection) -> list[sj.Result]:
            if logging_outcomes:  # read before finishing: what the outcome lines name
                leased.update(sj.leased_attempts(conn, [r.job_id for r in results]))
            refused = sj.finish(conn, results, now, on_finish=hooks) + foreign
            if refused:
                sp.bump(conn, "stale_results_refused", len(refused))
            return refused

        refused = await self.svc.write(write)
        stale = {(r.job_id, r.token) for r in refused}
        for r in results:
            if (r.job_id, r.token) not in stale:
                self.leases.release(r.job_id, r.token)
                task, attempt, _ = leased.get(r.job_id, ("?", 0, 0))
                logs.job_outcome(log, r, task, attempt)  # once, here where the outcome is recorded
        if refused:
            self.svc.stats["stale_results_refused"] += len(refused)
            log.warning("cluster: refused %d stale result(s) from %s (jobs %s)", len(refused), node,
                        [r.job_id for r in refused][:20])
        self.registry.set_leased(node, self.leases.held_by(node))
        self._wake.set()
        return {"stop": [r.job_id for r in refused], "malformed": bad}

    async def on_draining(self, peer: Peer, params: dict[str, Any]) -> None:
        node = self._node_of(peer)
        log.info("cluster: poller %s is draining", node)
        self.registry.set_draining(node)

    async def on_handback(self, peer: Peer, params: dict[str, Any]) -> dict[str, Any]:
        """A draining poller ran out of grace: its jobs go back without burning an attempt."""
        node = self._node_of(peer)
        leases = [(i, t) for i, t in self._checked(lambda: pairs_param(params, "leases"))
                  if (lease := self.leases.get(i)) is not None and lease.node == node and lease.token == t]
        n = await self.svc.write(lambda conn: sj.requeue(conn, leases))
        for job_id, token in leases:
            self.leases.release(job_id, token)
        self.registry.set_leased(node, self.leases.held_by(node))
        self._wake.set()
        return {"requeued": n}

    def _checked(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except BadParams as e:
            self._bad(str(e))

    @staticmethod
    def _bad(message: str) -> Any:
        from ashjobs.cluster.rpc import RpcError

        raise RpcError("bad_params", message)
