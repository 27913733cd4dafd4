"""Which poller runs a routed job: pure functions over a snapshot of the registry.

The partition is a hard key (the same IP in P1 and P2 are two different targets), the domain narrows it further;
among candidates the least loaded wins and ties go to rendezvous hashing on the job's target, so one target tends
to stay on one poller while the set of pollers changes.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

PollerState = Literal["available", "busy", "draining", "unavailable"]
POLLER_STATES: tuple[PollerState, ...] = ("available", "busy", "draining", "unavailable")


@dataclass(frozen=True)
class Poller:
    """What routing needs to know about one poller (a registry snapshot)."""

    node: str
    partition: str
    domains: frozenset[str]
    capacity: int
    in_flight: int
    state: PollerState

    @property
    def load(self) -> float:
        return self.in_flight / max(self.capacity, 1)  # correctly rounded: equal fractions give equal floats

    @property
    def has_room(self) -> bool:
        return self.state == "available" and self.in_flight < self.capacity


def serves(p: Poller, partition: str, domain: str | None) -> bool:
    """The routing rule itself: exactly the job's partition and, when it names one, its domain."""
    return p.partition == partition and (domain is None or domain in p.domains)


def candidates(pollers: Iterable[Poller], partition: str, domain: str | None) -> list[Poller]:
    """Pollers allowed to run a job of (partition, domain) that can take one now."""
    return [p for p in pollers if serves(p, partition, domain) and p.has_room]


def _rendezvous(target: str, node: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{target}\x00{node}".encode(), digest_size=8).digest(), "big")


def choose(cands: Collection[Poller], target_key: str, avoid: Collection[str] = ()) -> Poller | None:
    """Least loaded candidate; ties go to the highest rendezvous weight of (target, node). Pollers in
    `avoid` (where this job was just lost) are used only when no other candidate exists."""
    return _pick(list(cands), {p.node: p.in_flight for p in cands}, target_key, avoid)


def _pick(cands: list[Poller], in_flight: Mapping[str, int], target: str, avoid: Collection[str]) -> Poller | None:
    if not cands:
        return None
    preferred = [p for p in cands if p.node not in avoid] if avoid else cands
    preferred = preferred or cands
    loads = [in_flight[p.node] / max(p.capacity, 1) for p in preferred]  # equal fractions → equal floats
    least = min(loads)
    tied = [p for p, load in zip(preferred, loads, strict=True) if load == least]
    if len(tied) == 1:
        return tied[0]
    return min(tied, key=lambda p: (-_rendezvous(target, p.node), p.node))


def target_key(job_id: int, partition: str, args: Mapping[str, Any]) -> str:
    """What a job points at (its host or url), scoped by partition; else the job itself."""
    for name in ("host", "url", "target", "address"):
        value = args.get(name)
        if isinstance(value, str) and value:
            return f"{partition}/{value}"
    return f"job/{job_id}"


def why_not(partition: str, domain: str | None, pollers: Iterable[Poller] = ()) -> str:
    """Why a job of (partition, domain) cannot be placed now, in words for `status` and `jobs show`."""
    where = f"partition {partition}" + (f", domain {domain}" if domain is not None else "")
    matching = [p for p in pollers if serves(p, partition, domain)]
    if not matching:
        return f"no poller for {where}"
    states = Counter(p.state for p in matching)
    if states.get("available", 0) + states.get("busy", 0) and not any(p.has_room for p in matching):
        return f"every poller for {where} is at capacity"
    detail = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    return f"no available poller for {where} ({detail})"


@dataclass(frozen=True)
class Routable:
    """A routed job as the dispatcher sees it."""

    id: int
    partition: str
    domain: str | None
    target: str
    avoid: frozenset[str] = frozenset()


def assign(jobs: Iterable[Routable], pollers: Iterable[Poller]) -> tuple[dict[int, str], dict[int, str]]:
    """Place a batch of jobs in order, counting each placement against the chosen poller's room.
    Returns ({job id: poller node}, {job id: reason it waits})."""
    live = list(pollers)
    in_flight = {p.node: p.in_flight for p in live}
    serving: dict[tuple[str, str | None], list[Poller]] = {}
    placed: dict[int, str] = {}
    waiting: dict[int, str] = {}
    for job in jobs:
        group = (job.partition, job.domain)
        allowed = serving.get(group)
        if allowed is None:
            allowed = serving[group] = [p for p in live if p.state == "available" and serves(p, *group)]
        room = [p for p in allowed if in_flight[p.node] < p.capacity]
        chosen = _pick(room, in_flight, job.target, job.avoid)
        if chosen is None:
            now = [replace(p, in_flight=in_flight[p.node]) for p in live]
            waiting[job.id] = why_not(job.partition, job.domain, now)
            continue
        placed[job.id] = chosen.node
        in_flight[chosen.node] += 1
    return placed, waiting
