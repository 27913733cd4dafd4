"""Poll checks: built-in tasks run on pollers (routed). Each returns a small result and raises a one-line error
when the target is not healthy, so every run is a job attempt with its outcome in history.

- `tcp`: a TCP connect to host:port succeeds within the timeout.
- `http`: a request to url answers with `expect_status` (redirects are not followed: a 301 is a 301).
- `icmp`: at least one of `count` echo requests is answered. Uses an unprivileged ICMP datagram socket where
  the kernel allows it (sysctl net.ipv4.ping_group_range), else a raw socket (CAP_NET_RAW), else the system
  `ping` binary.
The built-in `command` task (exit 0 is healthy) is the fourth check. Poll entries report each final outcome
to `ashjobs.poll.on_check_finished`, which raises and resolves alerts.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from typing import Any

from ashjobs import tasks
from ashjobs.poll import on_check_finished
from ashjobs.tasks import task

HTTP_BODY_LIMIT = 64 * 1024  # read at most this much of a checked page


class IcmpUnavailable(RuntimeError):
    """Neither an ICMP socket nor a ping binary can be used on this node."""


def _reason(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, socket.gaierror):
        return f"cannot resolve host ({e.strerror})"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return f"{type(e).__name__}: {e}"


def _timeout(value: Any, default: float) -> float:
    from ashjobs.config import parse_duration

    t = parse_duration(value) if isinstance(value, str) else float(default if value is None else value)
    if t <= 0:
        raise ValueError(f"timeout must be > 0, got {value!r}")
    return t


@task("tcp", routed=True, max_attempts=1, on_finish=on_check_finished)
async def tcp(host: str, port: int, timeout: str | float | None = None) -> dict[str, Any]:
    limit = _timeout(timeout, 5.0)
    started = time.monotonic()
    try:
        async with asyncio.timeout(limit):  # not wait_for: on 3.11 it can swallow a racing cancel (a stop)
            _, writer = await asyncio.open_connection(host, int(port))
    except (OSError, TimeoutError) as e:
        raise RuntimeError(f"tcp {host}:{port}: {_reason(e)}") from None
    rtt = time.monotonic() - started
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return {"host": host, "port": int(port), "connect_ms": round(rtt * 1000, 3)}


def _http_request(url: str, method: str, limit: float) -> tuple[int, float]:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"http: 'url' must be an http:// or https:// URL with a host, got {url!r}")
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(parts.hostname, parts.port, timeout=limit)
    started = time.monotonic()
    try:
        conn.request(method, (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                     headers={"User-Agent": "ashjobs-check"})
        resp = conn.getresponse()
        resp.read(HTTP_BODY_LIMIT)
        return resp.status, time.monotonic() - started
    finally:
        conn.close()


@task("http", routed=True, max_attempts=1, on_finish=on_check_finished)
async def http(url: str, expect_status: int = 200, timeout: str | float | None = None,
               method: str = "GET") -> dict[str, Any]:
    import http.client

    limit = _timeout(timeout, 10.0)
    try:
        async with asyncio.timeout(limit + 1):
            status, elapsed = await asyncio.to_thread(_http_request, url, method, limit)
    except (OSError, TimeoutError, http.client.HTTPException) as e:
        raise RuntimeError(f"http {url}: {_reason(e)}") from None
    if status != int(expect_status):
        raise RuntimeError(f"http {url}: status {status}, expected {expect_status}")
    return {"url": url, "status": status, "response_ms": round(elapsed * 1000, 3)}


# --- icmp -----------------------------------------------------------------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int, payload: bytes, *, v6: bool) -> bytes:
    """An ICMP (v4) or ICMPv6 echo request. The kernel fills in the ICMPv6 checksum itself."""
    kind = 128 if v6 else 8
    header = struct.pack("!BBHHH", kind, 0, 0, ident, seq)
    if v6:
        return header + payload
    return struct.pack("!BBHHH", kind, 0, _checksum(header + payload), ident, seq) + payload


def is_echo_reply(packet: bytes, seq: int, payload: bytes, *, v6: bool, ip_header: bool) -> bool:
    """Does `packet` answer our request `seq` (matched by sequence and payload; a datagram socket's kernel
    rewrites the identifier, and a raw socket also sees every other ICMP packet on the host)?"""
    if ip_header and packet:
        packet = packet[(packet[0] & 0x0F) * 4:]
    if len(packet) < 8:
        return False
    kind, _, _, _, got_seq = struct.unpack("!BBHHH", packet[:8])
    return kind == (129 if v6 else 0) and got_seq == seq and packet[8:] == payload


def _icmp_socket(family: int) -> tuple[socket.socket, str]:
    proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
    try:
        return socket.socket(family, socket.SOCK_DGRAM, proto), "socket"
    except PermissionError:
        return socket.socket(family, socket.SOCK_RAW, proto), "raw"


async def _ping_with_socket(address: str, family: int, count: int, limit: float) -> tuple[int, list[float], str]:
    loop = asyncio.get_running_loop()
    sock, method = _icmp_socket(family)
    v6 = family == socket.AF_INET6
    ident = os.getpid() & 0xFFFF
    rtts: list[float] = []
    with sock:
        sock.setblocking(False)
        for seq in range(1, count + 1):
            payload = os.urandom(16)
            started = time.monotonic()
            await loop.sock_sendto(sock, echo_request(ident, seq, payload, v6=v6), (address, 0))
            deadline = started + limit
            while (remaining := deadline - time.monotonic()) > 0:
                try:
                    async with asyncio.timeout(remaining):
                        packet, _ = await loop.sock_recvfrom(sock, 2048)
                except TimeoutError:
                    break
                if is_echo_reply(packet, seq, payload, v6=v6, ip_header=method == "raw" and not v6):
                    rtts.append(time.monotonic() - started)
                    break
    return count, rtts, method


async def _ping_binary(host: str, count: int, limit: float) -> tuple[int, list[float], str]:
    import math
    import re
    import shutil

    ping = shutil.which("ping")
    if ping is None:
        raise IcmpUnavailable("icmp: no unprivileged ICMP socket (see sysctl net.ipv4.ping_group_range), "
                              "no raw socket (needs CAP_NET_RAW) and no `ping` binary on this node")
    proc = await asyncio.create_subprocess_exec(
        ping, "-n", "-c", str(count), "-W", str(max(1, math.ceil(limit))), host,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    try:
        async with asyncio.timeout(count * (limit + 1) + 2):
            out, _ = await proc.communicate()
    except (TimeoutError, asyncio.CancelledError):
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        await proc.wait()
        raise
    text = out.decode(errors="replace")
    rtts = [float(m) / 1000 for m in re.findall(r"time[=<]([\d.]+) ?ms", text)]
    if proc.returncode not in (0, 1):  # 1: no reply; anything else: ping itself failed
        raise RuntimeError(f"icmp {host}: ping failed: {text.strip()[-300:]}")
    return count, rtts, "ping"


async def icmp_echo(host: str, count: int = 3, timeout: float = 2.0) -> dict[str, Any]:
    """Send `count` echo requests, each waiting up to `timeout` for its reply."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except socket.gaierror as e:
        raise RuntimeError(f"icmp {host}: {_reason(e)}") from None
    family, _, _, _, sockaddr = infos[0]
    address = str(sockaddr[0])
    try:
        sent, rtts, method = await _ping_with_socket(address, family, count, timeout)
    except PermissionError:
        sent, rtts, method = await _ping_binary(address, count, timeout)
    except OSError as e:  # e.g. network unreachable: no route to the target
        raise RuntimeError(f"icmp {host}: {_reason(e)}") from None
    if not rtts:
        raise RuntimeError(f"icmp {host}: no reply to {sent} echo request{'s' if sent > 1 else ''} "
                           f"within {timeout:g}s each")
    return {"host": host, "address": address, "sent": sent, "received": len(rtts), "method": method,
            "rtt_ms_avg": round(sum(rtts) / len(rtts) * 1000, 3)}


@task("icmp", routed=True, max_attempts=1, on_finish=on_check_finished)
async def icmp(host: str, count: int = 3, timeout: str | float | None = None) -> dict[str, Any]:
    if not 1 <= int(count) <= 100:
        raise ValueError(f"icmp: 'count' must be within 1..100, got {count!r}")
    return await icmp_echo(host, int(count), _timeout(timeout, 2.0))


# A [[poll]] entry may use the built-in `command` task as its check; it reports to the same hook.
_command = tasks.get("command")
if _command.on_finish is None:
    _command.on_finish = on_check_finished
