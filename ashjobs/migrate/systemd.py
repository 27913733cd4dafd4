"""systemd timers → cron entries running the `command` task.

A `.timer` unit's `OnCalendar=` lines (the common forms: the shorthands minutely/hourly/daily/weekly/monthly/
yearly/annually/quarterly/semiannually; `[Weekdays] [Y-M-D] [HH:MM[:SS]] [Zone]` with `*`, lists, `a..b` ranges
and `a/n` or `*/n` repetitions) become cron expressions; the matching `.service`'s `ExecStart=` becomes the
argv. Monotonic timers (OnBootSec=, OnUnitActiveSec=...), year restrictions, `~` (last days), fractional
seconds, and weekday AND day-of-month together (systemd ANDs them, cron ORs them) are reported as skipped.
`Persistent=true` (run once at boot if a run was missed) maps to `missed = "latest"`.

systemd walks the local wall clock, so in a zone with DST every translated expression spells its minute and
hour fields out (`0-59`, `0-23`) to get cron's wall-clock rules rather than its real-time rule for `*`.
`oncalendar_fires` expands an OnCalendar spec on its own (no cron parser) for the equivalence proof.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from ashjobs import cron
from ashjobs.cron import CronEntry
from ashjobs.errors import UsageError
from ashjobs.migrate import Migrated, Report, Skipped, unique_names, wall_fires

SHORTHANDS = {
    "minutely": "*-*-* *:*:00",
    "hourly": "*-*-* *:00:00",
    "daily": "*-*-* 00:00:00",
    "weekly": "Mon *-*-* 00:00:00",
    "monthly": "*-*-01 00:00:00",
    "yearly": "*-01-01 00:00:00",
    "annually": "*-01-01 00:00:00",
    "quarterly": "*-01,04,07,10-01 00:00:00",
    "semiannually": "*-01,07-01 00:00:00",
}
_DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]  # cron: (index + 1) % 7
MONOTONIC = ("OnActiveSec", "OnBootSec", "OnStartupSec", "OnUnitActiveSec", "OnUnitInactiveSec")

Item = tuple[int, int, int]  # start, end, step


class Unsupported(ValueError):
    pass


@dataclass
class Spec:
    weekdays: set[int] | None  # cron numbering 0=Sun..6=Sat
    year: list[Item] | None
    month: list[Item] | None
    day: list[Item] | None
    hour: list[Item] | None
    minute: list[Item] | None
    second: list[Item] | None
    zone: str | None


def _component(text: str, lo: int, hi: int, what: str) -> list[Item] | None:
    if text == "*":
        return None
    items = []
    for part in text.split(","):
        m = re.fullmatch(r"(\*|\d+)(?:\.\.(\d+))?(?:/(\d+))?", part)
        if not m:
            raise Unsupported(f"{what} {part!r} is not a form migrate understands")
        start = lo if m.group(1) == "*" else int(m.group(1))
        step = int(m.group(3)) if m.group(3) else 1
        end = int(m.group(2)) if m.group(2) else (hi if m.group(3) or m.group(1) == "*" else start)
        if not (lo <= start <= hi and lo <= end <= hi and start <= end and step >= 1):
            raise Unsupported(f"{what} {part!r} is out of range {lo}..{hi}")
        items.append((start, end, step))
    return items


def _values(items: list[Item] | None, lo: int, hi: int) -> set[int]:
    if items is None:
        return set(range(lo, hi + 1))
    return {v for a, b, s in items for v in range(a, b + 1, s)}


def _weekdays(text: str) -> set[int]:
    out: set[int] = set()
    for part in text.lower().split(","):
        ends = part.split("..")
        idx = []
        for name in ends:
            found = [i for i, day in enumerate(_DAYS) if len(name) >= 3 and day.startswith(name)]
            if not found:
                raise Unsupported(f"weekday {name!r} is not a form migrate understands")
            idx.append(found[0])
        if len(idx) == 1:
            out.add((idx[0] + 1) % 7)
        elif len(idx) == 2 and idx[0] <= idx[1]:
            out.update((i + 1) % 7 for i in range(idx[0], idx[1] + 1))
        else:
            raise Unsupported(f"weekday range {part!r} is not a form migrate understands")
    return out


def parse_oncalendar(text: str) -> Spec:
    spec = text.strip()
    words = spec.split()
    zone = None
    if len(words) > 1 and not re.match(r"[\d*]", words[-1]) and cron.zone_problem(words[-1]) is None:
        zone, words = words[-1], words[:-1]
    if len(words) == 1 and words[0].lower() in SHORTHANDS:
        words = SHORTHANDS[words[0].lower()].split()
    weekdays = None
    if words and re.fullmatch(r"[A-Za-z][A-Za-z.,]*", words[0]):
        weekdays = _weekdays(words[0])
        words = words[1:]
    date_part, time_part = "*-*-*", "00:00:00"
    for w in words:
        if ":" in w:
            time_part = w
        elif "-" in w:
            date_part = w
        else:
            raise Unsupported(f"{w!r} is not a form migrate understands")
    if "~" in date_part:
        raise Unsupported("'~' (days from the end of the month) has no cron equivalent")
    dparts = date_part.split("-")
    if len(dparts) == 2:
        dparts = ["*", *dparts]
    if len(dparts) != 3:
        raise Unsupported(f"date {date_part!r} is not a form migrate understands")
    tparts = time_part.split(":")
    if len(tparts) == 2:
        tparts.append("00")
    if len(tparts) != 3 or "." in tparts[2]:
        raise Unsupported(f"time {time_part!r} is not a form migrate understands (no fractional seconds)")
    return Spec(weekdays, _component(dparts[0], 1970, 2199, "year"), _component(dparts[1], 1, 12, "month"),
                _component(dparts[2], 1, 31, "day"), _component(tparts[0], 0, 23, "hour"),
                _component(tparts[1], 0, 59, "minute"), _component(tparts[2], 0, 59, "second"), zone)


def _cron_field(items: list[Item] | None, lo: int, hi: int, spell_out: bool) -> str:
    if items is None:
        return f"{lo}-{hi}" if spell_out else "*"
    def one(a: int, b: int, s: int) -> str:
        if a == b:
            return str(a)
        if s == 1:
            return f"{a}-{b}"
        return f"*/{s}" if (a, b) == (lo, hi) and not spell_out else f"{a}-{b}/{s}"

    return ",".join(one(*item) for item in items)


def to_cron(spec: Spec, zone: str) -> str:
    """The cron expression with the same fires (checked afterwards by `verify`)."""
    if spec.year is not None:
        raise Unsupported("a year restriction has no cron equivalent")
    if spec.weekdays is not None and spec.day is not None:
        raise Unsupported("weekday and day of month both restricted: systemd ANDs them, cron ORs them")
    wall = zone not in ("UTC", "Etc/UTC", "GMT")
    fields = [_cron_field(spec.minute, 0, 59, wall), _cron_field(spec.hour, 0, 23, wall),
              _cron_field(spec.day, 1, 31, False), _cron_field(spec.month, 1, 12, False),
              ",".join(str(d) for d in sorted(spec.weekdays)) if spec.weekdays is not None else "*"]
    seconds = _values(spec.second, 0, 59)
    if seconds != {0}:
        fields.insert(0, _cron_field(spec.second, 0, 59, False))
    return " ".join(fields)


def _walls(spec: Spec, first: date) -> Iterator[datetime]:
    years, months, days = _values(spec.year, 1970, 2199), _values(spec.month, 1, 12), _values(spec.day, 1, 31)
    hours = sorted(_values(spec.hour, 0, 23))
    minutes = sorted(_values(spec.minute, 0, 59))
    seconds = sorted(_values(spec.second, 0, 59))
    d = first
    for _ in range(366 * 40):
        if d.year in years and d.month in months and d.day in days and (
                spec.weekdays is None or (d.weekday() + 1) % 7 in spec.weekdays):
            for h in hours:
                for mi in minutes:
                    for s in seconds:
                        yield datetime(d.year, d.month, d.day, h, mi, s)
        d += timedelta(days=1)


def oncalendar_fires(text: str, zone: str, start: float, n: int) -> list[float]:
    """The spec's next `n` fires after `start`: expanded day by day in local wall time (no cron parser)."""
    from zoneinfo import ZoneInfo

    spec = parse_oncalendar(text)
    first = datetime.fromtimestamp(start, ZoneInfo(zone)).date() - timedelta(days=1)
    return wall_fires(_walls(spec, first), zone, n, start)


# ------------------------------------------------------------------------------------------ unit files


def read_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A unit file as section → [(key, value)], keeping repeated keys in order."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, [])
        elif "=" in line and current is not None:
            key, _, value = line.partition("=")
            sections[current].append((key.strip(), value.strip()))
    return sections


def _values_of(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    out: list[str] = []
    for k, v in unit.get(section, []):
        if k == key:
            if v == "":
                out = []  # an empty assignment resets the list
            else:
                out.append(v)
    return out


def _command(service: Path) -> tuple[list[str], dict[str, str], list[str]]:
    """ExecStart= → (argv, env, notes). Raises Unsupported when it cannot be carried over."""
    unit = read_unit(service)
    execs = _values_of(unit, "Service", "ExecStart")
    if not execs:
        raise Unsupported(f"{service.name}: no ExecStart=")
    if len(execs) > 1:
        raise Unsupported(f"{service.name}: several ExecStart= lines")
    cmd = execs[0]
    while cmd and cmd[0] in "-:+!":
        cmd = cmd[1:]
    if cmd.startswith("@"):
        raise Unsupported(f"{service.name}: ExecStart=@ (a separate argv[0]) is not carried over")
    notes = []
    try:
        argv = shlex.split(cmd)
    except ValueError as e:
        raise Unsupported(f"{service.name}: ExecStart= cannot be split: {e}") from None
    if "$" in cmd:
        argv = ["/bin/sh", "-c", cmd]
        notes.append("ExecStart= uses $variables: runs through /bin/sh -c")
    env: dict[str, str] = {}
    for line in _values_of(unit, "Service", "Environment"):
        for item in shlex.split(line):
            k, _, v = item.partition("=")
            env[k] = v
    for key in ("EnvironmentFile", "User", "Group", "WorkingDirectory"):
        for v in _values_of(unit, "Service", key):
            notes.append(f"{key}={v} is not carried over")
    return argv, env, notes


def parse_systemd(source: str, *, timezone: str = "UTC") -> Report:
    path = Path(source)
    if path.is_dir():
        timers = sorted(path.glob("*.timer"))
        if not timers:
            raise UsageError(f"{source}: no .timer files in this directory")
    elif path.is_file() and path.suffix == ".timer":
        timers = [path]
    elif path.exists():
        raise UsageError(f"{source}: expected a .timer file or a directory of units")
    else:
        raise UsageError(f"{source}: no such file or directory")
    report = Report()
    for timer in timers:
        try:
            unit = read_unit(timer)
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"{timer}: cannot read: {e}") from None
        calendars = _values_of(unit, "Timer", "OnCalendar")
        for key in MONOTONIC:
            for v in _values_of(unit, "Timer", key):
                report.skipped.append(Skipped(f"{timer.name}: {key}={v}",
                                              "monotonic timers (relative to boot or activation) have no cron "
                                              "equivalent"))
        if not calendars:
            if not any(_values_of(unit, "Timer", k) for k in MONOTONIC):
                report.skipped.append(Skipped(f"{timer.name}", "no OnCalendar= line"))
            continue
        service_name = (_values_of(unit, "Timer", "Unit") or [timer.stem + ".service"])[-1]
        try:
            argv, env, notes = _command(timer.parent / service_name)
        except FileNotFoundError:
            for cal in calendars:
                report.skipped.append(Skipped(f"{timer.name}: OnCalendar={cal}", f"{service_name} not found "
                                              f"next to the timer"))
            continue
        except Unsupported as e:
            for cal in calendars:
                report.skipped.append(Skipped(f"{timer.name}: OnCalendar={cal}", str(e)))
            continue
        persistent = (_values_of(unit, "Timer", "Persistent") or ["false"])[-1].lower() in ("true", "yes", "1", "on")
        extra = [f"RandomizedDelaySec={v} is not carried over" for v in _values_of(unit, "Timer", "RandomizedDelaySec")]
        for cal in calendars:
            where = f"{timer.name}: OnCalendar={cal}"
            try:
                spec = parse_oncalendar(cal)
                zone = spec.zone or timezone
                schedule = to_cron(spec, zone)
            except Unsupported as e:
                report.skipped.append(Skipped(where, str(e)))
                continue
            args: dict[str, object] = {"argv": argv}
            if env:
                args["env"] = env
            entry = CronEntry(name=re.sub(r"[^a-z0-9_-]+", "-", timer.stem.lower()), task="command",
                              schedule=schedule, timezone=zone, args=args, missed="latest" if persistent else "skip")
            m_notes = [*notes, *extra] + (["Persistent=true: missed = latest"] if persistent else [])
            report.entries.append(Migrated(entry, where, cal, "oncalendar", m_notes))
    unique_names(report)
    return report
