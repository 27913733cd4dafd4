"""Time as an injected dependency: decisions take a clock, tests pass a FakeClock."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock time, Unix seconds (stored in the database)."""
        ...

    def monotonic(self) -> float:
        """Monotonic seconds, for deadlines that must not jump with the wall clock."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that only moves when told to; wall and monotonic move together unless `jump` is used."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._wall = start
        self._mono = 1000.0

    def now(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._wall += seconds
        self._mono += seconds

    def jump(self, seconds: float) -> None:
        """Step the wall clock only (NTP correction, operator mistake)."""
        self._wall += seconds

    def set(self, when: float | datetime) -> None:
        wall = when.timestamp() if isinstance(when, datetime) else when
        self.advance(wall - self._wall)


SYSTEM = SystemClock()


def iso(ts: float | None) -> str | None:
    """Unix seconds → ISO 8601 UTC with millisecond precision, the form every JSON output uses."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> float:
    """ISO 8601 → Unix seconds; a time without zone is taken as UTC."""
    dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()
