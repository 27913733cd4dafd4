"""The scheduler's in-memory view of the leases it handed to pollers, on its own monotonic clock.

The database holds each lease's wall-clock expiry (so a restarted scheduler can still expire them), but the
node that measures is the scheduler: a wall-clock step must not expire or extend a lease. Pure: time is
passed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class Lease:
    job_id: int
    node: str
    token: int
    deadline: float  # scheduler monotonic seconds


@dataclass
class Renewal:
    """What one heartbeat's lease list turned into."""

    renewed: list[tuple[int, int]] = field(default_factory=list)  # known here: extend in the DB too
    unknown: list[tuple[int, int]] = field(default_factory=list)  # not in memory (restart): ask the DB
    stale: list[int] = field(default_factory=list)  # another token or another node holds it: stop that work


class LeaseTable:
    def __init__(self, ttl: float, *, remember_lost: int = 10_000) -> None:
        self.ttl = ttl
        self._leases: dict[int, Lease] = {}
        self._per_node: dict[str, int] = {}
        # job id → pollers it was lost on, so the next dispatch prefers another candidate.
        self.lost_on: dict[int, set[str]] = {}
        self._remember_lost = remember_lost

    def __len__(self) -> int:
        return len(self._leases)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._leases

    def get(self, job_id: int) -> Lease | None:
        return self._leases.get(job_id)

    def held_by(self, node: str) -> int:
        return self._per_node.get(node, 0)

    def of_node(self, node: str) -> list[Lease]:
        return [lease for lease in self._leases.values() if lease.node == node]

    def add(self, job_id: int, node: str, token: int, now: float) -> Lease:
        self._drop(job_id)
        lease = self._leases[job_id] = Lease(job_id, node, token, now + self.ttl)
        self._per_node[node] = self._per_node.get(node, 0) + 1
        return lease

    def renew(self, node: str, held: Iterable[tuple[int, int]], now: float) -> Renewal:
        out = Renewal()
        for job_id, token in held:
            lease = self._leases.get(job_id)
            if lease is None:
                out.unknown.append((job_id, token))
            elif lease.token == token and lease.node == node:
                lease.deadline = now + self.ttl
                out.renewed.append((job_id, token))
            else:
                out.stale.append(job_id)
        return out

    def release(self, job_id: int, token: int) -> Lease | None:
        """The job's attempt ended under this token: forget its lease (and where it was lost)."""
        lease = self._leases.get(job_id)
        if lease is None or lease.token != token:
            return None
        self._drop(job_id)
        self.lost_on.pop(job_id, None)
        return lease

    def expired(self, now: float) -> list[Lease]:
        """Leases past their deadline, removed from the table; their pollers are remembered per job."""
        gone = [lease for lease in self._leases.values() if lease.deadline <= now]
        for lease in gone:
            self._drop(lease.job_id)
            self.note_lost(lease.job_id, lease.node)
        return gone

    def note_lost(self, job_id: int, node: str) -> None:
        if len(self.lost_on) >= self._remember_lost and job_id not in self.lost_on:
            self.lost_on.pop(next(iter(self.lost_on)))
        self.lost_on.setdefault(job_id, set()).add(node)

    def forget(self, job_id: int) -> Lease | None:
        """Drop a lease whatever its token (the job was cancelled or handed back)."""
        return self._drop(job_id)

    def _drop(self, job_id: int) -> Lease | None:
        lease = self._leases.pop(job_id, None)
        if lease is not None:
            left = self._per_node[lease.node] - 1
            if left:
                self._per_node[lease.node] = left
            else:
                del self._per_node[lease.node]
        return lease
