"""The scheduler's registry of pollers.

Addresses come from mDNS, static peers and pollers that register over RPC; liveness comes ONLY from heartbeats
(a killed host stays in mDNS caches for ~19 minutes). States:
  available   linked, heard from within lease_ttl, room left
  busy        the same, at capacity
  draining    the poller said it is stopping: no new work
  unavailable no heartbeat for lease_ttl (or no link to send work over); back to available when heartbeats resume
Pure: the monotonic clock is injected and every transition is a method call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ashjobs.clock import Clock
from ashjobs.cluster.routing import Poller, PollerState

Source = Literal["mdns", "static", "registered"]
MAX_COUNT = 1 << 31  # a peer's capacity or load beyond this is nonsense (and would overflow SQLite's INTEGER)


@dataclass
class PeerRecord:
    node: str | None  # None: a static address we have not reached yet
    address: str
    source: Source
    partition: str = "default"
    domains: tuple[str, ...] = ()
    capacity: int = 0
    leased: int = 0  # leases this scheduler holds on it
    others: int = 0  # what it runs for other schedulers (from its heartbeats)
    linked: bool = False
    draining: bool = False
    last_heartbeat: float | None = None  # monotonic
    last_heartbeat_wall: float | None = None
    state: PollerState = "unavailable"

    @property
    def in_flight(self) -> int:
        return self.leased + self.others

    def as_poller(self) -> Poller:
        return Poller(self.node or self.address, self.partition, frozenset(self.domains), self.capacity,
                      self.in_flight, self.state)

    def as_row(self) -> dict[str, Any]:
        return {"node": self.node, "address": self.address, "partition": self.partition,
                "domains": list(self.domains), "capacity": self.capacity, "in_flight": self.in_flight,
                "state": self.state, "last_heartbeat": self.last_heartbeat_wall, "source": self.source}


def state_of(rec: PeerRecord, now: float, lease_ttl: float) -> PollerState:
    if not rec.linked or rec.last_heartbeat is None or now - rec.last_heartbeat > lease_ttl:
        return "unavailable"
    if rec.draining:
        return "draining"
    if rec.in_flight >= rec.capacity:
        return "busy"
    return "available"


def parse_info(info: Mapping[str, Any]) -> tuple[str, tuple[str, ...], int]:
    """(partition, domains, capacity) from a handshake or TXT record; bad values fall back to safe ones."""
    partition = info.get("partition")
    domains = info.get("domains", info.get("domain", ()))
    if isinstance(domains, str):
        domains = [d for d in domains.split(",") if d]
    cap = info.get("cap", info.get("capacity", 0))
    try:
        cap = min(max(0, int(cap)), MAX_COUNT)
    except (TypeError, ValueError):
        cap = 0
    return (partition if isinstance(partition, str) and partition else "default",
            tuple(sorted({d for d in domains if isinstance(d, str)})) if isinstance(domains, list | tuple) else (),
            cap)


class Registry:
    def __init__(self, clock: Clock, lease_ttl: float) -> None:
        self.clock = clock
        self.lease_ttl = lease_ttl
        self.by_node: dict[str, PeerRecord] = {}
        self.unreached: dict[str, PeerRecord] = {}  # address → static/mDNS entry not linked yet
        self.version = 0  # bumps on any change worth persisting

    # --- addresses ---------------------------------------------------------------------------------------

    def add_address(self, address: str, source: Source, info: Mapping[str, Any] | None = None) -> None:
        """A place to dial: a static peer, or an mDNS sighting (which never says anything about liveness)."""
        node = (info or {}).get("node")
        if isinstance(node, str) and node in self.by_node:
            return
        if address in self.unreached or any(r.address == address for r in self.by_node.values()):
            return
        rec = PeerRecord(node if isinstance(node, str) else None, address, source)
        if info:
            rec.partition, rec.domains, rec.capacity = parse_info(info)
        self.unreached[address] = rec
        self.version += 1

    def drop_address(self, address: str) -> None:
        if self.unreached.pop(address, None) is not None:
            self.version += 1

    # --- links and heartbeats ----------------------------------------------------------------------------

    def linked(self, node: str, address: str, source: Source, info: Mapping[str, Any]) -> PeerRecord:
        """A link is up: the handshake counts as the first heartbeat."""
        self.unreached.pop(address, None)
        rec = self.by_node.get(node)
        if rec is None:
            rec = self.by_node[node] = PeerRecord(node, address, source)
        rec.address, rec.source = address, source
        rec.partition, rec.domains, rec.capacity = parse_info(info)
        rec.linked, rec.draining = True, bool(info.get("draining", False))
        self._heard(rec)
        return rec

    def unlinked(self, node: str) -> None:
        rec = self.by_node.get(node)
        if rec is not None and rec.linked:
            rec.linked = False
            self._update(rec)

    def heartbeat(self, node: str, *, in_flight: int, ours: int, draining: bool = False) -> PeerRecord | None:
        rec = self.by_node.get(node)
        if rec is None:
            return None
        rec.others = min(max(0, in_flight - ours), MAX_COUNT)
        rec.draining = draining
        self._heard(rec)
        return rec

    def set_draining(self, node: str) -> None:
        rec = self.by_node.get(node)
        if rec is not None and not rec.draining:
            rec.draining = True
            self._update(rec)

    def set_leased(self, node: str, leased: int) -> None:
        rec = self.by_node.get(node)
        if rec is not None and rec.leased != leased:
            rec.leased = leased
            self._update(rec)

    def mark_full(self, node: str) -> None:
        """It refused work for lack of room: count it full until its next heartbeat says otherwise."""
        rec = self.by_node.get(node)
        if rec is not None:
            rec.others = max(rec.others, rec.capacity - rec.leased)
            self._update(rec)

    def _heard(self, rec: PeerRecord) -> None:
        rec.last_heartbeat = self.clock.monotonic()
        rec.last_heartbeat_wall = self.clock.now()
        self._update(rec)
        self.version += 1

    def _update(self, rec: PeerRecord) -> bool:
        new = state_of(rec, self.clock.monotonic(), self.lease_ttl)
        if new == rec.state:
            return False
        rec.state = new
        self.version += 1
        return True

    def tick(self) -> list[tuple[str, PollerState]]:
        """Re-evaluate every state against the clock; returns (node, new state) of those that changed."""
        return [(node, rec.state) for node, rec in self.by_node.items() if self._update(rec)]

    # --- views -------------------------------------------------------------------------------------------

    def pollers(self) -> list[Poller]:
        return [rec.as_poller() for rec in self.by_node.values()]

    def rows(self) -> list[dict[str, Any]]:
        return [rec.as_row() for rec in [*self.by_node.values(), *self.unreached.values()]]
