"""Mutual TLS end to end: a scheduler and a poller, two real `ashjobs run` daemons with `[cluster.tls]`.

A routed job completes over the TLS link; a peer holding the cluster secret but a certificate from another CA,
or speaking plain TCP, is refused by both daemons, which keep serving.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_harness import Node, attempts_nodes, make_secret, start_all

from ashjobs.cluster import rpc
from ashjobs.cluster.secret import load_secret

pytestmark = pytest.mark.slow


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _make_pki(d: Path) -> None:
    """Two throwaway CAs (ours and a rogue one) and a cert from each; EC keys: quick to make."""
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "rogue"):
        _openssl("req", "-x509", *key, "-days", "2", "-subj", f"/CN={ca}", "-keyout", f"{ca}.key",
                 "-out", f"{ca}.crt", cwd=d)
    for name, ca in (("node", "ca"), ("intruder", "rogue")):
        _openssl("req", *key, "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
                 "-CAcreateserial", "-days", "2", "-out", f"{name}.crt", cwd=d)


def _tls(pki: Path) -> str:
    return (f'\n[cluster.tls]\ncert = "{pki / "node.crt"}"\nkey = "{pki / "node.key"}"\n'
            f'ca = "{pki / "ca.crt"}"\n')


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not shutil.which("openssl"):
        pytest.skip("the openssl command is not available to make throwaway test certificates")
    d = tmp_path_factory.mktemp("pki")
    _make_pki(d)
    return d


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory, pki: Path) -> Iterator[tuple[Node, Node, Path]]:
    root = tmp_path_factory.mktemp("tls")
    make_secret(root)
    poller = Node(root, "tp1", ["poller"], "p1", ["site-a"], extra=_tls(pki))
    sched = Node(root, "tsched", ["scheduler"], peers=[poller.address], extra=_tls(pki))
    start_all([poller, sched])
    yield sched, poller, pki
    for n in (sched, poller):
        n.stop()


def test_a_routed_job_completes_over_mutual_tls(tls_cluster: tuple[Node, Node, Path]) -> None:
    sched, _, _ = tls_cluster
    sched.cli.wait_for(lambda: any(r["node"] == "tp1" and r["state"] == "available" for r in sched.cli.json("peers")),
                       20, "the TLS poller available")
    job_id = sched.cli.enqueue("noop", {"host": "10.0.0.1"}, "--partition", "p1", "--domain", "site-a")
    assert sched.cli.wait_finished([job_id], timeout=20)[job_id] == "completed"
    assert attempts_nodes(sched.cli.job(job_id)) == [("tp1", "success")]


def test_a_cert_from_another_ca_or_plain_tcp_is_refused(tls_cluster: tuple[Node, Node, Path]) -> None:
    sched, poller, pki = tls_cluster
    secret = load_secret(sched.root / "cluster.secret")  # the right secret: only the certificate is wrong
    _, rogue = rpc.tls_contexts(str(pki / "intruder.crt"), str(pki / "intruder.key"), str(pki / "ca.crt"))
    _, good = rpc.tls_contexts(str(pki / "node.crt"), str(pki / "node.key"), str(pki / "ca.crt"))

    async def dial(port: int, ssl: object, link: str = "register") -> rpc.Peer:
        return await rpc.connect("127.0.0.1", port, secret=secret, node="intruder", handlers={}, timeout=3,
                                 info={"roles": ["poller"] if link == "register" else [], "link": link,
                                       "partition": "p1"}, ssl=ssl)  # type: ignore[arg-type]

    async def intruders() -> None:
        for port in (sched.port, poller.port):
            with pytest.raises((OSError, ConnectionError)):  # ssl.SSLError and TimeoutError are OSErrors
                await dial(port, rogue)
            with pytest.raises((OSError, ConnectionError)):
                await dial(port, None)
        # The same dial with a cert from the cluster's CA gets in: the refusals above were the certificate's.
        peer = await dial(sched.port, good, link="probe")  # a probe the scheduler then drops: not a poller
        assert peer.remote_node == "tsched"
        await peer.close()

    asyncio.run(intruders())
    job_id = sched.cli.enqueue("noop", {}, "--partition", "p1")
    assert sched.cli.wait_finished([job_id], timeout=20)[job_id] == "completed"
    assert attempts_nodes(sched.cli.job(job_id)) == [("tp1", "success")]
    assert "intruder" not in {r["node"] for r in sched.cli.json("peers")}


@pytest.mark.parametrize("case", ["missing file", "key of another cert"])
def test_unusable_tls_files_are_refused_at_start_with_one_line(tmp_path: Path, pki: Path, case: str) -> None:
    make_secret(tmp_path)
    key = pki / ("nope.key" if case == "missing file" else "intruder.key")
    extra = f'\n[cluster.tls]\ncert = "{pki / "node.crt"}"\nkey = "{key}"\nca = "{pki / "ca.crt"}"\n'
    node = Node(tmp_path, "badtls", ["poller"], "p1", extra=extra)
    p = node.cli.run("run", check=False, timeout=30)
    assert p.returncode == 2
    line = p.stderr.strip()
    assert "\n" not in line and line.startswith("ashjobs: cluster.tls"), line
    assert ("nope.key: no such file" if case == "missing file" else "cannot use") in line
