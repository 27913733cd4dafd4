"""Is the daemon well? Shared by `/healthz` (metrics) and the systemd watchdog.

Components prove they are alive with `svc.beat(name)`; a component that beats must do so at least every
`BEAT_EVERY` seconds, even when idle. One whose last beat is older than `STALE_AFTER` is taken as hung.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite3

BEAT_EVERY = 5.0  # the executor idles up to 5 s between cycles
STALE_AFTER = 15.0  # three missed beats: a stuck loop, not a slow tick


def stale(alive: Mapping[str, float], now: float, max_age: float = STALE_AFTER) -> list[str]:
    """Names of components whose last beat (monotonic seconds) is older than max_age, sorted."""
    return sorted(name for name, at in alive.items() if now - at > max_age)


def problem(conn: sqlite3.Connection | None, alive: Mapping[str, float], now: float,
            max_age: float = STALE_AFTER) -> str | None:
    """None when the store answers (`SELECT 1` on conn) and every beating component is recent; else the
    reason, one line."""
    if conn is not None:
        import sqlite3

        try:
            conn.execute("SELECT 1").fetchone()
        except sqlite3.Error as e:
            return f"store does not answer: {e}"
    alive = dict(alive)  # a snapshot: the event loop keeps beating while we read
    late = stale(alive, now, max_age)
    if late:
        return "no heartbeat for {:.0f}s from: {}".format(max(now - alive[n] for n in late), ", ".join(late))
    return None
