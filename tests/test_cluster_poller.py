"""Robustness of the cluster's two halves under unfriendly conditions, in-process with real loopback RPC."""

from __future__ import annotations

import ast
import asyncio
import time
from pathlib import Path
from typing import Any

from test_cluster_dispatch import FakePoller, _services, _until

from ashjobs import tasks
from ashjobs.clock import FakeClock
from ashjobs.cluster import rpc
from ashjobs.cluster.node import ClusterNode
from ashjobs.store import jobs as sj

ROOT = Path(__file__).resolve().parent.parent


def test_a_result_backlog_bigger_than_the_schedulers_frame_limit_is_delivered_in_batches(tmp_path: Path) -> None:
    """Results with long errors that add up to more than one frame (of the smaller of both sides' limits) go in
    several calls, instead of one call that can never be sent (or that makes the scheduler drop the link)."""
    svc, secret, port = _services(tmp_path, ["poller"], FakeClock(time.time()))
    got: list[dict[str, Any]] = []
    frames: list[int] = []

    release = asyncio.Event()

    async def result(peer: rpc.Peer, params: dict[str, Any]) -> dict[str, Any]:
        if not frames:
            frames.append(0)
            await release.wait()  # a slow scheduler: the other results pile up behind this call
        got.extend(params["results"])
        frames.append(len(params["results"]))
        return {"stop": []}

    async def heartbeat(peer: rpc.Peer, params: dict[str, Any]) -> dict[str, Any]:
        return {"stop": []}

    async def scenario() -> None:
        node = ClusterNode(svc)
        runner = asyncio.create_task(node.run())
        await _until(lambda: node.server is not None, "the server")
        sched = await rpc.connect("127.0.0.1", port, secret=secret, node="sched", max_frame=8192,
                                  handlers={"result": result, "heartbeat": heartbeat},
                                  info={"roles": ["scheduler"], "link": "dispatch", "lease_ttl": 2.0})
        # An unknown task fails at once with an error that quotes its ~3 KB name: 8 of them make ~25 KB.
        jobs = [{"id": i, "token": 1, "task": f"t{i}" + "x" * 3000, "args": {}, "queue": "default", "meta": {},
                 "attempt": 1, "max_attempts": 1, "timeout": None, "actor": None} for i in range(1, 9)]
        for job in jobs:
            assert await sched.call("run", {"jobs": [job], "lease_ttl": 2.0}, timeout=5) == {"refused": []}
        assert node.runner is not None
        await _until(lambda: "sched" in node.runner.upstreams and len(node.runner.upstreams["sched"].outbox) == 8,
                     "a backlog of eight results")
        release.set()
        await _until(lambda: len(got) == 8, "all eight results", timeout=15)
        assert not sched.closed.is_set()  # no frame over its limit came its way
        await sched.close()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    asyncio.run(scenario())
    assert sorted(r["id"] for r in got) == list(range(1, 9))
    assert all(r["outcome"] == "failure" and "unknown task" in r["error"] for r in got)
    assert len(frames) > 2  # the marker, the first call, and more than one call for the backlog
    svc.writer.close()
    svc.store.close()


_HOOK_CALLS: list[int] = []


def _bad_hook(conn: Any, done: Any) -> None:
    _HOOK_CALLS.append(done.job_id)
    raise RuntimeError("a finish hook with a bug")


@tasks.task("audit4_hooked", routed=True, on_finish=_bad_hook)
async def _hooked() -> None:
    return None


def test_a_failing_finish_hook_does_not_take_the_dispatcher_down(tmp_path: Path) -> None:
    """A task's on_finish hook that raises, run when a lease expires, is logged; dispatch goes on."""
    clock = FakeClock(time.time())
    svc, secret, port = _services(tmp_path, ["scheduler"], clock)

    async def scenario() -> None:
        node = ClusterNode(svc)
        runner = asyncio.create_task(node.run())
        await _until(lambda: node.server is not None, "the server")
        a = FakePoller("a")
        await a.connect(port, secret)
        with svc.store.tx() as conn:
            hooked, _, _ = sj.insert(conn, sj.NewJob("audit4_hooked", partition="p1"), clock.now())
        svc.wake()
        await _until(lambda: a.jobs, "the first dispatch")
        clock.advance(2.5)  # its lease expires: rescuing it runs the hook, which raises
        await _until(lambda: hooked in _HOOK_CALLS, "the hook to run")
        await asyncio.sleep(0.3)
        assert not runner.done(), runner
        await a.call("heartbeat", {"leases": [], "in_flight": 0})
        with svc.store.tx() as conn:
            plain, _, _ = sj.insert(conn, sj.NewJob("noop", partition="p1"), clock.now())
        svc.wake()
        await _until(lambda: any(j["id"] == plain for j in a.jobs), "a later job dispatched")
        assert not runner.done()
        # The hook's bug did not block the rescue: the lost attempt is recorded and the job runs again.
        assert [x["outcome"] for x in sj.attempts(svc.store.conn, hooked)] == ["lost"]
        assert [j["id"] for j in a.jobs].count(hooked) == 2
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    asyncio.run(scenario())
    svc.writer.close()
    svc.store.close()


def test_no_asyncio_wait_for_in_the_package() -> None:
    """On Python 3.11 `asyncio.wait_for` can swallow a cancel that races with completion, so a job told to
    stop (a lost lease) could run on: the package uses `async with asyncio.timeout(...)` instead."""
    found = []
    for path in sorted((ROOT / "ashjobs").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr == "wait_for" and \
                    isinstance(node.value, ast.Name) and node.value.id == "asyncio":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, found


def test_jobs_with_big_args_go_in_several_run_calls_and_one_too_big_alone_fails_for_good(tmp_path: Path) -> None:
    """The scheduler splits a dispatch into calls that fit the poller's frame limit; a job that cannot fit
    even alone is discarded with the reason, instead of being sent, lost and sent again forever."""
    clock = FakeClock(time.time())
    svc, secret, port = _services(tmp_path, ["scheduler"], clock)
    calls: list[list[int]] = []

    async def run(peer: rpc.Peer, params: dict[str, Any]) -> dict[str, Any]:
        calls.append([j["id"] for j in params["jobs"]])
        return {"refused": []}

    async def scenario() -> None:
        node = ClusterNode(svc)
        runner = asyncio.create_task(node.run())
        await _until(lambda: node.server is not None, "the server")
        with svc.store.tx() as conn:
            small = [sj.insert(conn, sj.NewJob("noop", {"blob": "x" * 2000}, partition="p1"), clock.now())[0]
                     for _ in range(5)]
            big, _, _ = sj.insert(conn, sj.NewJob("noop", {"blob": "x" * 10_000}, partition="p1"), clock.now())
        peer = await rpc.connect("127.0.0.1", port, secret=secret, node="small", handlers={"run": run},
                                 max_frame=8192,
                                 info={"roles": ["poller"], "link": "register", "partition": "p1", "cap": 10})
        await _until(lambda: sorted(i for c in calls for i in c) == small, "the five small jobs")
        await _until(lambda: sj.get(svc.store.conn, big).state == "discarded", "the big job")  # type: ignore[union-attr]
        assert len(calls) > 1 and not peer.closed.is_set()
        await peer.close()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        (attempt,) = sj.attempts(svc.store.conn, big)
        assert attempt["outcome"] == "failure" and "too big to send" in attempt["error"]

    asyncio.run(scenario())
    svc.writer.close()
    svc.store.close()


def test_mdns_sightings_are_bounded_and_a_moved_poller_is_no_longer_dialled_at_its_old_address(
        tmp_path: Path) -> None:
    """mDNS is unauthenticated (the cluster id is public): a flood of records must not make the scheduler dial
    without end, and a poller whose address changed must not leave a dial loop behind at the old one."""
    from ashjobs.cluster import node as node_mod

    svc, _, _ = _services(tmp_path, ["scheduler"], FakeClock(time.time()))

    def sighting(name: str, port: int) -> dict[str, Any]:
        return {"node": name, "role": ["poller"], "addresses": ["127.0.0.1"], "port": port, "partition": "p1",
                "domains": [], "cap": 1, "cluster": "x"}

    async def scenario() -> None:
        node = ClusterNode(svc)
        runner = asyncio.create_task(node.run())
        await _until(lambda: node.server is not None, "the server")
        assert node.dispatcher is not None
        node.seen("added", sighting("moving", 1))
        node.seen("updated", sighting("moving", 2))  # a new address (DHCP)
        await asyncio.sleep(0.05)
        dials = {k for k, t in node._dials.items() if not t.done()}
        assert dials == {"dispatch 127.0.0.1:2"}
        assert [r["address"] for r in node.dispatcher.registry.rows()] == ["127.0.0.1:2"]
        for i in range(node_mod.MAX_MDNS_PEERS + 50):
            node.seen("added", sighting(f"forged{i}", 100 + i))
        assert len(node._dials) <= node_mod.MAX_MDNS_PEERS
        node.seen("removed", sighting("moving", 2))
        await asyncio.sleep(0.05)
        assert "dispatch 127.0.0.1:2" not in node._dials
        assert "127.0.0.1:2" not in {r["address"] for r in node.dispatcher.registry.rows()}
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        assert not [t for t in node._tasks if not t.done()]

    asyncio.run(scenario())
    svc.writer.close()
    svc.store.close()


def test_absurd_numbers_from_a_peer_do_not_break_the_registry_snapshot(tmp_path: Path) -> None:
    """msgpack carries integers up to 2**64-1; SQLite's stop at 2**63-1. A capacity or load that large is
    clamped, so the `peers` snapshot is still written."""
    from ashjobs.store import peers as sp

    svc, secret, port = _services(tmp_path, ["scheduler"], FakeClock(time.time()))

    async def scenario() -> None:
        node = ClusterNode(svc)
        runner = asyncio.create_task(node.run())
        await _until(lambda: node.server is not None, "the server")
        peer = await rpc.connect("127.0.0.1", port, secret=secret, node="huge", handlers={},
                                 info={"roles": ["poller"], "link": "register", "partition": "p1", "cap": 2**64 - 1})
        await peer.call("heartbeat", {"leases": [], "in_flight": 2**64 - 1}, timeout=5)
        await _until(lambda: [r["node"] for r in sp.list_peers(svc.store.conn)] == ["huge"], "the snapshot")
        assert not runner.done()
        await peer.close()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    asyncio.run(scenario())
    svc.writer.close()
    svc.store.close()


def test_a_poller_heartbeats_at_least_thrice_per_lease_ttl_of_its_scheduler(tmp_path: Path) -> None:
    """The poller's own lease_ttl is 2 s (heartbeat every 0.67 s); its scheduler's is 0.3 s. With the poller's
    pace every lease would expire between two heartbeats: it must follow the scheduler's TTL."""
    svc, secret, port = _services(tmp_path, ["poller"], FakeClock(time.time()))
    beats: list[float] = []

    async def heartbeat(peer: rpc.Peer, params: dict[str, Any]) -> dict[str, Any]:
        beats.append(time.monotonic())
        return {"stop": []}

    async def scenario() -> None:
        node = ClusterNode(svc)
        runner = asyncio.create_task(node.run())
        await _until(lambda: node.server is not None, "the server")
        sched = await rpc.connect("127.0.0.1", port, secret=secret, node="sched", handlers={"heartbeat": heartbeat},
                                  info={"roles": ["scheduler"], "link": "dispatch", "lease_ttl": 0.3})
        await _until(lambda: beats, "a first heartbeat")
        # At the poller's own pace the next 6 would take 4 s; at a third of 0.3 s, 0.6 s.
        await _until(lambda: len(beats) >= 7, "six more heartbeats", timeout=2.5)
        await sched.close()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    asyncio.run(scenario())
    svc.writer.close()
    svc.store.close()


def test_an_ipv6_poller_seen_over_mdns_is_dialled_at_a_bracketed_address(tmp_path: Path) -> None:
    svc, _, _ = _services(tmp_path, ["scheduler"], FakeClock(time.time()))

    async def scenario() -> None:
        node = ClusterNode(svc)
        runner = asyncio.create_task(node.run())
        await _until(lambda: node.server is not None, "the server")
        node.seen("added", {"node": "v6", "role": ["poller"], "addresses": ["::1"], "port": 9, "partition": "p1",
                            "domains": [], "cap": 1, "cluster": "x"})
        await asyncio.sleep(0.2)
        task = node._dials["dispatch [::1]:9"]
        assert not task.done()  # still redialling; "::1:9" would have killed it with a parse error
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    asyncio.run(scenario())
    svc.writer.close()
    svc.store.close()


def test_both_ends_of_an_rpc_connection_have_keepalive_and_a_user_timeout() -> None:
    import socket

    async def scenario() -> None:
        server = await rpc.serve("127.0.0.1", 0, secret=b"s" * 32, node="srv", info={}, handlers={})
        client = await rpc.connect("127.0.0.1", server.port, secret=b"s" * 32, node="cli", info={}, handlers={})
        await _until(lambda: server.peers, "the server side")
        for peer in (client, next(iter(server.peers))):
            sock = peer._writer.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == rpc.USER_TIMEOUT_MS
        await client.close()
        await server.close()

    asyncio.run(scenario())
