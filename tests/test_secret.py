"""The cluster secret file and the [cluster] config section."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ashjobs import config
from ashjobs.cluster.config import ClusterConfig, parse_hostport
from ashjobs.cluster.secret import cluster_id, create_secret, load_secret, secret_path
from ashjobs.errors import ConfigError, UsageError


def test_create_then_load(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "cluster.secret"
    secret = create_secret(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret(path) == secret and len(secret) == 64
    assert [p.name for p in path.parent.iterdir()] == ["cluster.secret"]  # no temp file left behind


def test_create_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "cluster.secret"
    first = create_secret(path)
    with pytest.raises(UsageError, match="already exists; not overwriting"):
        create_secret(path)
    assert load_secret(path) == first
    assert [p.name for p in tmp_path.iterdir()] == ["cluster.secret"]


def test_two_secrets_differ(tmp_path: Path) -> None:
    assert create_secret(tmp_path / "a") != create_secret(tmp_path / "b")


@pytest.mark.parametrize(("mode", "who"), [(0o644, "others"), (0o640, "its group"), (0o604, "others")])
def test_readable_by_others_is_refused(tmp_path: Path, mode: int, who: str) -> None:
    path = tmp_path / "cluster.secret"
    create_secret(path)
    os.chmod(path, mode)
    with pytest.raises(ConfigError) as e:
        load_secret(path)
    assert str(e.value) == f"{path}: mode {mode:04o} is readable by {who}; chmod 600 {path}"


def test_missing_short_and_odd_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not found .*ashjobs init"):
        load_secret(tmp_path / "nope")
    short = tmp_path / "short"
    short.write_bytes(b"abc\n")
    short.chmod(0o600)
    with pytest.raises(ConfigError, match="too short"):
        load_secret(short)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_secret(tmp_path)


def test_cluster_id_is_short_stable_and_reveals_nothing() -> None:
    a, b = b"a" * 32, b"b" * 32
    assert cluster_id(a) == cluster_id(a)
    assert cluster_id(a) != cluster_id(b)
    assert len(cluster_id(a)) == 12 and int(cluster_id(a), 16) >= 0
    assert cluster_id(a) not in a.hex()


# -- [cluster] config -------------------------------------------------------------------------------------


def test_defaults() -> None:
    cfg = config.from_dict({}, data_dir="/d")
    cl = cfg.section("cluster")
    assert isinstance(cl, ClusterConfig)
    assert cl.listen_addr == ("0.0.0.0", 7420)
    assert cl.discovery == ["mdns", "static"]
    assert cl.lease_ttl == 10.0 and abs(cl.heartbeat_interval - 10 / 3) < 1e-9
    assert cl.max_frame == 1 << 20 and not cl.tls.enabled
    assert cl.secret_path(cfg.data_dir) == Path("/d/cluster.secret") == secret_path(cfg)
    assert cl.advertise_addr is None and cl.scheduler_addr is None


def test_values() -> None:
    cfg = config.from_dict({"cluster": {
        "listen": "127.0.0.1:9000", "advertise_address": "10.0.0.5", "peers": ["10.0.0.2:7420", "host-b", "[::1]:7"],
        "scheduler": "sched.example:7421", "lease_ttl": "2s", "heartbeat": "500ms", "secret_file": "/etc/x.secret",
        "discovery": ["static"], "tls": {"cert": "c", "key": "k", "ca": "a"}}})
    cl = cfg.section("cluster")
    assert cl.peer_addrs == [("10.0.0.2", 7420), ("host-b", 7420), ("::1", 7)]
    assert cl.advertise_addr == ("10.0.0.5", 9000)
    assert cl.scheduler_addr == ("sched.example", 7421)
    assert cl.heartbeat_interval == 0.5 and cl.tls.enabled
    assert cl.secret_path("/d") == Path("/etc/x.secret") == secret_path(cfg)


@pytest.mark.parametrize(("table", "message"), [
    ({"listen": "0.0.0.0:99999"}, "cluster.listen: bad address '0.0.0.0:99999': port must be 1-65535"),
    ({"peers": ["a:1", "b:x"]}, "cluster.peers[1]: bad address 'b:x': port must be 1-65535"),
    ({"peers": [":7420"]}, "cluster.peers[0]: bad address ':7420': missing host (use host:port)"),
    ({"scheduler": "fe80::1:7420"}, "cluster.scheduler: bad address 'fe80::1:7420': write IPv6 addresses as [addr]:port"),
    ({"lease_ttl": "500ms"}, "cluster.lease_ttl: must be at least 1s, got 0.5s"),
    ({"lease_ttl": "3s", "heartbeat": "5s"}, "cluster.heartbeat: must be > 0 and shorter than lease_ttl (3s), got 5s"),
    ({"discovery": ["dns"]}, "cluster.discovery[0]: expected one of 'mdns', 'static', got 'dns'"),
    ({"max_frame": 10}, "cluster.max_frame: must be between 1024 and 67108864 bytes, got 10"),
    ({"tls": {"cert": "c"}}, "cluster.tls.cert, key and ca: set all three for mutual TLS, or none"),
])
def test_bad_values_are_one_clear_line(table: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        config.from_dict({"cluster": table}, where="a.toml")
    assert str(e.value) == f"a.toml: {message}"


def test_parse_hostport() -> None:
    assert parse_hostport("h:1") == ("h", 1)
    assert parse_hostport("[fe80::1]", 5) == ("fe80::1", 5)
    with pytest.raises(ValueError, match="missing port"):
        parse_hostport("h")
