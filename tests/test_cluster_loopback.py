"""Several real `ashjobs run` daemons on 127.0.0.1 with static peers, driven through the CLI."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_harness import Node, attempts_nodes, lease_of, make_secret, start_all

from ashjobs.cluster import rpc
from ashjobs.cluster.secret import load_secret

pytestmark = pytest.mark.slow

MATRIX = {"p1a": ("p1", ["site-a"]), "p1b": ("p1", ["site-b"]), "p2a": ("p2", ["site-a"]), "p2b": ("p2", ["site-b"])}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Node]]:
    root = tmp_path_factory.mktemp("cluster")
    make_secret(root)
    pollers = {name: Node(root, name, ["poller"], part, doms) for name, (part, doms) in MATRIX.items()}
    sched = Node(root, "sched", ["scheduler"], peers=[p.address for p in pollers.values()])
    nodes = {**pollers, "sched": sched}
    start_all(list(nodes.values()))
    yield nodes
    for n in nodes.values():
        n.stop()


def _wait_linked(sched: Node, names: set[str]) -> None:
    def linked() -> bool:
        rows = sched.cli.json("peers")
        return names <= {r["node"] for r in rows if r["state"] == "available"}

    sched.cli.wait_for(linked, 20, f"pollers {sorted(names)} available in `peers`")


def test_routing_matrix_runs_jobs_only_where_allowed(cluster: dict[str, Node]) -> None:
    sched = cluster["sched"]
    _wait_linked(sched, set(MATRIX))
    jobs: dict[int, set[str]] = {}
    for partition in ("p1", "p2"):
        for domain in ("site-a", "site-b", None):
            allowed = {n for n, (p, d) in MATRIX.items() if p == partition and (domain is None or domain in d)}
            for _ in range(2):
                opts = ["--partition", partition] + (["--domain", domain] if domain else [])
                jobs[sched.cli.enqueue("noop", {"host": f"10.0.0.{len(jobs)}"}, *opts)] = allowed
    local = sched.cli.enqueue("noop", {})  # names no partition: runs on the scheduler itself
    states = sched.cli.wait_finished([*jobs, local], timeout=30)
    assert all(states[i] == "completed" for i in [*jobs, local])
    for job_id, allowed in jobs.items():
        ran = attempts_nodes(sched.cli.job(job_id))
        assert len(ran) == 1 and ran[0][0] in allowed and ran[0][1] == "success", (job_id, ran, allowed)
    assert attempts_nodes(sched.cli.job(local)) == [("sched", "success")]


def test_job_without_candidate_waits_with_reason_then_runs_on_a_registered_poller(
        cluster: dict[str, Node], tmp_path: Path) -> None:
    sched = cluster["sched"]
    job_id = sched.cli.enqueue("noop", {}, "--partition", "p3", "--domain", "site-z")

    def waiting() -> Any:
        job = sched.cli.job(job_id)
        return job["state"] == "available" and job["meta"].get("waiting")

    reason = sched.cli.wait_for(waiting, 15, "a waiting reason")
    assert reason == "no poller for partition p3, domain site-z"
    status = sched.cli.json("status")
    assert {"reason": reason, "count": 1} in status["waiting"]
    # A poller that mDNS cannot reach registers itself with the scheduler's address.
    p3 = Node(sched.root, "p3z", ["poller"], "p3", ["site-z"], scheduler=sched.address,
              secret=sched.root / "cluster.secret")
    cluster["p3z"] = p3
    p3.start()
    assert sched.cli.wait_finished([job_id], timeout=20)[job_id] == "completed"
    assert attempts_nodes(sched.cli.job(job_id)) == [("p3z", "success")]
    assert "waiting" not in sched.cli.job(job_id)["meta"]
    _wait_linked(sched, {"p3z"})
    rows = {r["node"]: r for r in sched.cli.json("peers")}
    assert rows["p3z"]["source"] == "registered" and rows["p3z"]["partition"] == "p3"
    assert rows["p1a"]["source"] == "static" and rows["p1a"]["domains"] == ["site-a"]
    assert set(rows["p1a"]) == {"node", "address", "partition", "domains", "capacity", "in_flight", "state",
                                "last_heartbeat", "source"}


def test_wrong_secret_and_garbage_are_refused_and_the_daemon_keeps_serving(cluster: dict[str, Node],
                                                                           tmp_path: Path) -> None:
    sched = cluster["sched"]
    host, port = "127.0.0.1", sched.port

    async def intruders() -> None:
        with pytest.raises(rpc.AuthError):
            await rpc.connect(host, port, secret=b"x" * 32, node="intruder",
                              info={"roles": ["poller"], "link": "register", "partition": "p1"}, handlers={})
        # Garbage, then a frame that claims to be 2 GiB: each costs its sender the connection, nothing more.
        for junk in (b"\x00\x00\x00\x05hello" + b"\xc1" * 64, struct.pack(">I", 1 << 31) + b"x" * 16):
            r, w = await asyncio.open_connection(host, port)
            w.write(junk)
            await w.drain()
            assert await asyncio.wait_for(r.read(), 10) is not None
            w.close()

    asyncio.run(intruders())
    with socket.create_connection((host, port), timeout=5) as s:  # a peer that says nothing at all
        s.sendall(b"\x00")
        job_id = sched.cli.enqueue("noop", {}, "--partition", "p2", "--domain", "site-b")
        assert sched.cli.wait_finished([job_id], timeout=20)[job_id] == "completed"
    assert attempts_nodes(sched.cli.job(job_id)) == [("p2b", "success")]
    assert "refused" in sched.daemon.log() or "intruder" in sched.daemon.log()


@pytest.fixture
def failover(tmp_path: Path) -> Iterator[dict[str, Node]]:
    make_secret(tmp_path)
    k1 = Node(tmp_path, "k1", ["poller"], "p1", capacity=2)
    k2 = Node(tmp_path, "k2", ["poller"], "p1", capacity=2)
    sched = Node(tmp_path, "ksched", ["scheduler"], peers=[k1.address, k2.address])
    nodes = {"k1": k1, "k2": k2, "sched": sched}
    start_all(list(nodes.values()))
    yield nodes
    for n in nodes.values():
        n.stop()


def test_sigkill_of_a_poller_moves_its_job_and_fences_its_late_result(failover: dict[str, Node]) -> None:
    sched = failover["sched"]
    _wait_linked(sched, {"k1", "k2"})
    job_id = sched.cli.enqueue("sleep", {"seconds": 1.5}, "--partition", "p1")
    lease = sched.cli.wait_for(lambda: lease_of(sched, job_id), 15, "the job to run")
    victim, other = lease["node"], ({"k1", "k2"} - {lease["node"]}).pop()
    failover[victim].daemon.kill()
    assert sched.cli.wait_finished([job_id], timeout=20)[job_id] == "completed"
    job = sched.cli.job(job_id)
    assert attempts_nodes(job) == [(victim, "lost"), (other, "success")]
    assert job["attempts"][0]["error"] == f"lease expired on {victim}"
    peers = {r["node"]: r["state"] for r in sched.cli.json("peers")}
    assert peers[other] == "available"
    sched.cli.wait_for(lambda: {r["node"]: r["state"] for r in sched.cli.json("peers")}[victim] == "unavailable",
                       10, f"{victim} unavailable")

    # The dead poller's answer arrives late, with its old fencing token: refused, and told to stop.
    secret = load_secret(sched.root / "cluster.secret")

    async def late_result() -> Any:
        peer = await rpc.connect("127.0.0.1", sched.port, secret=secret, node="late", handlers={},
                                 info={"roles": ["poller"], "link": "register", "partition": "p9", "cap": 1})
        try:
            return await peer.call("result", {"results": [{"id": job_id, "token": lease["token"],
                                                           "outcome": "failure", "error": "late", "duration": 1.0}]},
                                   timeout=10)
        finally:
            await peer.close()

    reply = asyncio.run(late_result())
    assert reply["stop"] == [job_id]
    job = sched.cli.job(job_id)
    assert job["state"] == "completed" and attempts_nodes(job) == [(victim, "lost"), (other, "success")]
    assert sched.cli.json("status")["cluster"]["stale_results_refused"] == 1
    assert "stale results refused 1" in sched.cli.run("status").stdout  # the rich rendering says it too


def test_graceful_poller_stop_hands_its_job_back_without_burning_an_attempt(failover: dict[str, Node]) -> None:
    sched = failover["sched"]
    _wait_linked(sched, {"k1", "k2"})
    job_id = sched.cli.enqueue("sleep", {"seconds": 4.0}, "--partition", "p1")
    lease = sched.cli.wait_for(lambda: lease_of(sched, job_id), 15, "the job to run")
    victim = lease["node"]
    other = ({"k1", "k2"} - {victim}).pop()
    shown = sched.cli.job(job_id)["lease"]  # the current lease, while the job runs
    assert (shown["node"], shown["token"]) == (victim, lease["token"]) and shown["expires_at"]
    assert failover[victim].daemon.terminate() == 0  # grace_period 2s < the job's 4s: handed back
    assert sched.cli.wait_finished([job_id], timeout=20)[job_id] == "completed"
    job = sched.cli.job(job_id)
    assert attempts_nodes(job) == [(other, "success")] and job["attempt"] == 1
    assert "draining" in sched.daemon.log()


def test_a_restarted_scheduler_adopts_the_leases_its_pollers_still_renew(tmp_path: Path) -> None:
    make_secret(tmp_path)
    k1 = Node(tmp_path, "r1", ["poller"], "p1", lease_ttl="4s")
    sched = Node(tmp_path, "rsched", ["scheduler"], peers=[k1.address], lease_ttl="4s")
    start_all([k1, sched])
    try:
        _wait_linked(sched, {"r1"})
        job_id = sched.cli.enqueue("sleep", {"seconds": 3.0}, "--partition", "p1")
        sched.cli.wait_for(lambda: lease_of(sched, job_id), 15, "the job to run")
        sched.daemon.kill()
        sched.start()
        assert sched.cli.wait_finished([job_id], timeout=20)[job_id] == "completed"
        assert attempts_nodes(sched.cli.job(job_id)) == [("r1", "success")]
    finally:
        for n in (k1, sched):
            n.stop()


@pytest.mark.parametrize("case", ["missing secret", "secret readable by others", "TXT entry too long",
                                  "unknown mDNS interface"])
def test_a_bad_cluster_setup_is_refused_at_start_with_one_line(tmp_path: Path, case: str) -> None:
    node = Node(tmp_path, "bad", ["poller"], "p1", ["x" * 300] if case == "TXT entry too long" else [])
    node.discovery = ["mdns"]  # refused before any mDNS traffic
    if case == "unknown mDNS interface":
        node.extra = 'interfaces = ["nope0"]\n'  # appended to [cluster]
    node.write_config()
    if case != "missing secret":
        make_secret(tmp_path)
    if case == "secret readable by others":
        (tmp_path / "cluster.secret").chmod(0o644)
    p = node.cli.run("run", check=False, timeout=30)
    assert p.returncode == 2
    line = p.stderr.strip()
    assert "\n" not in line
    expected = {"missing secret": "cluster secret file not found", "secret readable by others": "chmod 600",
                "TXT entry too long": "TXT entry 'domain' would be",
                "unknown mDNS interface": "no network interface 'nope0'"}[case]
    assert expected in line
