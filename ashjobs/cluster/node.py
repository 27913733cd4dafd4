"""`ClusterNode(svc)`: the daemon component that joins this node to its cluster.

It listens for RPC, dials the pollers it knows (static peers, mDNS sightings, and itself when it has both
roles: its own poller is reached through the same RPC path and leases as any other) and, as a poller, registers
with a configured `scheduler`. Each connection says what it is for: the dialler sends `link` = "dispatch" (I am
a scheduler, run my jobs) or "register" (I am a poller, send me jobs); the other end plays the other part.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any

from ashjobs.cluster.dispatch import Dispatcher
from ashjobs.cluster.poller import Runner
from ashjobs.cluster.registry import Source
from ashjobs.errors import AshError, ConfigError

if TYPE_CHECKING:
    from ashjobs.cluster.config import ClusterConfig, TlsConfig
    from ashjobs.cluster.rpc import Peer, Server
    from ashjobs.services import Services

log = logging.getLogger("ashjobs.cluster")

PROTOCOL = 1
MAX_MDNS_PEERS = 512  # pollers taken from mDNS at once: a LAN host cannot make us dial without end


class ClusterNode:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.cfg: ClusterConfig = svc.cfg.section("cluster")
        node = svc.cfg.node
        self.roles = set(node.roles)
        ttl, hb = self.cfg.lease_ttl, self.cfg.heartbeat_interval
        self.ttl = ttl
        self.dispatcher = Dispatcher(svc, lease_ttl=ttl, heartbeat=hb) if "scheduler" in self.roles else None
        self.runner = (Runner(svc, capacity=node.capacity, lease_ttl=ttl, heartbeat=hb)
                       if "poller" in self.roles else None)
        self.server: Server | None = None
        self.port = 0
        self._secret = b""
        self._client_ssl: Any = None
        self._server_ssl: Any = None
        self._handlers: dict[str, Any] = {}
        self._dials: dict[str, asyncio.Task[None]] = {}
        self._addr_node: dict[str, str] = {}
        self._mdns_addr: dict[str, str] = {}  # node name in an mDNS record → the address we dial for it
        self._tasks: set[asyncio.Task[Any]] = set()
        self._advertiser: Any = None
        self._browser: Any = None
        self._cluster_id = ""
        svc.extras["cluster"] = self
        self.off_reason = self._check()

    def _check(self) -> str | None:
        """Refuse a bad setup before the daemon starts serving (exit 2, one line): a missing or exposed secret,
        a TXT record that cannot fit. Returns why the cluster is off when nothing asked for one."""
        from ashjobs.cluster.secret import cluster_id, load_secret, secret_path

        path = secret_path(self.svc.cfg)
        if "cluster" not in self.svc.cfg.raw and not path.exists() and self.dispatcher is not None:
            # Nothing asked for a cluster and `ashjobs init` never ran: a standalone node, not an error.
            # Routed jobs wait, saying why; a [cluster] section makes a missing secret fatal instead.
            return f"cluster is off on {self.svc.node}: no secret at {path} (run `ashjobs init`)"
        self._secret = load_secret(path)
        self._cluster_id = cluster_id(self._secret)
        if self.cfg.tls.enabled:
            self._server_ssl, self._client_ssl = _load_tls(self.cfg.tls)
        if "mdns" in self.cfg.discovery:
            from ashjobs.cluster.discovery import _interface_ips, txt_record

            if self.runner is not None:
                txt_record({**self.info(), "node": self.svc.node})
            _interface_ips(list(self.cfg.interfaces))  # an unknown interface: refused now, not once running
        return None

    # --- identity ----------------------------------------------------------------------------------------

    def address(self) -> str:
        adv = self.cfg.advertise_addr
        if adv is not None:
            return _hostport(*adv)
        host = self.cfg.listen_addr[0]
        return _hostport("127.0.0.1" if host in ("0.0.0.0", "", "::") else host, self.port)

    def info(self, link: str | None = None) -> dict[str, Any]:
        node = self.svc.cfg.node
        out: dict[str, Any] = {"v": PROTOCOL, "roles": sorted(self.roles), "partition": node.partition,
                               "domains": list(node.domains), "cap": node.capacity, "address": self.address(),
                               "lease_ttl": self.ttl, "cluster": self._cluster_id}
        if link is not None:
            out["link"] = link
        return out

    # --- lifecycle ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        from ashjobs.cluster import rpc

        if self.off_reason is not None:
            log.warning("%s", self.off_reason)
            assert self.dispatcher is not None
            await self.dispatcher.run_disabled(self.off_reason)
            return
        server_ssl = self._server_ssl
        if self.dispatcher is not None:
            self._handlers.update(self.dispatcher.handlers())
        if self.runner is not None:
            self._handlers.update(self.runner.handlers())
        host, port = self.cfg.listen_addr
        self.port = port
        try:
            self.server = await rpc.serve(host, port, secret=self._secret, node=self.svc.node, info=self.info(),
                                          handlers=self._handlers, on_peer=self._on_peer,
                                          max_frame=self.cfg.max_frame, ssl=server_ssl, idle_timeout=self.ttl)
        except OSError as e:
            raise AshError(f"[cluster] listen: cannot listen on {host}:{port}: {e.strerror or e}") from None
        self.port = self.server.port
        log.info("cluster: %s listening on %s:%d as %s", self.svc.node, host, self.port, "+".join(sorted(self.roles)))
        loops: list[Any] = []
        if self.dispatcher is not None:
            loops.append(self.dispatcher.run())
            if "static" in self.cfg.discovery:
                for peer in self.cfg.peers:
                    self.dispatcher.registry.add_address(peer, "static")  # listed in `peers` until reached
                    self.dial(peer, "dispatch", "static")
            if self.runner is not None:  # our own poller, through the same path as any other
                self.dial(_hostport("127.0.0.1" if host in ("0.0.0.0", "", "::") else host, self.port),
                          "dispatch", "static")
        if self.runner is not None:
            loops.append(self.runner.run())
            if self.cfg.scheduler:
                self.dial(self.cfg.scheduler, "register", "registered")
        if "mdns" in self.cfg.discovery:
            try:
                await self._start_mdns()
            except ConfigError:
                raise  # a TXT record that cannot fit: refused at start
            except Exception as e:  # no multicast here: static peers and registrations still work
                log.error("cluster: mDNS unavailable, continuing without it: %s", e)
                await self._stop_mdns()
        try:
            await asyncio.gather(*loops)
        finally:
            await self._close()

    async def drain(self, grace: float) -> None:
        await self._stop_mdns()
        if self.runner is not None:
            await self.runner.drain(grace)

    async def _close(self) -> None:
        await self._stop_mdns()
        for t in [*self._dials.values(), *self._tasks]:
            t.cancel()
        await asyncio.gather(*self._dials.values(), *self._tasks, return_exceptions=True)
        if self.runner is not None:
            await self.runner.close()
        if self.dispatcher is not None:
            await self.dispatcher.close()
        if self.server is not None:
            await self.server.close()

    def _spawn(self, coro: Any) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    # --- links -------------------------------------------------------------------------------------------

    def dial(self, address: str, link: str, source: Source) -> None:
        key = f"{link} {address}"
        if key not in self._dials or self._dials[key].done():
            task = self._dials[key] = asyncio.create_task(self._dial_loop(address, link, source), name=f"dial {key}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def undial(self, address: str, link: str) -> None:
        """mDNS said goodbye: stop redialling. A live link stays until it closes; then its loop ends."""
        task = self._dials.pop(f"{link} {address}", None)
        node = self._addr_node.get(address)
        if task is not None and not (self.dispatcher and self.dispatcher.linked_to(node)):
            task.cancel()

    async def _dial_loop(self, address: str, link: str, source: Source) -> None:
        from ashjobs.cluster import rpc
        from ashjobs.cluster.config import DEFAULT_PORT, parse_hostport

        host, port = parse_hostport(address, DEFAULT_PORT)
        pause, warned = 0.1, False
        key = f"{link} {address}"
        while self._dials.get(key) is asyncio.current_task():  # until undialled
            existing = self._live_link(self._addr_node.get(address), link)
            if existing is not None:  # reached over another connection: wait for that one to end
                await existing.closed.wait()
                continue
            try:
                peer = await rpc.connect(host, port, secret=self._secret, node=self.svc.node, info=self.info(link),
                                         handlers=self._handlers, timeout=min(5.0, self.ttl),
                                         max_frame=self.cfg.max_frame, ssl=self._client_ssl, idle_timeout=self.ttl)
            except Exception as e:
                (log.debug if warned else log.warning)("cluster: cannot reach %s (%s): %s", address, link, e)
                warned = True
                await asyncio.sleep(pause)
                pause = min(pause * 2, max(1.0, self.ttl / 2))
                continue
            pause, warned = 0.1, False
            self._addr_node[address] = peer.remote_node
            if not self._attach(peer, link, source, address):
                await peer.close("not needed: already linked, or the peer's roles do not fit")
                await asyncio.sleep(max(5.0, self.ttl))
                continue
            await peer.closed.wait()
            self._detach(peer, link)

    def _live_link(self, node: str | None, link: str) -> Peer | None:
        if node is None:
            return None
        if link == "dispatch" and self.dispatcher is not None:
            peer = self.dispatcher.links.get(node)
        elif link == "register" and self.runner is not None:
            up = self.runner.upstreams.get(node)
            peer = up.peer if up is not None else None
        else:
            return None
        return peer if peer is not None and not peer.closed.is_set() else None

    def _attach(self, peer: Peer, link: str, source: Source, address: str) -> bool:
        """`link` is what the dialler asked for; we play the part that goes with it on our end."""
        if link == "dispatch":
            return self.dispatcher.adopt(peer, source, address) if self.dispatcher is not None else False
        if link == "register":
            return self.runner.adopt(peer, registered=True) if self.runner is not None else False
        return False

    def _detach(self, peer: Peer, link: str) -> None:
        if link == "dispatch" and self.dispatcher is not None:
            self.dispatcher.dropped(peer)
        if link == "register" and self.runner is not None:
            self.runner.dropped(peer)

    def _on_peer(self, peer: Peer) -> None:
        """An inbound connection: a scheduler that wants our poller, or a poller registering with us."""
        link = peer.remote_info.get("link")
        ok = False
        if link == "dispatch" and self.runner is not None:
            ok = self.runner.adopt(peer, registered=False)
            mine = "register"
        elif link == "register" and self.dispatcher is not None:
            address = _registered_address(peer)
            ok = self.dispatcher.adopt(peer, "registered", address)
            mine = "dispatch"
        if not ok:
            log.info("cluster: closing link from %s (%s): not needed here", peer.remote_node, link)
            self._spawn(peer.close("not needed: already linked, or roles do not fit"))
            return

        async def watch() -> None:
            await peer.closed.wait()
            self._detach(peer, mine)

        self._spawn(watch())

    # --- mDNS ---------------------------------------------------------------------------------------------

    async def _start_mdns(self) -> None:
        """Pollers advertise themselves; schedulers browse. Discovery only: liveness is the heartbeats' job."""
        from ashjobs.cluster import discovery

        if self.runner is not None:
            adv = self.cfg.advertise_addr
            info = {**self.info(), "node": self.svc.node}
            self._advertiser = discovery.Advertiser(info, adv[1] if adv else self.port,
                                                    addresses=[adv[0]] if adv else None,
                                                    interfaces=list(self.cfg.interfaces))
            await self._advertiser.start()
        if self.dispatcher is not None:
            self._browser = discovery.Browser(self.seen, cluster=self._cluster_id,
                                              interfaces=list(self.cfg.interfaces))
            await self._browser.start()

    async def _stop_mdns(self) -> None:
        """The advertiser's goodbye tells browsers at once that a cleanly stopping poller is gone."""
        for attr in ("_advertiser", "_browser"):
            side = getattr(self, attr)
            setattr(self, attr, None)
            if side is not None:
                with contextlib.suppress(Exception):
                    await side.close()

    def seen(self, event: str, info: dict[str, Any]) -> None:
        """An mDNS event (added/updated/removed) about a node of our cluster (the browser checked the id)."""
        if self.dispatcher is None or info.get("node") == self.svc.node:
            return
        roles = info.get("role", [])
        addresses, port = info.get("addresses") or [], info.get("port")
        if "poller" not in roles or not addresses or not isinstance(port, int):
            return
        address, node = _hostport(str(addresses[0]), port), str(info.get("node"))
        before = self._mdns_addr.pop(node, None)
        if before is not None and (event == "removed" or before != address):  # gone, or moved (a new IP)
            self.dispatcher.registry.drop_address(before)
            self.undial(before, "dispatch")
        if event == "removed":
            return
        if len(self._mdns_addr) >= MAX_MDNS_PEERS:
            log.warning("cluster: ignoring poller %s seen over mDNS: already %d from mDNS", node, MAX_MDNS_PEERS)
            return
        self._mdns_addr[node] = address
        self.dispatcher.registry.add_address(address, "mdns", info)
        self.dial(address, "dispatch", "mdns")


def _load_tls(tls: TlsConfig) -> tuple[Any, Any]:
    """(server, client) SSL contexts, or ConfigError (one line) for a missing or unusable file."""
    import ssl

    from ashjobs.cluster.rpc import tls_contexts

    for key in ("cert", "key", "ca"):
        path = getattr(tls, key)
        if not os.path.isfile(path):
            raise ConfigError(f"cluster.tls.{key}: {path}: no such file")
    try:
        return tls_contexts(tls.cert, tls.key, tls.ca)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"cluster.tls: cannot use {tls.cert} / {tls.key} / {tls.ca}: {e}") from None


def _registered_address(peer: Peer) -> str:
    """Where a registering poller says it listens; a wildcard listener's loopback guess is replaced by the
    address its connection came from."""
    said = peer.remote_info.get("address")
    seen = peer.remote_addr[0]
    if not isinstance(said, str) or len(said) > 300 or ":" not in said:
        return _hostport(seen, "?")
    host, _, port = said.rpartition(":")
    if host in ("127.0.0.1", "localhost") and seen not in ("127.0.0.1", "::1"):
        return _hostport(seen, port)
    return said


def _hostport(host: str, port: int | str) -> str:
    """host:port, with an IPv6 address in brackets so that it parses back (parse_hostport)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
