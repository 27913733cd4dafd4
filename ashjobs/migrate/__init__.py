"""Migration from a custom scheduler: schedules table (CSV or SQLite), crontab, systemd timers → `[[cron]]`.

Each source parser yields `Migrated` entries (the new CronEntry plus the old schedule as the source wrote it)
and `Skipped` lines with the reason. `verify` proves each entry: the next N fire times of the old schedule,
computed independently of ashjobs.cron (croniter for cron expressions, our own OnCalendar expansion for
systemd), must equal those of the new entry (`cron.next_fire`) in the old time zone. `to_toml` renders the
entries as `[[cron]]` tables; built-in jobs of a schedules table become `[[cron]]` overrides named like the
built-in entry (a `[[cron]]` entry named like a built-in replaces it).

DST: the old schedule is taken to follow classic cron's rules (a slot in the skipped hour fires once at the
jump, one in the repeated hour once at its first occurrence; interval-like schedules follow real time).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from ashjobs import cron
from ashjobs.config import format_duration
from ashjobs.cron import CronEntry

FORMATS = ("schedules-table", "crontab", "systemd")
COMPARE = 1000  # fire times compared per entry


@dataclass
class Skipped:
    line: str  # where: "crontab:12: <text>", "backup.timer: OnCalendar=...", "row 3 (job_key=x)"
    reason: str


@dataclass
class Migrated:
    entry: CronEntry
    source: str  # where it came from (same form as Skipped.line)
    old_schedule: str  # as the old scheduler had it
    old_kind: Literal["cron", "oncalendar"] = "cron"
    notes: list[str] = field(default_factory=list)
    equivalent: bool | None = None  # None until verified
    compared: int = 0
    mismatch: str | None = None  # the first differing fire time, if any

    def to_dict(self) -> dict[str, Any]:
        e = self.entry
        return {"name": e.name, "schedule": e.schedule, "timezone": e.timezone, "equivalent": self.equivalent,
                "task": e.task, "args": e.args, "queue": e.queue, "max_attempts": e.max_attempts,
                "unique_for": format_duration(e.unique_for) if e.unique_for else None, "paused": e.paused,
                "missed": e.missed, "old_schedule": self.old_schedule, "source": self.source,
                "compared": self.compared, "mismatch": self.mismatch, "notes": self.notes}


@dataclass
class Report:
    entries: list[Migrated] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def all_equivalent(self) -> bool:
        return all(m.equivalent for m in self.entries)

    def to_dict(self) -> dict[str, Any]:
        return {"entries": [m.to_dict() for m in self.entries],
                "skipped": [{"line": s.line, "reason": s.reason} for s in self.skipped]}


def load(source: str, fmt: str, *, timezone: str = "UTC", user_field: bool | None = None) -> Report:
    """Parse `source` in format `fmt`. Raises UsageError for a source that cannot be read at all.
    `user_field`: crontab lines carry a user (default: for /etc/crontab and /etc/cron.d/*)."""
    if fmt == "crontab":
        from ashjobs.migrate.crontab import parse_crontab

        return parse_crontab(source, timezone=timezone, user_field=user_field)
    if fmt == "systemd":
        from ashjobs.migrate.systemd import parse_systemd

        return parse_systemd(source, timezone=timezone)
    from ashjobs.migrate.table import parse_table

    return parse_table(source)


def unique_names(report: Report) -> None:
    """Make entry names unique in order of appearance (name, name-2, name-3...)."""
    seen: dict[str, int] = {}
    for m in report.entries:
        base = m.entry.name
        n = seen.get(base, 0) + 1
        seen[base] = n
        if n > 1:
            m.entry.name = f"{base}-{n}"


# ------------------------------------------------------------------------------------------ equivalence


def old_fires(m: Migrated, start: float, n: int) -> list[float]:
    if m.old_kind == "oncalendar":
        from ashjobs.migrate.systemd import oncalendar_fires

        return oncalendar_fires(m.old_schedule, m.entry.timezone, start, n)
    return croniter_fires(m.old_schedule, m.entry.timezone, start, n)


def verify(report: Report, start: float, n: int = COMPARE,
           progress: Callable[[Migrated], None] | None = None) -> None:
    """Set `equivalent` on every entry: the next `n` fires after `start` of old and new must be equal."""
    for m in report.entries:
        try:
            old = old_fires(m, start, n)
        except Exception as e:  # the independent reading refuses what ours accepted: not proven
            m.equivalent, m.compared = False, 0
            m.mismatch = f"the old schedule cannot be evaluated independently: {e}"
            if progress is not None:
                progress(m)
            continue
        new = cron.next_fires(m.entry, start, n)
        m.compared = max(len(old), len(new))
        m.equivalent = old == new
        if not m.equivalent:
            from ashjobs.clock import iso

            i = next((i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b), min(len(old), len(new)))
            a = iso(old[i]) if i < len(old) else "none"
            b = iso(new[i]) if i < len(new) else "none"
            m.mismatch = f"fire #{i + 1}: old {a}, new {b}"
        if progress is not None:
            progress(m)


def croniter_fires(expr: str, zone: str, start: float, n: int) -> list[float]:
    """The old cron schedule's fires, by croniter (not cronsim): Vixie cron's day-of-month/day-of-week rule
    (`implement_cron_bug`), croniter's own DST stepping, then classic cron's fixed-time rule that a wall time
    repeated by the fall-back hour fires once (croniter would fire it twice)."""
    if expr.strip().lower() == "@reboot":
        return []
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from croniter import croniter

    tz = ZoneInfo(zone)
    fields = expr.split()
    fixed = (len(fields) == 5 and not fields[0].startswith("*") and not fields[1].startswith("*")) or (
        expr.strip().lower() in ("@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually"))
    it = croniter(expr, datetime.fromtimestamp(start, tz), implement_cron_bug=True)
    out: list[float] = []
    seen_walls: set[datetime] = set()
    guard = 0
    while len(out) < n and guard < n * 4:
        guard += 1
        dt = it.get_next(datetime)
        wall = dt.replace(tzinfo=None)
        if fixed and wall in seen_walls:
            continue
        seen_walls.add(wall)
        ts = dt.timestamp()
        if not out or ts > out[-1]:
            out.append(ts)
    return out


def wall_fires(walls: Iterable[Any], zone: str, n: int, start: float) -> list[float]:
    """Local wall times (naive datetimes, ascending) → instants after `start`, cron's DST rules: a time in a
    gap moves to the first real minute after it, a repeated time is taken at its first occurrence."""
    from datetime import UTC, timedelta
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(zone)
    out: list[float] = []
    for wall in walls:
        probe = wall
        while True:
            aware = probe.replace(tzinfo=tz, fold=0)
            if aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == probe:
                break
            probe = (probe + timedelta(minutes=1)).replace(second=0)
        ts = aware.timestamp()
        if ts > start and (not out or ts > out[-1]):
            out.append(ts)
            if len(out) >= n:
                break
    return out


# ------------------------------------------------------------------------------------------ TOML


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError("non-finite number")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if v is None:
        raise ValueError("null has no TOML form")
    raise ValueError(f"cannot write {type(v).__name__} as TOML")


def _entry_lines(m: Migrated) -> Iterator[str]:
    e = m.entry
    yield f"# from {m.source}"
    for note in m.notes:
        yield f"# note: {note}"
    yield "[[cron]]"
    yield f"name = {_toml_value(e.name)}"
    yield f"task = {_toml_value(e.task)}"
    if e.every is not None:
        yield f"every = {_toml_value(format_duration(e.every))}"
    else:
        yield f"schedule = {_toml_value(e.schedule)}"
    defaults = CronEntry(name="", task="")
    for key in ("timezone", "queue", "priority", "max_attempts", "schedule_env", "missed", "max_catchup",
                "paused", "partition", "domain"):
        value = getattr(e, key)
        if value != getattr(defaults, key) and value is not None:
            yield f"{key} = {_toml_value(value)}"
    if e.unique_for is not None:
        yield f"unique_for = {_toml_value(format_duration(e.unique_for))}"
    if e.args:
        yield f"args = {_toml_value(e.args)}"
    if e.meta:
        yield f"meta = {_toml_value(e.meta)}"


def to_toml(report: Report, header: str) -> str:
    """The entries as `[[cron]]` tables; skipped lines are listed as comments so nothing disappears."""
    lines = [f"# {line}" for line in header.splitlines()]
    for s in report.skipped:
        lines.append(f"# skipped: {s.line.replace(chr(10), ' ')} -- {s.reason}")
    for m in report.entries:
        lines.append("")
        lines.extend(_entry_lines(m))
    return "\n".join(lines) + "\n"
