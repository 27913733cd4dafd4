"""mDNS discovery of pollers: `_ashjobs._tcp.local.` with partition/domain TXT records.

mDNS only tells the scheduler where pollers are. It never decides liveness: a killed host stays in
receivers' caches for ~19 minutes and a cut link produces no event at all, so liveness comes from RPC
heartbeats. zeroconf is imported lazily, inside the classes, so importing this module stays cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import Any

from ashjobs.errors import ConfigError

log = logging.getLogger("ashjobs.cluster.discovery")

SERVICE_TYPE = "_ashjobs._tcp.local."
TXT_VERSION = "1"
MAX_TXT_ENTRY = 255  # one length byte per TXT string (RFC 6763 §6.1)
MAX_LABEL = 63  # the instance name is one DNS label

Callback = Callable[[str, dict[str, Any]], None]


def _csv(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in value.split(",") if v]
    return [str(v) for v in value]


def txt_record(info: dict[str, Any]) -> dict[str, str]:
    """TXT properties for a node: v, node, role, partition, domain (comma-separated), cap, cluster.

    `info` has node, role (or roles), partition, domains (or domain), cap (or capacity), cluster. Raises
    ConfigError (one line naming the entry) when an entry would not fit in 255 bytes or a name would be
    ambiguous on the wire.
    """
    node = str(info.get("node") or "")
    if not node:
        raise ConfigError("mDNS: node name is empty")
    if len(node.encode()) > MAX_LABEL:
        raise ConfigError(f"mDNS: node name {node[:20]!r}… is {len(node.encode())} bytes; an mDNS instance "
                          f"name holds at most {MAX_LABEL} (set a shorter [node] name)")
    roles = _csv(info.get("roles", info.get("role")))
    domains = _csv(info.get("domains", info.get("domain")))
    for d in domains:
        if "," in d or not d.strip() or d != d.strip():
            raise ConfigError(f"mDNS: domain {d!r} must be non-empty, without commas or surrounding spaces")
    cap = info.get("cap", info.get("capacity", 0))
    props = {
        "v": TXT_VERSION,
        "node": node,
        "role": ",".join(roles),
        "partition": str(info.get("partition") or "default"),
        "domain": ",".join(domains),
        "cap": str(int(cap)),
        "cluster": str(info.get("cluster") or ""),
    }
    # With the node name capped at 63 bytes, seven entries of <= 255 bytes keep the record well under the
    # 1300 bytes RFC 6763 §6.2 advises, so checking each entry is enough.
    for key, value in props.items():
        size = len(key.encode()) + 1 + len(value.encode())
        if size > MAX_TXT_ENTRY:
            hint = {"domain": "too many or too long [node] domains to advertise over mDNS; shorten them or "
                              "run this poller as several nodes"}.get(key, f"shorten the {key}")
            raise ConfigError(f"mDNS: TXT entry {key!r} would be {size} bytes (limit {MAX_TXT_ENTRY}): {hint}")
    return props


def parse_txt(properties: dict[Any, Any]) -> dict[str, Any] | None:
    """TXT properties (bytes or str keys/values) → info dict; None when malformed or of another version."""
    props: dict[str, str] = {}
    try:
        for k, v in properties.items():
            key = k.decode() if isinstance(k, bytes) else str(k)
            props[key] = v.decode() if isinstance(v, bytes) else ("" if v is None else str(v))
    except UnicodeDecodeError:
        return None
    if props.get("v") != TXT_VERSION or not props.get("node") or not props.get("cluster"):
        return None
    try:
        cap = int(props.get("cap", "0"))
    except ValueError:
        return None
    if cap < 0:
        return None
    return {"v": props["v"], "node": props["node"], "role": _csv(props.get("role")),
            "partition": props.get("partition") or "default", "domains": _csv(props.get("domain")),
            "cap": cap, "cluster": props["cluster"]}


def _interface_ips(interfaces: list[str]) -> list[str]:
    """Config `interfaces` (IPv4 addresses or interface names) → IPv4 addresses for zeroconf."""
    if not interfaces:
        return []
    import ifaddr  # a zeroconf dependency

    by_name = {a.nice_name: a for a in ifaddr.get_adapters()} | {a.name: a for a in ifaddr.get_adapters()}
    out: list[str] = []
    for item in interfaces:
        try:
            out.append(str(ipaddress.IPv4Address(item)))
            continue
        except ValueError:
            pass
        adapter = by_name.get(item)
        if adapter is None:
            raise ConfigError(f"cluster.interfaces: no network interface {item!r} (known: {', '.join(sorted(by_name))})")
        ips = [str(ip.ip) for ip in adapter.ips if isinstance(ip.ip, str)]
        if not ips:
            raise ConfigError(f"cluster.interfaces: interface {item!r} has no IPv4 address")
        out.extend(ips)
    return out


def _zc_interfaces(interfaces: list[str]) -> Any:
    from zeroconf import InterfaceChoice

    ips = _interface_ips(interfaces)
    return ips or InterfaceChoice.All


def _local_addresses(interfaces: list[str]) -> list[str]:
    """IPv4 addresses to advertise: those of `interfaces`, else every non-loopback one (loopback if alone)."""
    ips = _interface_ips(interfaces)
    if not ips:
        from zeroconf import get_all_addresses

        ips = get_all_addresses()
    routable = [ip for ip in ips if not ipaddress.IPv4Address(ip).is_loopback]
    return routable or ips


async def _resolve_ipv4(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, family=socket.AF_INET)
    except OSError as e:
        raise ConfigError(f"cluster.advertise_address: cannot resolve {host!r}: {e.strerror or e}") from None
    return str(infos[0][4][0])


class Advertiser:
    """Announce this node; `close()` sends the goodbye so browsers drop it at once."""

    def __init__(self, info: dict[str, Any], port: int, *, addresses: list[str] | None = None,
                 interfaces: list[str] | None = None) -> None:
        self.properties = txt_record(info)  # refuse a bad config before touching the network
        self.port = port
        self.node = self.properties["node"]
        self.name = f"{self.node}.{SERVICE_TYPE}"
        self._addresses = addresses
        self._interfaces = interfaces or []
        self._azc: Any = None
        self._info: Any = None

    def _service_info(self) -> Any:
        from zeroconf.asyncio import AsyncServiceInfo

        addresses = self._addresses or _local_addresses(self._interfaces)
        host = "".join(c if c.isalnum() or c == "-" else "-" for c in self.node)[:MAX_LABEL]
        return AsyncServiceInfo(SERVICE_TYPE, self.name, port=self.port, properties=self.properties,
                                server=f"{host}.local.", parsed_addresses=addresses)

    async def start(self) -> None:
        from zeroconf.asyncio import AsyncZeroconf

        if self._addresses:  # advertise_address may be a host name; mDNS A records need addresses
            self._addresses = [await _resolve_ipv4(a) for a in self._addresses]
        self._azc = AsyncZeroconf(interfaces=_zc_interfaces(self._interfaces))
        try:
            self._info = self._service_info()
            # cooperating_responders: skip the 1.2 s probe; several of our nodes answer for one service type
            await (await self._azc.async_register_service(self._info, cooperating_responders=True))
        except BaseException:
            azc, self._azc = self._azc, None
            await azc.async_close()
            raise
        log.info("mdns: advertising %s on %s port %d", self.name, self._info.parsed_addresses(), self.port)

    async def update(self, info: dict[str, Any]) -> None:
        """Re-announce with new TXT (e.g. changed capacity or domains)."""
        self.properties = txt_record({**info, "node": self.node})
        if self._azc is None:
            return
        self._info = self._service_info()
        await (await self._azc.async_update_service(self._info))

    async def close(self) -> None:
        azc, self._azc = self._azc, None
        if azc is None:
            return
        try:
            with contextlib.suppress(Exception):
                await (await azc.async_unregister_service(self._info))  # the goodbye packet
        finally:
            await azc.async_close()


class Browser:
    """Watch `_ashjobs._tcp.local.`; call `callback(kind, info)` with kind "added" / "updated" / "removed".

    info: name, node, addresses, port, partition, domains, cap, role, cluster, v. Services of other
    clusters (another `cluster` id) and malformed TXT records are ignored.
    """

    def __init__(self, callback: Callback, *, cluster: str, interfaces: list[str] | None = None,
                 resolve_timeout: float = 3.0, on_ignored: Callback | None = None) -> None:
        self.callback = callback
        self.on_ignored = on_ignored  # (reason, info) for services skipped: diagnostics and tests
        self.cluster = cluster
        self.known: dict[str, dict[str, Any]] = {}  # service name → last info reported
        self._interfaces = interfaces or []
        self._resolve_timeout = resolve_timeout
        self._azc: Any = None
        self._browser: Any = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        from zeroconf.asyncio import AsyncServiceBrowser, AsyncZeroconf

        self._azc = AsyncZeroconf(interfaces=_zc_interfaces(self._interfaces))
        self._browser = AsyncServiceBrowser(self._azc.zeroconf, SERVICE_TYPE, handlers=[self._on_change])

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        if self._azc is not None:
            await self._azc.async_close()
            self._azc = None

    def _on_change(self, zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        # Called on the event loop by zeroconf; resolving needs awaiting, so do it in a task.
        if state_change.name == "Removed":
            info = self.known.pop(name, None)
            if info is not None:
                self._emit("removed", info)
            return
        task = asyncio.get_running_loop().create_task(self._resolve(service_type, name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, service_type: str, name: str) -> None:
        from zeroconf.asyncio import AsyncServiceInfo

        try:
            si = AsyncServiceInfo(service_type, name)
            if not await si.async_request(self._azc.zeroconf, self._resolve_timeout * 1000):
                log.debug("mdns: %s did not resolve", name)
                return
        except Exception as e:
            log.debug("mdns: resolving %s failed: %s", name, e)
            return
        info = parse_txt(si.properties or {})
        if info is None:
            log.debug("mdns: %s: malformed or foreign TXT record; ignored", name)
            self._ignore("malformed", {"name": name})
            return
        if info["cluster"] != self.cluster:
            log.debug("mdns: %s belongs to cluster %s, not ours (%s); ignored", name, info["cluster"], self.cluster)
            self._ignore("other cluster", {**info, "name": name})
            return
        info.update(name=name, port=si.port, addresses=si.parsed_addresses())
        before = self.known.get(name)
        if before == info:
            return
        self.known[name] = info
        self._emit("updated" if before is not None else "added", info)

    def _ignore(self, reason: str, info: dict[str, Any]) -> None:
        before = self.known.pop(info["name"], None)
        if before is not None:  # it left our cluster (or broke its TXT): gone from ours
            self._emit("removed", before)
        if self.on_ignored is not None:
            try:
                self.on_ignored(reason, info)
            except Exception:
                log.exception("mdns: on_ignored callback failed")

    def _emit(self, kind: str, info: dict[str, Any]) -> None:
        try:
            self.callback(kind, dict(info))
        except Exception:
            log.exception("mdns: discovery callback failed on %s %s", kind, info.get("name"))

