"""Authenticated msgpack RPC over TCP (asyncio), calls in both directions on one connection.

Wire format: frames of a 4-byte big-endian length and a msgpack body; a length over the limit is refused
before its body is read. Messages after the handshake:

    request       [0, id, method, params]     params is a map
    response      [1, id, error, result]      error is None or {"code": str, "message": str}
    notification  [2, method, params]

Handshake (symmetric: each side sends a step as soon as it has what that step needs):

    1. hello    {"ashjobs": PROTOCOL_VERSION, "node": name, "nonce": 32 random bytes}
    2. proof    {"proof": HMAC-SHA256(secret, [label, own role, client nonce, server nonce, client node, server node])}
    3. welcome  {"info": node info, "idle": idle timeout, "max_frame": frame limit}   (once the peer's proof verified)

Either side may instead send {"refused": reason} and close. No method runs before both proofs verify, and
pre-auth frames are limited to HANDSHAKE_FRAME bytes with tiny msgpack limits, so an unauthenticated peer
costs next to nothing. The role in the proof stops a proof from being reflected back at its sender.

Liveness: each side sends a "$ping" notification every idle/3 seconds (idle = the smaller of both sides'
`idle_timeout`); a connection that delivers no frame for `idle_timeout` is closed at the next check
(within idle/3 more). Every socket also gets TCP keepalive (1 s idle, 1 s interval, 3 probes) and
TCP_USER_TIMEOUT, so a silent cut is noticed in seconds, not after ~15 minutes of retransmissions.

A malformed, oversized, slow or unauthenticated peer is logged and its connection closed; each connection
runs in its own tasks, so it can hold up no other peer. Handler exceptions become error responses.
Without TLS the link is authenticated at connect time but neither encrypted nor integrity-protected
afterwards (an on-path attacker could relay or inject); use `tls_contexts` on untrusted networks.

Errors for callers: `call` raises RpcError (the remote handler's error, with .code), TimeoutError, or
ConnectionLost; `connect` raises AuthError, ProtocolError, TimeoutError or OSError. ProtocolError,
AuthError and ConnectionLost are ConnectionErrors (so OSErrors). Handlers keep running when their
connection drops; only their reply is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import logging
import secrets
import socket
import ssl as ssl_module
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack

log = logging.getLogger("ashjobs.cluster.rpc")

PROTOCOL_VERSION = 1
REQUEST, RESPONSE, NOTIFY = 0, 1, 2
MAX_FRAME = 1 << 20
HANDSHAKE_FRAME = 4096  # limit for frames before authentication
MIN_FRAME = 1024  # the smallest frame limit a peer may ask us to keep to
HANDSHAKE_TIMEOUT = 5.0
IDLE_TIMEOUT = 10.0
MIN_IDLE = 0.1
MAX_HANDSHAKES = 64  # unauthenticated connections a server holds at once
MAX_INFLIGHT = 1024  # requests one peer may have running on us at once
USER_TIMEOUT_MS = 5000
_NONCE = 32
_LABEL = "ashjobs-rpc-auth-v1"
_HEADER = struct.Struct(">I")

Handler = Callable[["Peer", dict[str, Any]], Awaitable[Any]]


class RpcError(Exception):
    """The remote side answered a call with an error (or a handler raises this to choose the code)."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


class ProtocolError(ConnectionError):
    """The peer broke the wire protocol (bad frame, bad message, version mismatch); the connection is closed."""


class AuthError(ProtocolError):
    """Mutual authentication failed (wrong cluster secret on one side); the connection is closed."""


class ConnectionLost(ConnectionError):
    """The connection closed while a call was pending, or a call was made on a closed peer."""


# -- frames ----------------------------------------------------------------------------------------------


def _unpack_limits(max_frame: int) -> dict[str, int]:
    # An array or map of n items takes at least n bytes; 64 Ki items is plenty for our messages and
    # caps what a forged length can make the decoder allocate.
    return {"max_buffer_size": max_frame, "max_str_len": max_frame, "max_bin_len": max_frame,
            "max_array_len": min(max_frame, 1 << 16), "max_map_len": min(max_frame, 1 << 16), "max_ext_len": 0}


_HANDSHAKE_LIMITS = {"max_buffer_size": HANDSHAKE_FRAME, "max_str_len": 256, "max_bin_len": 64,
                     "max_array_len": 8, "max_map_len": 8, "max_ext_len": 0}


def encode(msg: Any, max_frame: int = MAX_FRAME) -> bytes:
    """One frame: length prefix + msgpack body. ValueError if the body exceeds max_frame."""
    body = msgpack.packb(msg, use_bin_type=True)
    if len(body) > max_frame:
        raise ValueError(f"message of {len(body)} bytes exceeds the frame limit of {max_frame}")
    return _HEADER.pack(len(body)) + body


class Decoder:
    """A streaming msgpack.Unpacker with limits, fed one whole frame at a time (one per connection)."""

    def __init__(self, limits: dict[str, int]) -> None:
        self._unpacker = msgpack.Unpacker(raw=False, use_list=True, strict_map_key=True, **limits)
        self._fed = 0

    def decode(self, body: bytes) -> Any:
        """A frame body → object; ProtocolError for what msgpack refuses (bombs, ext types, trailing bytes)."""
        try:
            self._unpacker.feed(body)
            self._fed += len(body)
            obj = self._unpacker.unpack()
        except msgpack.OutOfData:
            raise ProtocolError("undecodable frame (truncated msgpack)") from None
        except Exception as e:  # msgpack raises ValueError subclasses, TypeError, and others on hostile input
            raise ProtocolError(f"undecodable frame ({type(e).__name__}: {e})") from None
        if self._unpacker.tell() != self._fed:
            raise ProtocolError("undecodable frame (trailing bytes after the message)")
        return obj


def decode(body: bytes, limits: dict[str, int]) -> Any:
    return Decoder(limits).decode(body)


async def read_frame(reader: asyncio.StreamReader, max_frame: int) -> bytes:
    try:
        (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
        if not 0 < size <= max_frame:
            raise ProtocolError(f"frame of {size} bytes announced (limit {max_frame})")
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise ConnectionLost("connection closed by peer") from None


def tune_socket(sock: Any, user_timeout_ms: int = USER_TIMEOUT_MS) -> None:
    """Keepalive and TCP_USER_TIMEOUT, so a dead link is noticed in seconds (where the OS supports them)."""
    if sock is None:
        return
    opts = [(socket.IPPROTO_TCP, "TCP_NODELAY", 1), (socket.SOL_SOCKET, "SO_KEEPALIVE", 1),
            (socket.IPPROTO_TCP, "TCP_KEEPIDLE", 1), (socket.IPPROTO_TCP, "TCP_KEEPINTVL", 1),
            (socket.IPPROTO_TCP, "TCP_KEEPCNT", 3), (socket.IPPROTO_TCP, "TCP_USER_TIMEOUT", user_timeout_ms)]
    for level, name, value in opts:
        opt = getattr(socket, name, None)
        if opt is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(level, opt, value)


def tls_contexts(cert: str, key: str, ca: str) -> tuple[ssl_module.SSLContext, ssl_module.SSLContext]:
    """(server, client) contexts for mutual TLS: both sides present a cert signed by the cluster's CA.

    Host names are not checked: nodes are often dialled by IP, and trust comes from the private CA.
    """
    server = ssl_module.create_default_context(ssl_module.Purpose.CLIENT_AUTH, cafile=ca)
    server.load_cert_chain(cert, key)
    server.verify_mode = ssl_module.CERT_REQUIRED
    client = ssl_module.create_default_context(ssl_module.Purpose.SERVER_AUTH, cafile=ca)
    client.load_cert_chain(cert, key)
    client.check_hostname = False
    client.verify_mode = ssl_module.CERT_REQUIRED
    return server, client


# -- handshake -------------------------------------------------------------------------------------------


def _proof(secret: bytes, role: str, nonces: tuple[bytes, bytes], nodes: tuple[str, str]) -> bytes:
    transcript = msgpack.packb([_LABEL, role, nonces[0], nonces[1], nodes[0], nodes[1]], use_bin_type=True)
    return hmac.new(secret, transcript, hashlib.sha256).digest()


def _send_now(writer: asyncio.StreamWriter, msg: Any, max_frame: int = HANDSHAKE_FRAME) -> None:
    writer.write(encode(msg, max_frame))


async def _expect(reader: asyncio.StreamReader, max_frame: int, limits: dict[str, int], who: str,
                  key: str) -> Any:
    msg = decode(await read_frame(reader, max_frame), limits)  # 3 frames per handshake: a fresh decoder each
    if not isinstance(msg, dict):
        raise ProtocolError(f"{who}: bad handshake message")
    if "refused" in msg:
        raise AuthError(f"{who} refused us: {str(msg['refused'])[:200]}")
    if key not in msg:
        raise ProtocolError(f"{who}: bad handshake message (no {key!r})")
    return msg


async def _handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, secret: bytes, node: str,
                     info: dict[str, Any], role: str, idle_timeout: float, max_frame: int,
                     where: str) -> tuple[str, dict[str, Any], float, int]:
    """Run the handshake of the module docstring; → (remote node, remote info, remote idle timeout, the frame
    limit to send with: the smaller of both sides', so neither sends what the other would refuse)."""
    nonce = secrets.token_bytes(_NONCE)
    _send_now(writer, {"ashjobs": PROTOCOL_VERSION, "node": node, "nonce": nonce})
    hello = await _expect(reader, HANDSHAKE_FRAME, _HANDSHAKE_LIMITS, f"peer at {where}", "ashjobs")
    version, remote, remote_nonce = hello.get("ashjobs"), hello.get("node"), hello.get("nonce")
    if version != PROTOCOL_VERSION:
        _send_now(writer, {"refused": f"protocol v{PROTOCOL_VERSION} only"})
        raise ProtocolError(f"peer at {where} speaks protocol {version!r}; this node speaks v{PROTOCOL_VERSION}")
    if not (isinstance(remote, str) and remote and isinstance(remote_nonce, bytes) and len(remote_nonce) == _NONCE):
        raise ProtocolError(f"peer at {where}: malformed hello")
    who = f"peer {remote!r} at {where}"
    is_client = role == "client"
    nonces = (nonce, remote_nonce) if is_client else (remote_nonce, nonce)
    nodes = (node, remote) if is_client else (remote, node)
    _send_now(writer, {"proof": _proof(secret, role, nonces, nodes)})
    msg = await _expect(reader, HANDSHAKE_FRAME, _HANDSHAKE_LIMITS, who, "proof")
    expected = _proof(secret, "server" if is_client else "client", nonces, nodes)
    proof = msg["proof"]
    if not (isinstance(proof, bytes) and hmac.compare_digest(proof, expected)):
        _send_now(writer, {"refused": "authentication failed (wrong cluster secret?)"})
        raise AuthError(f"{who} failed authentication: wrong cluster secret")
    _send_now(writer, {"info": info, "idle": idle_timeout, "max_frame": max_frame}, max_frame)
    msg = await _expect(reader, max_frame, _unpack_limits(max_frame), who, "info")
    remote_info, remote_idle = msg["info"], msg.get("idle")
    if not isinstance(remote_info, dict) or not isinstance(remote_idle, int | float) or remote_idle <= 0:
        raise ProtocolError(f"{who}: malformed welcome")
    remote_max = msg.get("max_frame")
    send_limit = min(max_frame, max(remote_max, MIN_FRAME)) if isinstance(remote_max, int) else max_frame
    return remote, remote_info, max(float(remote_idle), MIN_IDLE), send_limit  # a tiny idle must not make us ping flat out


# -- an authenticated connection --------------------------------------------------------------------------


class Peer:
    """One authenticated connection; calls and notifications go both ways."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, node: str,
                 remote_node: str, remote_info: dict[str, Any], handlers: dict[str, Handler],
                 max_frame: int, idle_timeout: float, role: str, address: tuple[str, int],
                 send_limit: int | None = None) -> None:
        self.node = node
        self.remote_node = remote_node
        self.remote_info = remote_info
        self.remote_addr = address
        self.role = role  # "client" if we dialled, "server" if we accepted
        self.closed = asyncio.Event()
        self.close_reason: str | None = None
        self._reader, self._writer = reader, writer
        self._handlers = handlers
        self._max_frame = max_frame
        self.max_frame = min(max_frame, send_limit or max_frame)  # the largest frame we may send
        self._decoder = Decoder(_unpack_limits(max_frame))
        self._idle = idle_timeout
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._handling: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._on_close: list[Callable[[Peer], None]] = []
        self._last_rx = 0.0

    def __repr__(self) -> str:
        return f"<Peer {self.remote_node!r} {self.remote_addr[0]}:{self.remote_addr[1]}>"

    def _start(self) -> None:
        self._last_rx = asyncio.get_running_loop().time()
        self._tasks = [asyncio.create_task(self._read_loop(), name=f"rpc-read {self.remote_node}"),
                       asyncio.create_task(self._keepalive(), name=f"rpc-keepalive {self.remote_node}")]

    async def call(self, method: str, params: dict[str, Any], timeout: float) -> Any:
        """Call `method` on the peer; its result, or RpcError / TimeoutError / ConnectionLost."""
        if self.closed.is_set():
            raise ConnectionLost(f"connection to {self.remote_node!r} is closed ({self.close_reason})")
        call_id = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = fut
        try:
            async with asyncio.timeout(timeout):
                await self._send([REQUEST, call_id, method, params])
                return await fut
        finally:
            self._pending.pop(call_id, None)

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        if self.closed.is_set():
            raise ConnectionLost(f"connection to {self.remote_node!r} is closed ({self.close_reason})")
        await self._send([NOTIFY, method, params])

    async def close(self, reason: str = "closed locally") -> None:
        self._shutdown(reason)
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self._writer.wait_closed()

    async def _send(self, msg: Any) -> None:
        frame = encode(msg, self.max_frame)
        if self.closed.is_set():
            raise ConnectionLost(f"connection to {self.remote_node!r} is closed ({self.close_reason})")
        self._writer.write(frame)  # one write per frame: frames never interleave
        if not self._writer.transport.get_write_buffer_size():
            return  # the kernel took it all: nothing to wait for
        try:
            async with asyncio.timeout(self._idle):
                await self._writer.drain()
        except TimeoutError:
            self._shutdown(f"peer did not read for {self._idle:g}s")
            raise ConnectionLost(f"connection to {self.remote_node!r} closed: peer stopped reading") from None
        except (ConnectionError, OSError) as e:
            self._shutdown(f"write failed: {e}")
            raise ConnectionLost(f"connection to {self.remote_node!r} lost: {e}") from None

    def _shutdown(self, reason: str) -> None:
        """Close once: fail pending calls, drop the socket. Running handlers finish; their replies are dropped."""
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionLost(f"connection to {self.remote_node!r} lost: {reason}"))
        self._pending.clear()
        _abort(self._writer)
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        for cb in self._on_close:
            cb(self)

    async def _keepalive(self) -> None:
        """Ping every idle/3 s; close when nothing arrived for idle s (cheaper than a timer per frame)."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionError):
            while not self.closed.is_set():
                await asyncio.sleep(self._idle / 3)
                if loop.time() - self._last_rx > self._idle:
                    reason = f"no frame for {self._idle:g}s"
                    log.warning("rpc: %r: %s; closing", self, reason)
                    self._shutdown(reason)
                    return
                await self._send([NOTIFY, "$ping", {}])

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        reason = "closed"
        try:
            while True:
                body = await read_frame(self._reader, self._max_frame)
                self._last_rx = loop.time()
                self._dispatch(self._decoder.decode(body))
        except TimeoutError as e:  # ETIMEDOUT from the kernel: keepalive or TCP_USER_TIMEOUT gave up
            reason = f"connection lost: {e}"
            log.warning("rpc: %r: %s; closing", self, reason)
        except ProtocolError as e:
            reason = f"protocol error: {e}"
            log.warning("rpc: %r: %s; closing", self, reason)
        except (ConnectionError, OSError) as e:
            reason = f"connection lost: {e}"
            log.info("rpc: %r: %s", self, reason)
        except asyncio.CancelledError:
            reason = self.close_reason or "cancelled"
            raise
        except Exception as e:  # a bug of ours must not take down the daemon: drop this one connection
            reason = f"internal error: {type(e).__name__}: {e}"
            log.exception("rpc: %r: %s", self, reason)
        finally:
            self._shutdown(reason)

    def _dispatch(self, msg: Any) -> None:
        if not isinstance(msg, list) or not msg or not isinstance(msg[0], int):
            raise ProtocolError("message is not [type, ...]")
        kind = msg[0]
        if kind == REQUEST and len(msg) == 4:
            _, call_id, method, params = msg
            if not isinstance(call_id, int) or not isinstance(method, str) or not isinstance(params, dict):
                raise ProtocolError("malformed request")
            if len(self._handling) >= MAX_INFLIGHT:
                if len(self._handling) >= 2 * MAX_INFLIGHT:  # it ignores "busy": stop reading it
                    raise ProtocolError(f"peer keeps sending with {len(self._handling)} calls in flight")
                self._spawn(self._reply(call_id, RpcError("busy", f"over {MAX_INFLIGHT} calls in flight"), None))
                return
            self._spawn(self._handle(call_id, method, params))
        elif kind == RESPONSE and len(msg) == 4:
            _, call_id, error, result = msg
            if not isinstance(call_id, int) or not (error is None or isinstance(error, dict)):
                raise ProtocolError("malformed response")
            fut = self._pending.get(call_id)
            if fut is None or fut.done():
                return  # the call timed out already
            if error is None:
                fut.set_result(result)
            else:
                fut.set_exception(RpcError(str(error.get("code", "error")), str(error.get("message", ""))))
        elif kind == NOTIFY and len(msg) == 3:
            _, method, params = msg
            if not isinstance(method, str) or not isinstance(params, dict):
                raise ProtocolError("malformed notification")
            if method != "$ping":
                if len(self._handling) >= MAX_INFLIGHT:
                    log.warning("rpc: %r: dropping notification %r: too many in flight", self, method)
                    return
                self._spawn(self._handle(None, method, params))
        else:
            raise ProtocolError(f"unknown message type {kind!r} of length {len(msg)}")

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._handling.add(task)
        task.add_done_callback(self._handling.discard)

    async def _handle(self, call_id: int | None, method: str, params: dict[str, Any]) -> None:
        handler = self._handlers.get(method)
        error: RpcError | None = None
        result: Any = None
        try:
            if handler is None:
                raise RpcError("no_such_method", f"no method {method!r}")
            result = await handler(self, params)
        except RpcError as e:
            error = e
        except Exception as e:
            log.exception("rpc: %r: handler %r failed", self, method)
            error = RpcError("handler_error", f"{type(e).__name__}: {e}")
        if call_id is None:
            if error is not None and error.code == "no_such_method":
                log.warning("rpc: %r: notification for unknown method %r", self, method)
            return
        await self._reply(call_id, error, result)

    async def _reply(self, call_id: int, error: RpcError | None, result: Any) -> None:
        err = None if error is None else {"code": error.code, "message": error.message}
        try:
            await self._send([RESPONSE, call_id, err, result])
        except (TypeError, ValueError) as e:  # result not serialisable or too big: say so instead
            log.error("rpc: %r: cannot send result of call %d: %s", self, call_id, e)
            with contextlib.suppress(ConnectionError):
                await self._send([RESPONSE, call_id, {"code": "bad_result", "message": str(e)[:500]}, None])
        except ConnectionError:
            pass  # the caller is gone; nothing to tell


# -- server and client -------------------------------------------------------------------------------------


class Server:
    """A listening RPC endpoint; `.port` is the bound port (useful with port 0)."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.peers: set[Peer] = set()
        self._server: asyncio.base_events.Server | None = None
        self._handshaking: set[asyncio.Task[Any]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._handshaking):
            task.cancel()
        await asyncio.gather(*(p.close("server closing") for p in list(self.peers)), return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self._server.wait_closed()


async def serve(host: str, port: int, *, secret: bytes, node: str, info: dict[str, Any],
                handlers: dict[str, Handler], on_peer: Callable[[Peer], None] | None = None,
                max_frame: int = MAX_FRAME, ssl: ssl_module.SSLContext | None = None,
                idle_timeout: float = IDLE_TIMEOUT, handshake_timeout: float = HANDSHAKE_TIMEOUT) -> Server:
    """Listen on host:port; each authenticated connection becomes a Peer handed to `on_peer`."""
    server = Server(node)

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        addr = _addr(writer)
        where = f"{addr[0]}:{addr[1]}"
        if len(server._handshaking) >= MAX_HANDSHAKES:
            log.warning("rpc: %s: dropped: %d handshakes already in progress", where, MAX_HANDSHAKES)
            writer.close()
            return
        tune_socket(writer.get_extra_info("socket"))
        task = asyncio.current_task()
        assert task is not None
        server._handshaking.add(task)
        try:
            async with asyncio.timeout(handshake_timeout):
                remote, remote_info, remote_idle, send_limit = await _handshake(
                    reader, writer, secret=secret, node=node, info=info, role="server",
                    idle_timeout=idle_timeout, max_frame=max_frame, where=where)
        except asyncio.CancelledError:
            # the server is closing. This task belongs to asyncio.streams, which would log a raise as an error.
            _abort(writer)
            return
        except Exception as e:
            _abort(writer)
            _log_dropped(where, e, handshake_timeout)
            return
        finally:
            server._handshaking.discard(task)
        peer = Peer(reader, writer, node=node, remote_node=remote, remote_info=remote_info, handlers=handlers,
                    max_frame=max_frame, idle_timeout=min(idle_timeout, remote_idle), role="server", address=addr,
                    send_limit=send_limit)
        log.info("rpc: %r connected", peer)
        server.peers.add(peer)
        peer._on_close.append(server.peers.discard)
        peer._start()
        if on_peer is not None:
            try:
                on_peer(peer)
            except Exception:
                log.exception("rpc: on_peer callback failed for %r", peer)

    server._server = await asyncio.start_server(accept, host, port, ssl=ssl,
                                                ssl_handshake_timeout=handshake_timeout if ssl else None)
    return server


async def connect(host: str, port: int, *, secret: bytes, node: str, info: dict[str, Any],
                  handlers: dict[str, Handler], timeout: float = 5.0, max_frame: int = MAX_FRAME,
                  ssl: ssl_module.SSLContext | None = None, idle_timeout: float = IDLE_TIMEOUT) -> Peer:
    """Dial host:port and authenticate within `timeout`; raises AuthError, ProtocolError, OSError, TimeoutError."""
    where = f"{host}:{port}"
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, ssl=ssl)
            tune_socket(writer.get_extra_info("socket"))
            remote, remote_info, remote_idle, send_limit = await _handshake(
                reader, writer, secret=secret, node=node, info=info, role="client",
                idle_timeout=idle_timeout, max_frame=max_frame, where=where)
    except BaseException as e:
        if writer is not None:
            _abort(writer)
        if isinstance(e, AuthError):
            log.warning("rpc: connecting to %s: %s", where, e)
        if isinstance(e, TimeoutError):
            raise TimeoutError(f"{where}: no connection within {timeout:g}s") from None
        raise
    peer = Peer(reader, writer, node=node, remote_node=remote, remote_info=remote_info, handlers=handlers,
                max_frame=max_frame, idle_timeout=min(idle_timeout, remote_idle), role="client",
                address=(host, port), send_limit=send_limit)
    peer._start()
    return peer


def _log_dropped(where: str, e: Exception, handshake_timeout: float) -> None:
    if isinstance(e, AuthError):
        log.warning("rpc: refused connection: %s", e)
    elif isinstance(e, ProtocolError):
        log.warning("rpc: dropped connection from %s: %s", where, e)
    elif isinstance(e, TimeoutError) and not e.errno:
        log.warning("rpc: peer at %s did not finish the handshake within %gs; dropped", where, handshake_timeout)
    elif isinstance(e, OSError):
        log.info("rpc: connection from %s lost during handshake: %s", where, e)
    else:
        log.error("rpc: handshake with %s failed", where, exc_info=e)


def _addr(writer: asyncio.StreamWriter) -> tuple[str, int]:
    peername = writer.get_extra_info("peername")
    if isinstance(peername, tuple) and len(peername) >= 2:
        return str(peername[0]), int(peername[1])
    return ("?", 0)


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close now. A small unsent tail (a refusal) is flushed; a backlog to a peer that does not read is not."""
    transport = writer.transport
    with contextlib.suppress(Exception):
        if transport.get_write_buffer_size() > HANDSHAKE_FRAME:
            transport.abort()
        else:
            transport.close()
