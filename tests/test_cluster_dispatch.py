"""The scheduler's dispatcher in-process on a fake clock, fed by real RPC peers on loopback that play pollers:
lease expiry, re-dispatch to another poller, fencing of the late result, all without waiting for time."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from cluster_harness import free_port

from ashjobs import config
from ashjobs.clock import FakeClock
from ashjobs.cluster import rpc
from ashjobs.cluster.node import ClusterNode
from ashjobs.cluster.secret import create_secret
from ashjobs.services import Services
from ashjobs.store import Store, Writer
from ashjobs.store import jobs as sj
from ashjobs.store import peers as sp


class FakePoller:
    """A real RPC peer that registers as a poller and records the jobs it is sent (it never runs them)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.jobs: list[dict[str, Any]] = []
        self.got = asyncio.Event()
        self.peer: rpc.Peer | None = None

    async def _run(self, peer: rpc.Peer, params: dict[str, Any]) -> dict[str, Any]:
        self.jobs.extend(params["jobs"])
        self.got.set()
        return {"refused": []}

    async def connect(self, port: int, secret: bytes) -> None:
        self.peer = await rpc.connect("127.0.0.1", port, secret=secret, node=self.name, handlers={"run": self._run},
                                      info={"roles": ["poller"], "link": "register", "partition": "p1", "cap": 2})

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        assert self.peer is not None
        return await self.peer.call(method, params, timeout=5)


async def _until(pred: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def _services(tmp_path: Path, roles: list[str], clock: FakeClock) -> tuple[Services, bytes, int]:
    secret_file = tmp_path / "cluster.secret"
    secret = secret_file.read_bytes().strip() if secret_file.exists() else create_secret(secret_file)
    port = free_port()
    cfg = config.from_dict({"node": {"name": roles[0][:5], "roles": roles, "partition": "p1"},
                            "cluster": {"listen": f"127.0.0.1:{port}", "discovery": ["static"], "lease_ttl": "2s",
                                        "secret_file": str(secret_file)}}, data_dir=str(tmp_path / roles[0]))
    store = Store.from_config(cfg)
    svc = Services(cfg=cfg, store=store, writer=Writer(store), clock=clock, node=cfg.node.name,
                   log=logging.getLogger("test"))
    return svc, secret, port


def test_expired_lease_moves_the_job_and_the_late_result_is_refused(tmp_path: Path) -> None:
    clock = FakeClock(time.time())
    svc, secret, port = _services(tmp_path, ["scheduler"], clock)
    store = svc.store

    async def scenario() -> None:
        node = ClusterNode(svc)
        runner = asyncio.create_task(node.run())
        await _until(lambda: node.server is not None, "the server")
        a, b = FakePoller("a"), FakePoller("b")
        await a.connect(port, secret)
        await b.connect(port, secret)
        with store.tx() as conn:
            job_id, _, _ = sj.insert(conn, sj.NewJob("sleep", {"host": "10.0.0.9"}, partition="p1"), clock.now())
        svc.wake()
        await _until(lambda: a.jobs or b.jobs, "the first dispatch")
        first, second = (a, b) if a.jobs else (b, a)
        old = first.jobs[0]
        assert old["id"] == job_id and node.dispatcher is not None

        clock.advance(1.9)  # a heartbeat within lease_ttl renews; the lease stays with `first`
        await first.call("heartbeat", {"leases": [[job_id, old["token"]]], "in_flight": 1})
        await second.call("heartbeat", {"leases": [], "in_flight": 0})
        clock.advance(1.9)
        await second.call("heartbeat", {"leases": [], "in_flight": 0})
        await asyncio.sleep(0.3)
        assert not second.jobs and sj.get(store.conn, job_id).lease_owner == first.name  # type: ignore[union-attr]

        clock.advance(0.2)  # 2.1 s since `first` last renewed: its lease is gone
        await second.call("heartbeat", {"leases": [], "in_flight": 0})
        await asyncio.wait_for(second.got.wait(), 10)
        new = second.jobs[0]
        assert new["id"] == job_id and new["token"] > old["token"]
        assert node.dispatcher.registry.by_node[first.name].state == "unavailable"

        reply = await first.call("result", {"results": [{"id": job_id, "token": old["token"], "outcome": "success",
                                                         "duration": 1.0}]})
        assert reply["stop"] == [job_id]
        renewed = await first.call("heartbeat", {"leases": [[job_id, old["token"]]], "in_flight": 1})
        assert renewed["stop"] == [job_id]  # told to stop the work it lost
        assert node.dispatcher.registry.by_node[first.name].state == "available"  # heartbeats resumed

        reply = await second.call("result", {"results": [{"id": job_id, "token": new["token"],
                                                          "outcome": "success", "duration": 0.5}]})
        assert reply["stop"] == []
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    asyncio.run(scenario())
    job = sj.get(store.conn, job_id := 1)
    assert job is not None and job.state == "completed"
    attempts = [(a["node"], a["outcome"], a["error"]) for a in sj.attempts(store.conn, job_id)]
    lost_on = attempts[0][0]
    assert attempts == [(lost_on, "lost", f"lease expired on {lost_on}"),
                        ({"a", "b"}.difference({lost_on}).pop(), "success", None)]
    assert sp.counter(store.conn, "stale_results_refused") == 1
    assert svc.stats["stale_results_refused"] == 1
    assert svc.stats["leases_expired"] == 1  # ashjobs_leases_expired_total
    svc.writer.close()
    store.close()


def test_a_restarted_scheduler_expires_leases_nobody_renews_by_their_stored_time(tmp_path: Path) -> None:
    clock = FakeClock(time.time())
    svc, secret, port = _services(tmp_path, ["scheduler"], clock)
    with svc.store.tx() as conn:  # left by the previous run: leased to a poller that is gone
        job_id, _, _ = sj.insert(conn, sj.NewJob("noop", partition="p1"), clock.now())
        sj.lease(conn, [job_id], "ghost", clock.now(), 2.0)

    async def scenario() -> None:
        node = ClusterNode(svc)
        runner = asyncio.create_task(node.run())
        await _until(lambda: node.server is not None, "the server")
        a = FakePoller("a")
        await a.connect(port, secret)
        await asyncio.sleep(1.0)  # a housekeeping round or more: the stored expiry is still ahead
        assert not a.jobs
        clock.advance(2.5)
        await a.call("heartbeat", {"leases": [], "in_flight": 0})
        await asyncio.wait_for(a.got.wait(), 10)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    asyncio.run(scenario())
    assert [(x["node"], x["outcome"], x["error"]) for x in sj.attempts(svc.store.conn, job_id)] == [
        ("ghost", "lost", "lease expired on ghost")]
    assert svc.stats["leases_expired"] == 1
    svc.writer.close()
    svc.store.close()


def test_a_poller_cut_off_from_its_scheduler_stops_the_work_after_lease_ttl(tmp_path: Path) -> None:
    clock = FakeClock(time.time())
    svc, secret, port = _services(tmp_path, ["poller"], clock)
    beats: list[list[list[int]]] = []
    answering = asyncio.Event()

    async def heartbeat(peer: rpc.Peer, params: dict[str, Any]) -> dict[str, Any]:
        await answering.wait()  # a cut: the call never comes back
        beats.append(params["leases"])
        return {"stop": []}

    async def scenario() -> None:
        node = ClusterNode(svc)
        runner = asyncio.create_task(node.run())
        await _until(lambda: node.server is not None, "the server")
        answering.set()
        sched = await rpc.connect("127.0.0.1", port, secret=secret, node="sched", handlers={"heartbeat": heartbeat},
                                  info={"roles": ["scheduler"], "link": "dispatch", "lease_ttl": 2.0})
        job = {"id": 7, "token": 3, "task": "sleep", "args": {"seconds": 60}, "queue": "default", "meta": {},
               "attempt": 1, "max_attempts": 3, "timeout": None, "actor": None}
        assert await sched.call("run", {"jobs": [job], "lease_ttl": 2.0}, timeout=5) == {"refused": []}
        await _until(lambda: [[7, 3]] in beats, "a heartbeat renewing the lease")
        assert node.runner is not None and node.runner.in_flight == 1
        answering.clear()
        clock.advance(1.9)
        await asyncio.sleep(0.5)
        assert node.runner.in_flight == 1  # still within lease_ttl of the last answered heartbeat
        clock.advance(0.3)
        await _until(lambda: node.runner is not None and node.runner.in_flight == 0, "the work to stop")
        beats.clear()
        answering.set()
        await _until(lambda: beats, "heartbeats again")
        assert beats[-1] == []  # nothing left to renew: the work is gone, no result will come
        await sched.close()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    asyncio.run(scenario())
    svc.writer.close()
    svc.store.close()


def test_a_node_with_both_roles_runs_routed_jobs_on_its_own_poller_over_rpc(tmp_path: Path) -> None:
    from ashjobs.clock import SystemClock

    svc, _, port = _services(tmp_path, ["scheduler", "poller"], FakeClock())
    svc.clock = SystemClock()

    async def scenario() -> int:
        node = ClusterNode(svc)
        runner = asyncio.create_task(node.run())
        await _until(lambda: node.dispatcher is not None and node.dispatcher.linked_to(svc.node), "the self link")
        with svc.store.tx() as conn:
            job_id, _, _ = sj.insert(conn, sj.NewJob("noop", partition="p1"), svc.clock.now())
        svc.wake()
        await _until(lambda: sj.get(svc.store.conn, job_id).state == "completed", "the job")  # type: ignore[union-attr]
        assert node.runner is not None and svc.node in node.runner.upstreams  # it came over a link, as a poller's
        assert node.dispatcher is not None and node.dispatcher.links[svc.node].remote_addr[1] == port
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        return job_id

    job_id = asyncio.run(scenario())
    assert [(a["node"], a["outcome"]) for a in sj.attempts(svc.store.conn, job_id)] == [(svc.node, "success")]
    svc.writer.close()
    svc.store.close()
