"""End to end: `ashjobs run` (scheduler + poller on loopback) runs a [[poll]] tcp check every second; two failures
raise an alert for the poll's partition, and the first success after the port opens resolves it."""

from __future__ import annotations

import importlib.util
import json
import socket
from pathlib import Path

import pytest

from tests.conftest import Cli, Daemon


def _have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its package is absent
        return False


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (_have("ashjobs.cluster.node") and _have("ashjobs.apps.alerts")),
                       reason="needs the cluster (helper coord) and the alert resource (helper triggers)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_poll_raises_and_resolves_an_alert(tmp_path: Path, daemons: list[Daemon]) -> None:
    from ashjobs.cluster.secret import create_secret

    secret = tmp_path / "cluster.secret"
    create_secret(secret)
    target = free_port()  # closed until the test opens it
    listen = free_port()
    config = tmp_path / "ashjobs.toml"
    config.write_text(f"""
[node]
name = "edge-1"
roles = ["scheduler", "poller"]
partition = "p1"
grace_period = "2s"

[cluster]
listen = "127.0.0.1:{listen}"
discovery = ["static"]
secret_file = {json.dumps(str(secret))}
lease_ttl = "2s"

[[poll]]
name = "router-ssh"
check = "tcp"
args = {{ host = "127.0.0.1", port = {target} }}
partition = "p1"
every = "1s"
timeout = "1s"
fail_threshold = 2
""")
    data = tmp_path / "data"
    data.mkdir()
    cli = Cli(data, config)
    daemon = Daemon(cli)
    daemons.append(daemon)
    daemon.start()

    def poll_alerts() -> list[dict]:
        from ashjobs.apps.alerts import list_alerts
        from ashjobs.store import Store

        with Store(data / "ashjobs.db") as store:
            return [a for a in list_alerts(store.conn) if a["source"] == "router-ssh"]

    def open_alerts() -> list[dict]:
        return [a for a in poll_alerts() if a["status"] != "resolved"]

    (alert,) = cli.wait_for(open_alerts, 30, "an alert after 2 failed checks")
    assert alert["partition"] == "p1" and alert["severity"] == "critical"
    failed = [j for j in cli.json("jobs", "list", "--limit", "1000") if j["task"] == "tcp"]
    assert failed and all(j["partition"] == "p1" for j in failed)
    assert any(j["state"] == "discarded" and "connection refused" in json.dumps(j["errors"]) for j in failed)

    with socket.socket() as server:
        server.bind(("127.0.0.1", target))
        server.listen(16)
        cli.wait_for(lambda: not open_alerts(), 30, "the alert to be resolved once the port listens")
    (resolved,) = [a for a in poll_alerts() if a["id"] == alert["id"]]
    assert resolved["status"] == "resolved"
    assert len(open_alerts()) == 0
