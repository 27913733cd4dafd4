"""SQL for cron slots: record a slot and insert its job in one transaction; read the last fire per entry."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from ashjobs.store import jobs
from ashjobs.store.jobs import NewJob


def fire(conn: sqlite3.Connection, name: str, slot: float, job: NewJob, now: float,
         *, late: bool = False) -> int | None:
    """Record slot (name, slot) and insert its job, in the caller's transaction. Returns the job id, or None
    when the slot was already recorded (fired by an earlier run or by another loop)."""
    cur = conn.execute("INSERT INTO cron_slots (name, slot, fired_at, late) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT (name, slot) DO NOTHING", (name, slot, now, int(late)))
    if cur.rowcount == 0:
        return None
    job_id, _state, conflict = jobs.insert(conn, job, now)
    conn.execute("UPDATE cron_slots SET job_id = ?, deduped = ? WHERE name = ? AND slot = ?",
                 (job_id, int(conflict), name, slot))
    return job_id


def last_slots(conn: sqlite3.Connection) -> dict[str, float]:
    """Entry name → its newest recorded slot."""
    return {r[0]: r[1] for r in conn.execute("SELECT name, max(slot) FROM cron_slots GROUP BY name")}


def fired(conn: sqlite3.Connection, name: str) -> list[tuple[float, int | None]]:
    """(slot, job id) of every recorded slot of `name`, oldest first."""
    return [(r[0], r[1]) for r in conn.execute(
        "SELECT slot, job_id FROM cron_slots WHERE name = ? ORDER BY slot", (name,))]


@dataclass
class LastFire:
    name: str
    slot: float
    fired_at: float
    job_id: int | None
    late: bool
    deduped: bool
    # The job's state, or its last attempt's outcome once the job has been pruned; None if unknown.
    outcome: str | None


def last_fires(conn: sqlite3.Connection) -> dict[str, LastFire]:
    """Per entry name: its newest slot, when it fired, its job, and how that job ended (or where it is)."""
    rows = conn.execute(
        "SELECT s.name, s.slot, s.fired_at, s.job_id, s.late, s.deduped, j.state, "
        "(SELECT outcome FROM attempts a WHERE a.job_id = s.job_id ORDER BY a.id DESC LIMIT 1) "
        "FROM cron_slots s JOIN (SELECT name, max(slot) AS slot FROM cron_slots GROUP BY name) m "
        "ON m.name = s.name AND m.slot = s.slot LEFT JOIN jobs j ON j.id = s.job_id").fetchall()
    return {r[0]: LastFire(r[0], r[1], r[2], r[3], bool(r[4]), bool(r[5]), r[6] or r[7]) for r in rows}


def prune(conn: sqlite3.Connection, before: float, limit: int = 10_000) -> int:
    """Delete slots older than `before`, one batch, always keeping each entry's newest (the loop resumes
    from it after a restart, so it must stay)."""
    return conn.execute(
        "DELETE FROM cron_slots WHERE (name, slot) IN (SELECT s.name, s.slot FROM "
        "cron_slots s WHERE s.slot < ? AND s.slot < (SELECT max(slot) FROM cron_slots m WHERE m.name = s.name) "
        "LIMIT ?)", (before, limit)).rowcount


def as_dict(lf: LastFire) -> dict[str, Any]:
    from ashjobs.clock import iso

    return {"slot": iso(lf.slot), "fired_at": iso(lf.fired_at), "job_id": lf.job_id, "outcome": lf.outcome,
            "late": lf.late, "deduped": lf.deduped}
