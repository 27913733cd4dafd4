"""Poll checks against real loopback targets: listening and closed ports, a local HTTP server, ICMP."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from ashjobs import tasks
from ashjobs.tasks import checks
from tests.notify_helpers import Receiver


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def listening_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture
def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # bound, never listening, then closed: connects are refused


def test_checks_are_registered_routed():
    for name in ("tcp", "http", "icmp"):
        t = tasks.get(name)
        assert t.routed and t.on_finish is not None and t.max_attempts == 1
    assert tasks.get("command").on_finish is not None


def test_tcp_connects_to_a_listening_port(listening_port):
    result = run(checks.tcp("127.0.0.1", listening_port, timeout="2s"))
    assert result["port"] == listening_port and result["connect_ms"] >= 0


def test_tcp_to_a_closed_port_fails_clearly(closed_port):
    with pytest.raises(RuntimeError, match=rf"^tcp 127\.0\.0\.1:{closed_port}: connection refused$"):
        run(checks.tcp("127.0.0.1", closed_port, timeout=2))


def test_tcp_unknown_host_fails_clearly():
    with pytest.raises(RuntimeError, match=r"^tcp no-such-host\.invalid:80: cannot resolve host"):
        run(checks.tcp("no-such-host.invalid", 80, timeout=5))


def test_http_against_the_local_server():
    with Receiver() as rx:
        url = rx.url
        rx.statuses = [200, 503, 503]
        assert run(checks.http(url, timeout="2s"))["status"] == 200
        with pytest.raises(RuntimeError, match=r"status 503, expected 200$"):
            run(checks.http(url, timeout=2))
        assert run(checks.http(url, expect_status=503, timeout=2))["status"] == 503


def test_http_refused_and_bad_url(closed_port):
    with pytest.raises(RuntimeError, match=rf"^http http://127\.0\.0\.1:{closed_port}/: connection refused"):
        run(checks.http(f"http://127.0.0.1:{closed_port}/", timeout=2))
    with pytest.raises(ValueError, match="must be an http:// or https:// URL"):
        run(checks.http("gopher://x/", timeout=2))


def test_echo_request_and_reply_matching():
    payload = b"0123456789abcdef"
    req = checks.echo_request(0x1234, 7, payload, v6=False)
    assert checks._checksum(req) == 0  # a valid ICMP checksum sums to zero
    reply = bytes([0]) + req[1:]  # type 0: echo reply, same id, seq, payload
    assert checks.is_echo_reply(reply, 7, payload, v6=False, ip_header=False)
    assert not checks.is_echo_reply(req, 7, payload, v6=False, ip_header=False)  # our own request
    assert not checks.is_echo_reply(reply, 8, payload, v6=False, ip_header=False)
    assert not checks.is_echo_reply(reply, 7, b"other payload...", v6=False, ip_header=False)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(reply), 0, 0, 64, 1, 0, b"\x7f\0\0\1", b"\x7f\0\0\1")
    assert checks.is_echo_reply(ip + reply, 7, payload, v6=False, ip_header=True)
    v6 = checks.echo_request(1, 2, payload, v6=True)
    assert v6[0] == 128 and checks.is_echo_reply(bytes([129]) + v6[1:], 2, payload, v6=True, ip_header=False)


def test_icmp_to_loopback():
    try:
        result = run(checks.icmp("127.0.0.1", count=2, timeout="2s"))
    except checks.IcmpUnavailable as e:
        pytest.skip(str(e))
    assert result["received"] >= 1 and result["address"] == "127.0.0.1"
    assert result["method"] in ("socket", "raw", "ping")


def test_icmp_without_reply_fails_clearly():
    try:
        run(checks.icmp("127.0.0.1", count=1, timeout="1s"))
    except checks.IcmpUnavailable as e:
        pytest.skip(str(e))
    # 203.0.113.0/24 is TEST-NET-3 (RFC 5737): documentation only, nothing answers there.
    with pytest.raises(RuntimeError, match=r"^icmp 203\.0\.113\.1: (no reply to 2 echo requests within 0\.3s each"
                       r"|network is unreachable|no route to host)$"):
        run(checks.icmp("203.0.113.1", count=2, timeout="300ms"))


def test_icmp_bad_count():
    with pytest.raises(ValueError, match="count"):
        run(checks.icmp("127.0.0.1", count=0))
