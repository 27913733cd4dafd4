"""Cron entries and their fire times: pure functions of (entry, time), no clock of their own.

Expressions are parsed by cronsim: 5 fields (minute hour day-of-month month day-of-week) with ranges, steps,
lists and month/day names, or 6 fields with a LEADING seconds field for sub-minute schedules; the nicknames
@hourly @daily @midnight @weekly @monthly @yearly @annually map onto 5-field forms, and @reboot fires once
each time the daemon starts (it has no slots of its own). `every = "30s"` fires on multiples of the interval
since the Unix epoch, so its slots are the same across restarts and hosts.

Time zones and DST, as cron users expect (Debian cron's rules):
- A schedule at fixed wall-clock times (its minute and hour fields do not start with `*`, e.g. `30 2 * * *`)
  follows the local clock. A slot inside the skipped spring-forward hour fires once, right after the jump;
  a slot inside the repeated fall-back hour fires once, at its first occurrence.
- An interval-like schedule (minute or hour starts with `*`: `*/5 * * * *`, `0 * * * *`) and `every`
  follow real elapsed time: the repeated hour has its slots twice, the skipped hour has none.

Missed slots (the daemon was down, or the wall clock jumped forward): when the loop looks, the newest slot
that has passed fires if it is at most `GRACE` seconds old; older ones were missed: `missed = "skip"` drops
them, `"latest"` fires the newest of them, `"all"` the newest `max_catchup`, oldest first.
"""

from __future__ import annotations

import dataclasses
import heapq
import importlib
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, Literal

from ashjobs.config import Duration
from ashjobs.errors import ConfigError
from ashjobs.queue import MAX_PRIORITY

if TYPE_CHECKING:
    from ashjobs.config import Config

# "module:function(cfg) -> list[CronEntry]" contributing built-in entries; modules absent from this copy are skipped.
PROVIDERS: list[str] = [
    "ashjobs.triggers:cron_entries",
    "ashjobs.apps.trace_summaries:cron_entries",
    "ashjobs.poll:cron_entries",
]

NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
REBOOT = "@reboot"
# A slot first seen more than this many seconds after its time counts as missed (see `plan`).
GRACE = 60.0

Missed = Literal["skip", "latest", "all"]


@dataclass
class CronEntry:
    """One `[[cron]]` entry: run `task` with `args` at each slot of `schedule` (or `every`)."""

    name: str
    task: str
    schedule: str = ""
    every: Duration | None = None  # exactly one of schedule/every
    timezone: str = "UTC"
    args: dict[str, Any] = field(default_factory=dict)
    queue: str = "default"
    priority: int = 0
    max_attempts: int = 20
    unique_for: Duration | None = None
    schedule_env: str | None = None  # an environment variable that, when set, replaces the schedule
    missed: Missed = "skip"
    max_catchup: int = 10
    paused: bool = False
    partition: str | None = None
    domain: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> str | None:
        if not self.name.strip():
            return "name: must not be empty"
        if not self.task.strip():
            return "task: must not be empty"
        overridden = self.schedule_env is not None and os.environ.get(self.schedule_env)
        if not overridden:
            if bool(self.schedule.strip()) == (self.every is not None):
                return "schedule: set exactly one of 'schedule' or 'every'"
            if self.every is not None and self.every <= 0:
                return "every: must be a positive duration"
        if self.schedule.strip():
            problem = schedule_problem(self.schedule)
            if problem:
                return f"schedule: {problem}"
        if overridden:
            problem = schedule_problem(str(overridden))
            if problem:
                return f"schedule_env: ${self.schedule_env}={overridden!r}: {problem}"
        if zone_problem(self.timezone):
            return f"timezone: {zone_problem(self.timezone)}"
        if not self.queue.strip():
            return "queue: must not be empty"
        if not 0 <= self.priority <= MAX_PRIORITY:
            return f"priority: must be 0..{MAX_PRIORITY}"
        if self.max_catchup < 1:
            return "max_catchup: must be >= 1"
        if self.max_attempts < 1:
            return "max_attempts: must be >= 1"
        if self.unique_for is not None and self.unique_for <= 0:
            return "unique_for: must be a positive duration"
        return None


# ---------------------------------------------------------------------------------------------- parsing


def expand(schedule: str) -> str:
    """A schedule in the form cronsim reads: nicknames replaced, whitespace normalised."""
    text = " ".join(schedule.split())
    return NICKNAMES.get(text.lower(), text)


def schedule_problem(schedule: str) -> str | None:
    """None if `schedule` is a valid expression, else why not (one line)."""
    from cronsim import CronSim, CronSimError

    text = expand(schedule)
    if text.lower() == REBOOT:
        return None
    if text.startswith("@"):
        return f"unknown nickname {text!r} (known: {', '.join([*NICKNAMES, REBOOT])})"
    n = len(text.split())
    if n not in (5, 6):
        return (f"{schedule!r}: expected 5 fields (minute hour day month weekday) or 6 with a leading "
                f"seconds field, got {n}")
    try:
        CronSim(text, datetime(2000, 1, 1))
    except CronSimError as e:
        return f"{schedule!r}: {str(e).lower()}"
    except (ValueError, IndexError) as e:
        return f"{schedule!r}: {e}"
    return None


def zone_problem(name: str) -> str | None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"{name!r} is not an IANA time zone (e.g. 'UTC', 'Europe/Berlin', 'America/New_York')"
    return None


def _zone(name: str) -> tzinfo:
    from datetime import UTC
    from zoneinfo import ZoneInfo

    return UTC if name in ("UTC", "Etc/UTC") else ZoneInfo(name)


def effective(entry: CronEntry, environ: Mapping[str, str] | None = None) -> CronEntry:
    """The entry as it will run: `$schedule_env`, when set, replaces its schedule (and `every`)."""
    env = os.environ if environ is None else environ
    if entry.schedule_env and env.get(entry.schedule_env):
        return dataclasses.replace(entry, schedule=env[entry.schedule_env].strip(), every=None)
    return entry


def is_reboot(entry: CronEntry) -> bool:
    return entry.every is None and expand(entry.schedule).lower() == REBOOT


def follows_wall_clock(expr: str) -> bool:
    """Fixed wall-clock times (Debian cron's rule): neither minute nor hour starts with '*'."""
    parts = expr.split()
    minute, hour = (parts[0], parts[1]) if len(parts) == 5 else (parts[1], parts[2])
    return not minute.startswith("*") and not hour.startswith("*")


# ---------------------------------------------------------------------------------------------- fire times


def _wall_to_instant(naive: datetime, tz: tzinfo) -> float:
    """A local wall time → Unix seconds: the first occurrence of a repeated time; for a time that does not
    exist (skipped by a spring-forward jump) the instant of the jump itself."""
    first = naive.replace(tzinfo=tz, fold=0)
    ts = first.timestamp()
    if datetime.fromtimestamp(ts, tz).replace(tzinfo=None) == naive:
        return ts
    # In a gap, fold=1 reads the time with the offset after the jump (an instant before it) and fold=0 with
    # the offset before the jump (an instant after it). Bisect for the jump's first second.
    lo, hi = math.floor(naive.replace(tzinfo=tz, fold=1).timestamp()), math.ceil(ts)
    before = datetime.fromtimestamp(lo, tz).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return float(hi)


def _expr_slots(expr: str, zone: str, start: float, reverse: bool) -> Iterator[float]:
    """Slots of a cron expression strictly after (or before, if reverse) `start`, strictly monotonic."""
    from cronsim import CronSim

    tz = _zone(zone)
    local = datetime.fromtimestamp(start, tz)
    # Inside a repeated hour the wall time of `start` comes again after it (the fold's second pass): start
    # the wall-clock walk one fold earlier there; the filter below drops what is not after `start`.
    wall_start = local.replace(tzinfo=None)
    both = _instants(wall_start.replace(microsecond=0), tz)
    fold = timedelta(seconds=both[-1] - both[0]) if len(both) == 2 else timedelta(0)
    naive = CronSim(expr, wall_start + fold if reverse else wall_start - fold, reverse=reverse)
    if follows_wall_clock(expr):
        # Fixed times: each wall-clock time fires once, placed on the time line by the DST rules above.
        raw: Iterator[float] = (_wall_to_instant(dt, tz) for dt in naive)
    else:
        # Interval-like: every instant whose local time matches fires (twice in a repeated hour, never in a
        # skipped one), which is real elapsed time.
        raw = _every_instant(naive, tz, reverse)
    last = start
    for ts in raw:
        if (ts > last) if not reverse else (ts < last):
            last = ts
            yield ts


def _instants(naive: datetime, tz: tzinfo) -> list[float]:
    """The instants whose local time is `naive`: none in a gap, two in a fold, else one."""
    found = {naive.replace(tzinfo=tz, fold=fold).timestamp() for fold in (0, 1)}
    return sorted(t for t in found if datetime.fromtimestamp(t, tz).replace(tzinfo=None) == naive)


def _every_instant(naive: Iterator[datetime], tz: tzinfo, reverse: bool) -> Iterator[float]:
    # Wall times come in order but a fold's second instant belongs later: hold instants in a heap and
    # release those that no later wall time can precede.
    sign = -1.0 if reverse else 1.0
    heap: list[float] = []
    for dt in naive:
        found = _instants(dt, tz)
        if not found:
            continue
        lead = sign * (found[-1] if reverse else found[0])
        while heap and heap[0] <= lead:
            yield sign * heapq.heappop(heap)
        for t in found:
            heapq.heappush(heap, sign * t)


def _every_slots(every: float, start: float, reverse: bool) -> Iterator[float]:
    k = math.floor(start / every)
    if reverse:
        if k * every >= start:
            k -= 1
        while True:
            yield round(k * every, 6)
            k -= 1
    while True:
        k += 1
        ts = round(k * every, 6)
        if ts > start:
            yield ts


def slots_after(entry: CronEntry, start: float, *, reverse: bool = False) -> Iterator[float]:
    """Every slot of `entry` strictly after `start` in time order (strictly before, newest first, if
    `reverse`). Uses the schedule as written: apply `effective()` first for `schedule_env`."""
    if entry.every is not None and not entry.schedule.strip():
        return _every_slots(float(entry.every), start, reverse)
    if is_reboot(entry):
        return iter(())
    return _expr_slots(expand(entry.schedule), entry.timezone, start, reverse)


def next_fire(entry: CronEntry, after: float) -> float:
    """The first slot strictly after `after` (math.inf for @reboot or a schedule that never fires)."""
    return next(slots_after(entry, after), math.inf)


def slots_between(entry: CronEntry, t0: float, t1: float, limit: int | None = None) -> list[float]:
    """Slots in (t0, t1], oldest first; with `limit`, only the newest `limit` of them."""
    out: list[float] = []
    if limit is not None:
        # Newest first from just past t1 (cron slots are whole seconds; `every` slots are filtered exactly).
        for ts in slots_after(entry, t1 + 1.0, reverse=True):
            if ts > t1:
                continue
            if ts <= t0 or len(out) >= limit:
                break
            out.append(ts)
        return out[::-1]
    for ts in slots_after(entry, t0):
        if ts > t1:
            break
        out.append(ts)
    return out


def next_fires(entry: CronEntry, after: float, n: int) -> list[float]:
    """The next `n` slots after `after` (fewer if the schedule ends)."""
    out: list[float] = []
    for ts in slots_after(entry, after):
        out.append(ts)
        if len(out) >= n:
            break
    return out


def plan(entry: CronEntry, cursor: float, now: float) -> tuple[list[tuple[float, bool]], bool]:
    """What to fire at `now` for an entry whose slots up to `cursor` are dealt with: (slot, late) pairs,
    oldest first, and whether the `missed` policy dropped some. The newest slot in (cursor, now] is on time
    if it is at most GRACE old; every older one was missed (the daemon was down, or the wall clock jumped):
    `skip` drops them, `latest` fires the newest, `all` the newest `max_catchup`."""
    if now <= cursor:  # the wall clock went back: everything up to the cursor was already handled
        return [], False
    keep = {"skip": 0, "latest": 1, "all": entry.max_catchup}[entry.missed]
    found = slots_between(entry, cursor, now, limit=keep + 2)  # +1 on-time slot, +1 tells if any are dropped
    if not found:
        return [], False
    on_time = [(found.pop(), False)] if now - found[-1] <= GRACE else []
    late = [(slot, True) for slot in found[len(found) - keep:]] if keep else []
    return late + on_time, len(found) > keep


# ---------------------------------------------------------------------------------------------- entries


def entries(cfg: Config, environ: Mapping[str, str] | None = None) -> list[CronEntry]:
    """Every cron entry of this node: the built-in providers', then `[[cron]]`. A `[[cron]]` entry named like
    a built-in one replaces it (that is how a built-in's schedule is overridden); any other duplicate name
    is a config error. `schedule_env` is applied here."""
    where = str(cfg.path) if cfg.path else "<config>"
    merged: dict[str, CronEntry] = {}
    origin: dict[str, str] = {}
    for ref in PROVIDERS:
        module, _, attr = ref.partition(":")
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and (module == e.name or module.startswith(e.name + ".")):
                continue
            raise
        for entry in getattr(mod, attr)(cfg):
            if entry.name in merged:
                raise ConfigError(f"{where}: cron[{entry.name!r}]: duplicate name (from {origin[entry.name]} "
                                  f"and {module})")
            problem = entry.validate()
            if problem:
                raise ConfigError(f"{where}: cron[{entry.name!r}] (built-in, {module}): {problem}")
            merged[entry.name], origin[entry.name] = entry, module
    own: set[str] = set()
    for entry in cfg.section("cron"):
        if entry.name in own:
            raise ConfigError(f"{where}: cron[{entry.name!r}]: duplicate name")
        own.add(entry.name)
        merged[entry.name] = entry
    return [effective(e, environ) for e in merged.values()]


def check(cfg: Config) -> None:
    """What the daemon's cron loop would refuse at start: built-in providers (triggers, trace summaries,
    polls) and their schedule overrides, duplicate names, and tasks no loaded module registers."""
    from ashjobs import tasks
    from ashjobs.errors import ConfigError

    where = cfg.path or "<config>"
    for entry in entries(cfg):
        try:
            tasks.get(entry.task)
        except tasks.UnknownTask as e:
            raise ConfigError(f"{where}: cron[{entry.name!r}].task: {e}") from None
        if entry.task == "ashjobs.resource.action":  # a scheduled action: its resource and action must exist
            problem = _scheduled_action_problem(entry.args)
            if problem:
                raise ConfigError(f"{where}: cron[{entry.name!r}].args: {problem}")


def _scheduled_action_problem(args: dict[str, object]) -> str | None:
    from ashjobs import resources
    from ashjobs.errors import UsageError

    name, action = args.get("resource"), args.get("action")
    if not isinstance(name, str) or not isinstance(action, str):
        return "a scheduled action needs args = { resource = \"...\", action = \"...\" }"
    try:
        res = resources.get(name)
    except UsageError as e:
        return str(e)
    if action not in res.actions:
        return (f"resource {name!r} has no action {action!r} "
                f"(known: {', '.join(sorted(res.actions)) or 'none'})")
    return None
