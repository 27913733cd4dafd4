"""Several `ashjobs run` daemons on 127.0.0.1 with static peers: a cluster for tests and bench/bench_cluster.py."""

from __future__ import annotations

import json
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import Cli, Daemon


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    root: Path
    name: str
    roles: list[str]
    partition: str = "default"
    domains: list[str] = field(default_factory=list)
    capacity: int = 4
    peers: list[str] = field(default_factory=list)
    scheduler: str | None = None
    lease_ttl: str = "2s"
    secret: Path | None = None
    extra: str = ""
    discovery: list[str] = field(default_factory=lambda: ["static"])  # no mDNS in the root namespace
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.dir = self.root / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "ashjobs.toml"
        self.write_config()
        self.cli = Cli(self.dir, self.config)
        self.daemon = Daemon(self.cli)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def write_config(self) -> None:
        cluster = {"listen": self.address, "discovery": self.discovery, "peers": self.peers, "lease_ttl": self.lease_ttl,
                   "secret_file": str(self.secret or self.root / "cluster.secret")}
        if self.scheduler:
            cluster["scheduler"] = self.scheduler
        lines = ["[node]", f"name = {json.dumps(self.name)}", f"roles = {json.dumps(self.roles)}",
                 f"partition = {json.dumps(self.partition)}", f"domains = {json.dumps(self.domains)}",
                 f"capacity = {self.capacity}", 'grace_period = "2s"', "", "[cluster]"]
        lines += [f"{k} = {json.dumps(v)}" for k, v in cluster.items()]
        self.config.write_text("\n".join(lines) + "\n" + self.extra)

    def start(self, wait: bool = True) -> Node:
        self.daemon.start(wait=wait)
        return self

    def stop(self) -> None:
        self.daemon.stop()


def make_secret(root: Path) -> Path:
    from ashjobs.cluster.secret import create_secret

    path = root / "cluster.secret"
    if not path.exists():
        create_secret(path)
    return path


def start_all(nodes: list[Node]) -> None:
    for n in nodes:
        n.start(wait=False)
    for n in nodes:
        n.daemon.wait_ready()


def attempts_nodes(job: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["node"], a["outcome"]) for a in job.get("attempts", [])]


def lease_of(node: Node, job_id: int) -> dict[str, Any] | None:
    """The job's lease read straight from the scheduler's file: quicker than a CLI round trip when a test must
    act while the job is still running."""
    import sqlite3

    with sqlite3.connect(f"file:{node.dir / 'ashjobs.db'}?mode=ro", uri=True, timeout=5) as conn:
        row = conn.execute("SELECT lease_owner, lease_token FROM jobs WHERE id = ? AND state = 'executing'",
                           (job_id,)).fetchone()
    return {"node": row[0], "token": row[1]} if row else None
