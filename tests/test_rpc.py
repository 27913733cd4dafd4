"""The RPC transport on real loopback sockets: calls both ways, authentication, hostile peers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import struct
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from ashjobs.cluster import rpc
from ashjobs.cluster.rpc import AuthError, ConnectionLost, Peer, RpcError

SECRET = b"s" * 32
OTHER = b"o" * 32
ROOT = Path(__file__).resolve().parent.parent


def run(coro: Any) -> Any:
    return asyncio.run(coro)


class Calls:
    """Handlers for a test node that record every call they run."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.gate = asyncio.Event()

    def handlers(self) -> dict[str, rpc.Handler]:
        async def echo(peer: Peer, params: dict[str, Any]) -> Any:
            self.seen.append(("echo", params))
            return {"echo": params, "from": peer.remote_node}

        async def boom(peer: Peer, params: dict[str, Any]) -> Any:
            self.seen.append(("boom", params))
            raise KeyError("no such thing")

        async def stale(peer: Peer, params: dict[str, Any]) -> Any:
            raise RpcError("stale_token", "token 3 < 4")

        async def hang(peer: Peer, params: dict[str, Any]) -> Any:
            self.seen.append(("hang", params))
            await self.gate.wait()
            return "late"

        async def unpackable(peer: Peer, params: dict[str, Any]) -> Any:
            return object()

        async def note(peer: Peer, params: dict[str, Any]) -> None:
            self.seen.append(("note", params))

        return {"echo": echo, "boom": boom, "stale": stale, "hang": hang, "unpackable": unpackable,
                "note": note}


@contextlib.asynccontextmanager
async def serving(secret: bytes = SECRET, **kw: Any) -> AsyncIterator[tuple[rpc.Server, Calls, list[Peer]]]:
    calls = Calls()
    peers: list[Peer] = []
    server = await rpc.serve("127.0.0.1", 0, secret=secret, node="sched", info={"role": "scheduler"},
                             handlers=calls.handlers(), on_peer=peers.append, **kw)
    try:
        yield server, calls, peers
    finally:
        await server.close()


async def dial(port: int, secret: bytes = SECRET, node: str = "poller-1", **kw: Any) -> tuple[Peer, Calls]:
    calls = Calls()
    peer = await rpc.connect("127.0.0.1", port, secret=secret, node=node, info={"partition": "p1"},
                             handlers=calls.handlers(), **kw)
    return peer, calls


async def raw_authenticated(port: int, secret: bytes = SECRET) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client that completes the real handshake, then writes whatever a test wants."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await rpc._handshake(reader, writer, secret=secret, node="raw", info={}, role="client", idle_timeout=30.0,
                         max_frame=rpc.MAX_FRAME, where="test")
    return reader, writer


async def closed_by_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Read until the server closes us (whatever it sent first); the bound only keeps a broken test finite."""
    try:
        async with asyncio.timeout(10):
            while await reader.read(65536):
                pass
    except ConnectionResetError:
        pass
    writer.close()
    return True


async def still_serves(port: int) -> None:
    peer, _ = await dial(port, node="good")
    assert await peer.call("echo", {"x": 1}, timeout=5) == {"echo": {"x": 1}, "from": "good"}
    await peer.close()


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


# -- calls ---------------------------------------------------------------------------------------------


def test_calls_and_notifications_go_both_ways() -> None:
    async def main() -> None:
        async with serving() as (server, scalls, peers):
            client, ccalls = await dial(server.port)
            assert client.remote_node == "sched" and client.remote_info == {"role": "scheduler"}
            assert await client.call("echo", {"a": [1, 2], "b": b"\x00"}, timeout=5) == {
                "echo": {"a": [1, 2], "b": b"\x00"}, "from": "poller-1"}
            (sp,) = peers
            assert sp.remote_node == "poller-1" and sp.remote_info == {"partition": "p1"}
            assert await sp.call("echo", {"job": 7}, timeout=5) == {"echo": {"job": 7}, "from": "sched"}
            await client.notify("note", {"n": 1})
            await sp.notify("note", {"n": 2})
            # a call after each notification proves the notification was read (one ordered stream)
            await client.call("echo", {}, timeout=5)
            await sp.call("echo", {}, timeout=5)
            await asyncio.sleep(0)
            assert ("note", {"n": 1}) in scalls.seen and ("note", {"n": 2}) in ccalls.seen
            many = await asyncio.gather(*(client.call("echo", {"i": i}, timeout=5) for i in range(200)))
            assert [m["echo"]["i"] for m in many] == list(range(200))
            await client.close()
            await sp.closed.wait()
            assert server.peers == set()

    run(main())


def test_handler_errors_become_rpc_errors_and_the_connection_survives(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with serving() as (server, _, _):
            client, _ = await dial(server.port)
            with pytest.raises(RpcError) as e:
                await client.call("boom", {}, timeout=5)
            assert e.value.code == "handler_error" and "KeyError" in e.value.message
            with pytest.raises(RpcError) as e:
                await client.call("stale", {}, timeout=5)
            assert (e.value.code, e.value.message) == ("stale_token", "token 3 < 4")
            with pytest.raises(RpcError) as e:
                await client.call("nope", {}, timeout=5)
            assert e.value.code == "no_such_method"
            with pytest.raises(RpcError) as e:
                await client.call("unpackable", {}, timeout=5)
            assert e.value.code == "bad_result"
            assert await client.call("echo", {}, timeout=5) == {"echo": {}, "from": "poller-1"}
            await client.close()

    run(main())
    assert "handler 'boom' failed" in caplog.text


def test_call_timeout_leaves_the_connection_usable() -> None:
    async def main() -> None:
        async with serving() as (server, scalls, _):
            client, _ = await dial(server.port)
            with pytest.raises(TimeoutError):
                await client.call("hang", {}, timeout=0.2)
            scalls.gate.set()  # the late answer arrives and is ignored
            assert await client.call("echo", {"after": True}, timeout=5) == {"echo": {"after": True},
                                                                              "from": "poller-1"}
            await client.close()

    run(main())


def test_pending_call_fails_when_the_connection_closes() -> None:
    async def main() -> None:
        async with serving() as (server, scalls, peers):
            client, _ = await dial(server.port)
            pending = asyncio.create_task(client.call("hang", {}, timeout=60))
            while not scalls.seen:
                await asyncio.sleep(0.01)
            await peers[0].close()
            with pytest.raises(ConnectionLost):
                await pending
            await client.closed.wait()
            with pytest.raises(ConnectionLost):
                await client.call("echo", {}, timeout=5)

    run(main())


SERVER_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from ashjobs.cluster import rpc
    async def hang(peer, params):
        await asyncio.Event().wait()
    async def main():
        s = await rpc.serve("127.0.0.1", 0, secret=b"s" * 32, node="doomed", info={}, handlers={"hang": hang})
        print(s.port, flush=True)
        await asyncio.Event().wait()
    asyncio.run(main())
""")


def test_pending_call_fails_fast_when_the_peer_process_is_killed() -> None:
    proc = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())

        async def main() -> None:
            client, _ = await dial(port)
            pending = asyncio.create_task(client.call("hang", {}, timeout=60))
            await asyncio.sleep(0.1)
            os.kill(proc.pid, signal.SIGKILL)
            # ConnectionLost, not the 60 s TimeoutError: the kernel's FIN/RST ends the call
            with pytest.raises(ConnectionLost):
                await pending
            assert client.closed.is_set()

        run(main())
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


# -- authentication ----------------------------------------------------------------------------------------


def test_wrong_secret_is_refused_on_both_sides(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with serving() as (server, scalls, peers):
            with pytest.raises(AuthError, match="wrong cluster secret"):
                await dial(server.port, secret=OTHER, node="intruder")
            assert scalls.seen == [] and peers == []
            await still_serves(server.port)

    caplog.set_level(logging.INFO, logger="ashjobs.cluster.rpc")
    run(main())
    refusals = [r.getMessage() for r in caplog.records if "failed authentication" in r.getMessage()]
    # the server refused the intruder and the intruder refused the server, each on its own evidence
    assert any("'intruder'" in m and "refused connection" in m for m in refusals), refusals
    assert any("'sched'" in m and "connecting to" in m for m in refusals), refusals


def test_forged_proof_runs_no_method() -> None:
    """A client that skips to requests with a made-up proof is refused before any method runs."""

    async def main() -> None:
        async with serving() as (server, scalls, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(rpc.encode({"ashjobs": 1, "node": "x", "nonce": b"n" * 32}))
            writer.write(rpc.encode({"proof": b"p" * 32}))
            writer.write(rpc.encode([0, 1, "echo", {}]))
            await writer.drain()
            assert await closed_by_server(reader, writer)
            assert scalls.seen == []
            await still_serves(server.port)

    run(main())


def test_protocol_version_mismatch_is_refused() -> None:
    async def main() -> None:
        async with serving() as (server, _, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(rpc.encode({"ashjobs": 99, "node": "future", "nonce": b"n" * 32}))
            hello = rpc.decode(await rpc.read_frame(reader, 4096), rpc._HANDSHAKE_LIMITS)
            assert hello["ashjobs"] == rpc.PROTOCOL_VERSION
            refusal = rpc.decode(await rpc.read_frame(reader, 4096), rpc._HANDSHAKE_LIMITS)
            assert "protocol v1" in refusal["refused"]
            assert await closed_by_server(reader, writer)

    run(main())


def test_connect_to_a_peer_that_never_speaks_times_out() -> None:
    async def main() -> None:
        done = asyncio.Event()

        async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # accepts TCP, says nothing until the client goes away
            writer.close()
            await writer.wait_closed()
            done.set()

        listener = await asyncio.start_server(mute, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        with pytest.raises(TimeoutError, match=f"127.0.0.1:{port}: no connection within 0.3s"):
            await dial(port, timeout=0.3)
        await done.wait()  # the client hung up on the mute server
        listener.close()
        await listener.wait_closed()

    run(main())


# -- hostile peers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("junk", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # length prefix of ~1.2 GB
    b"\x00\x00\x00\x00",  # empty frame
    frame(b"\xc1"),  # a byte msgpack never uses
    frame(msgpack.packb({"ashjobs": 1, "node": "x" * 1000, "nonce": b"n" * 32})),  # over the pre-auth str limit
    struct.pack(">I", rpc.HANDSHAKE_FRAME + 1) + b"x" * 100,  # too big before authentication
])
def test_garbage_before_auth_closes_only_that_connection(junk: bytes, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with serving() as (server, scalls, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(junk)
            await writer.drain()
            assert await closed_by_server(reader, writer)
            await still_serves(server.port)
            assert [m for m, _ in scalls.seen] == ["echo"]

    run(main())
    assert "rpc: dropped connection from 127.0.0.1:" in caplog.text


BOMBS = {
    "oversized length prefix": struct.pack(">I", rpc.MAX_FRAME + 1),
    "length prefix of 4 GiB": b"\xff\xff\xff\xff",
    "array header claiming 4G items": frame(b"\xdd\xff\xff\xff\xff"),
    "nested array headers": frame(b"\xdd\x00\x00\xff\xff" * 2000),
    "map header claiming 4G pairs": frame(b"\xdf\xff\xff\xff\xff"),
    "str header claiming 4 GiB": frame(b"\xdb\xff\xff\xff\xff" + b"x" * 100),
    "ext type": frame(msgpack.packb(msgpack.ExtType(5, b"xx"))),
    "map with a list key": frame(b"\x81\x91\x01\x01"),
    "trailing bytes": frame(msgpack.packb([2, "note", {}]) + b"\x00"),
    "not a message": frame(msgpack.packb("hello")),
    "request with list params": frame(msgpack.packb([0, 1, "echo", [1, 2]])),
    "unknown message type": frame(msgpack.packb([9, 1, 2, 3])),
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_bad_frames_after_auth_close_only_that_connection(name: str, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with serving() as (server, scalls, peers):
            other, _ = await dial(server.port, node="bystander")
            reader, writer = await raw_authenticated(server.port)
            writer.write(BOMBS[name])
            await writer.drain()
            assert await closed_by_server(reader, writer)
            (raw,) = [p for p in peers if p.remote_node == "raw"]
            assert (raw.close_reason or "").startswith("protocol error"), raw.close_reason
            # the server still serves a new peer, and the one connected all along
            await still_serves(server.port)
            assert await other.call("echo", {}, timeout=5) == {"echo": {}, "from": "bystander"}
            assert [m for m, _ in scalls.seen] == ["echo", "echo"]
            await other.close()

    run(main())


def test_silent_peer_is_dropped_at_the_handshake_deadline_while_others_are_served(
        caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with serving(handshake_timeout=0.5) as (server, _, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"\x00\x00")  # half a length prefix, then silence
            await still_serves(server.port)  # served while the slow one is still hanging on
            assert await closed_by_server(reader, writer)

    run(main())
    assert "did not finish the handshake within 0.5s" in caplog.text


def test_half_frame_after_auth_is_dropped_by_the_read_timeout() -> None:
    async def main() -> None:
        async with serving(idle_timeout=0.5) as (server, _, peers):
            reader, writer = await raw_authenticated(server.port)
            writer.write(struct.pack(">I", 100) + b"\x94\x00")  # slow loris: 2 of 100 bytes
            await writer.drain()
            await still_serves(server.port)
            assert await closed_by_server(reader, writer)
            assert "no frame for 0.5s" in (peers[0].close_reason or "")

    run(main())


def test_idle_connections_stay_up_through_pings() -> None:
    async def main() -> None:
        async with serving(idle_timeout=0.3) as (server, _, peers):
            client, _ = await dial(server.port, idle_timeout=0.3)
            await asyncio.sleep(1.0)  # several idle periods with no calls
            assert not client.closed.is_set() and not peers[0].closed.is_set()
            assert await client.call("echo", {}, timeout=5)
            await client.close()

    run(main())


def test_many_handshaking_connections_are_capped() -> None:
    async def main() -> None:
        async with serving() as (server, _, _):
            silent = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(rpc.MAX_HANDSHAKES)]
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            assert await closed_by_server(reader, writer)  # one over the cap: closed at once
            for _, w in silent:
                w.close()
            while server._handshaking:
                await asyncio.sleep(0.01)
            await still_serves(server.port)

    run(main())


def test_a_peer_with_too_many_calls_in_flight_is_told_busy() -> None:
    async def main() -> None:
        async with serving() as (server, scalls, _):
            client, _ = await dial(server.port)
            hanging = [asyncio.create_task(client.call("hang", {}, timeout=30)) for _ in range(rpc.MAX_INFLIGHT)]
            while len(scalls.seen) < rpc.MAX_INFLIGHT:
                await asyncio.sleep(0.01)
            with pytest.raises(RpcError) as e:
                await client.call("echo", {}, timeout=5)
            assert e.value.code == "busy"
            scalls.gate.set()
            assert set(await asyncio.gather(*hanging)) == {"late"}
            assert await client.call("echo", {}, timeout=5)  # room again
            await client.close()

    run(main())


def test_frames_over_the_limit_are_not_sent() -> None:
    async def main() -> None:
        async with serving(max_frame=4096) as (server, _, _):
            client, _ = await dial(server.port, max_frame=4096)
            with pytest.raises(ValueError, match="exceeds the frame limit"):
                await client.call("echo", {"blob": b"x" * 5000}, timeout=5)
            assert await client.call("echo", {}, timeout=5)
            await client.close()

    run(main())


# -- TLS ------------------------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import shutil

    if not shutil.which("openssl"):
        pytest.skip("openssl command not available to make test certificates")
    d = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "rogue"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={ca}",
                 "-keyout", f"{ca}.key", "-out", f"{ca}.crt", cwd=d)
    for name, ca in (("node", "ca"), ("intruder", "rogue")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
                 "-CAcreateserial", "-days", "2", "-out", f"{name}.crt", cwd=d)
    return d


def test_mutual_tls(pki: Path) -> None:
    server_ctx, client_ctx = rpc.tls_contexts(str(pki / "node.crt"), str(pki / "node.key"), str(pki / "ca.crt"))
    _, rogue_ctx = rpc.tls_contexts(str(pki / "intruder.crt"), str(pki / "intruder.key"), str(pki / "ca.crt"))

    async def main() -> None:
        async with serving(ssl=server_ctx) as (server, scalls, _):
            client, _ = await dial(server.port, ssl=client_ctx)
            assert await client.call("echo", {"tls": 1}, timeout=5) == {"echo": {"tls": 1}, "from": "poller-1"}
            await client.close()
            # a client whose cert is not signed by the cluster CA does not get in, even with the secret
            with pytest.raises((OSError, ConnectionError)):
                await dial(server.port, ssl=rogue_ctx)
            assert [m for m, _ in scalls.seen] == ["echo"]
            await still_serves_tls(server.port, client_ctx)

    async def still_serves_tls(port: int, ctx: Any) -> None:
        peer, _ = await dial(port, ssl=ctx)
        assert await peer.call("echo", {}, timeout=5)
        await peer.close()

    run(main())
