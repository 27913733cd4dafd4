"""Job lifecycle rules as pure functions: states, legal transitions, backoff, uniqueness keys.

The store applies these rules in SQL; nothing here does I/O or reads a clock on its own.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

State = Literal["available", "scheduled", "executing", "retryable", "completed", "discarded", "cancelled"]
STATES: tuple[State, ...] = (
    "available", "scheduled", "executing", "retryable", "completed", "discarded", "cancelled",
)
INCOMPLETE: tuple[State, ...] = ("available", "scheduled", "executing", "retryable")
FINISHED: tuple[State, ...] = ("completed", "discarded", "cancelled")
Outcome = Literal["success", "failure", "timeout", "lost", "cancelled"]
OUTCOMES: tuple[Outcome, ...] = ("success", "failure", "timeout", "lost", "cancelled")

# Every legal state change, as Oban draws it. Anything else is a bug or a stale writer.
TRANSITIONS: dict[State, frozenset[State]] = {
    "scheduled": frozenset({"available", "cancelled"}),
    "retryable": frozenset({"available", "cancelled"}),
    "available": frozenset({"executing", "scheduled", "cancelled"}),
    "executing": frozenset({"completed", "retryable", "discarded", "cancelled", "available", "scheduled"}),
    # Finished states leave only by an operator's manual retry.
    "completed": frozenset({"available"}),
    "discarded": frozenset({"available"}),
    "cancelled": frozenset({"available"}),
}


def can_transition(src: State, dst: State) -> bool:
    return dst in TRANSITIONS[src]


DEFAULT_MAX_ATTEMPTS = 20
MAX_PRIORITY = 9


def default_backoff(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds before retry `attempt + 1`: 15 s + 2^attempt s, plus up to 10 % jitter, capped at a day."""
    base = 15.0 + 2.0 ** min(attempt, 20)
    jitter = (rng or random).random() * 0.1 * base
    return min(base + jitter, 86400.0)


@dataclass(frozen=True)
class Failure:
    """What happens to a job whose attempt failed or timed out."""

    state: State
    scheduled_at: float | None


def after_failure(attempt: int, max_attempts: int, now: float, backoff: float) -> Failure:
    """`attempt` is the attempt that just failed (1-based)."""
    if attempt >= max_attempts:
        return Failure("discarded", None)
    return Failure("retryable", now + backoff)


# Uniqueness: a key over chosen fields (+ a time bucket) that is live while the job is in chosen states.
UniqueField = Literal["task", "queue", "args", "partition", "domain"]
DEFAULT_UNIQUE_FIELDS: tuple[UniqueField, ...] = ("task", "queue", "args")
DEFAULT_UNIQUE_STATES: tuple[State, ...] = ("available", "scheduled", "executing", "retryable", "completed")


def state_mask(states: Iterable[State]) -> int:
    mask = 0
    for s in states:
        mask |= 1 << STATES.index(s)
    return mask


def state_bit(state: State) -> int:
    return 1 << STATES.index(state)


@dataclass(frozen=True)
class Unique:
    """Unique options of an insert: `period` None means for ever; `key` replaces the field hash."""

    period: float | None = None
    fields: tuple[UniqueField, ...] = DEFAULT_UNIQUE_FIELDS
    states: tuple[State, ...] = DEFAULT_UNIQUE_STATES
    key: str | None = None


def unique_key(unique: Unique, job: Mapping[str, Any], now: float) -> str:
    """Hash of the chosen fields and the period's bucket. Two inserts in one bucket share a key."""
    if unique.key is not None:
        basis: Any = unique.key
    else:
        basis = [job.get(f) for f in unique.fields]
    digest = hashlib.blake2b(json.dumps(basis, sort_keys=True, separators=(",", ":")).encode(),
                             digest_size=12).hexdigest()
    bucket = "ever" if not unique.period else str(int(now // unique.period))
    return f"{digest}:{bucket}"
