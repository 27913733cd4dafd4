"""Several hosts in network namespaces with real mDNS: a scheduler, two P1 pollers (site-a, site-b) and a P2
poller that only mDNS can find. A poller cut off at the bridge mid-job loses the job to the other P1 poller;
healed, its late result is refused and it becomes available again."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli
from netns import NetnsLab, netns_lab  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.netns, pytest.mark.slow]

HOSTS = {1: ("sched", ["scheduler"], "default", []), 2: ("p1a", ["poller"], "p1", ["site-a"]),
         3: ("p1b", ["poller"], "p1", ["site-b"]), 4: ("p2", ["poller"], "p2", ["site-a"])}
PORT = 7420


def _config(lab: NetnsLab, i: int, secret: Path) -> str:
    name, roles, partition, domains = HOSTS[i]
    # The scheduler knows the P1 pollers' addresses; the P2 poller it can only find through mDNS.
    peers = [f"{lab.addr(j)}:{PORT}" for j in (2, 3)] if i == 1 else []
    return "\n".join([
        "[node]", f"name = {json.dumps(name)}", f"roles = {json.dumps(roles)}",
        f"partition = {json.dumps(partition)}", f"domains = {json.dumps(domains)}", "capacity = 4",
        'grace_period = "2s"', "", "[cluster]", f'listen = "{lab.addr(i)}:{PORT}"',
        'discovery = ["mdns", "static"]', f"peers = {json.dumps(peers)}", 'lease_ttl = "4s"',
        f"secret_file = {json.dumps(str(secret))}", ""])


@pytest.fixture
def hosts(netns_lab: Callable[[int], NetnsLab], tmp_path: Path) -> Iterator[tuple[NetnsLab, dict[str, Cli]]]:  # noqa: F811
    lab = netns_lab(len(HOSTS))
    from ashjobs.cluster.secret import create_secret

    secret = tmp_path / "cluster.secret"
    create_secret(secret)
    clis: dict[str, Cli] = {}
    logs = []
    for i, (name, *_) in HOSTS.items():
        d = tmp_path / name
        d.mkdir()
        cfg = d / "ashjobs.toml"
        cfg.write_text(_config(lab, i, secret))
        cli = clis[name] = Cli(d, cfg)
        log = open(d / "daemon.log", "ab")  # noqa: SIM115 - the child owns it
        logs.append(log)
        lab.popen(i, [sys.executable, "-m", "ashjobs", "run"], env=cli.env(), stdout=log, stderr=log)
    for log in logs:
        log.close()
    yield lab, clis
    for name, cli in clis.items():  # show what each host said when a test fails
        text = (cli.data_dir / "daemon.log").read_text(errors="replace")
        print(f"--- {name}\n{text[-3000:]}")


def lease_of(cli: Cli, job_id: int) -> dict[str, Any] | None:
    import sqlite3

    with sqlite3.connect(f"file:{cli.data_dir / 'ashjobs.db'}?mode=ro", uri=True, timeout=5) as conn:
        row = conn.execute("SELECT lease_owner FROM jobs WHERE id = ? AND state = 'executing'", (job_id,)).fetchone()
    return {"node": row[0]} if row else None


def _peers(cli: Cli) -> dict[str, dict[str, Any]]:
    return {r["node"]: r for r in cli.json("peers") if r["node"]}


def test_mdns_routing_and_failover_across_a_cut(hosts: tuple[NetnsLab, dict[str, Cli]]) -> None:
    lab, clis = hosts
    sched = clis["sched"]
    sched.wait_for(lambda: all(_peers(sched).get(n, {}).get("state") == "available" for n in ("p1a", "p1b", "p2")),
                   30, "three pollers available")
    assert _peers(sched)["p2"]["source"] == "mdns"
    assert _peers(sched)["p2"]["address"] == f"{lab.addr(4)}:{PORT}"

    found_by_mdns = sched.enqueue("noop", {}, "--partition", "p2", "--domain", "site-a")
    assert sched.wait_finished([found_by_mdns], 20)[found_by_mdns] == "completed"
    assert [a["node"] for a in sched.job(found_by_mdns)["attempts"]] == ["p2"]

    # It must still run when the cut lands and finish before the poller gives its lease up (lease_ttl after
    # the last heartbeat answered), so that its result exists and arrives late.
    job_id = sched.enqueue("sleep", {"seconds": 2.0}, "--partition", "p1")
    held = sched.wait_for(lambda: lease_of(sched, job_id), 20, "the sleep job to start")
    victim = held["node"]
    other = ({"p1a", "p1b"} - {victim}).pop()
    host = {"p1a": 2, "p1b": 3}[victim]
    lab.cut(host)  # silent: both ends see nothing, the victim finishes its sleep cut off
    assert sched.wait_finished([job_id], 20)[job_id] == "completed"
    job = sched.job(job_id)
    assert [(a["node"], a["outcome"]) for a in job["attempts"]] == [(victim, "lost"), (other, "success")]
    sched.wait_for(lambda: _peers(sched)[victim]["state"] == "unavailable", 10, f"{victim} unavailable")

    lab.heal(host)
    sched.wait_for(lambda: _peers(sched)[victim]["state"] == "available", 30, f"{victim} available again")

    from ashjobs.store import Store
    from ashjobs.store import peers as sp

    def refused() -> int:
        with Store(sched.data_dir / "ashjobs.db") as store:
            return sp.counter(store.conn, "stale_results_refused")

    assert sched.wait_for(refused, 20, "the late result to be refused") == 1
    job = sched.job(job_id)
    assert job["state"] == "completed"
    assert [(a["node"], a["outcome"]) for a in job["attempts"]] == [(victim, "lost"), (other, "success")]
