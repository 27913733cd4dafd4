"""A custom scheduler's schedules table (CSV file or SQLite database) → cron entries.

Columns: job_key, cron, timezone, enabled, unique_period_seconds; optional queue, max_attempts, args (JSON
object), task (default: job_key). A disabled row becomes a paused entry (kept, not dropped). The built-in
jobs `refresh_trace_summaries` and `expire_packages` become overrides of the built-in entries: same name and
task as the built-in, the row's schedule, time zone and uniqueness.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path
from typing import Any

from ashjobs import cron
from ashjobs.config import Duration
from ashjobs.cron import CronEntry
from ashjobs.errors import UsageError
from ashjobs.migrate import Migrated, Report, Skipped, unique_names

REQUIRED = ("job_key", "cron", "timezone", "enabled", "unique_period_seconds")
OPTIONAL = ("queue", "max_attempts", "args", "task")
# What each built-in looks like when its provider is not part of this copy (the provider's entry wins).
BUILTINS: dict[str, dict[str, Any]] = {
    "refresh_trace_summaries": {"name": "refresh_trace_summaries", "task": "ashjobs.trace_summaries.refresh",
                                "queue": "maintenance", "max_attempts": 3,
                                "schedule_env": "TRACE_SUMMARIES_REFRESH_CRON"},
    "expire_packages": {"name": "trigger:expire_packages", "task": "ashjobs.trigger.schedule",
                        "args": {"trigger": "expire_packages"}, "queue": "onboarding", "max_attempts": 1},
}


def builtin_entry(key: str) -> CronEntry | None:
    """The built-in cron entry for a legacy job key, from its provider when present."""
    if key not in BUILTINS:
        return None
    try:
        from ashjobs import config

        for e in cron.entries(config.from_dict({}), environ={}):
            if e.name == key or e.args.get("trigger") == key:
                return e
    except Exception:  # a provider that cannot load here: fall back to the known shape
        pass
    return CronEntry(schedule="* * * * *", **BUILTINS[key])


def _truthy(value: Any) -> bool | None:
    text = str(value).strip().lower()
    if text in ("1", "true", "t", "yes", "y", "on"):
        return True
    if text in ("0", "false", "f", "no", "n", "off", ""):
        return False
    return None


def read_rows(source: str) -> list[dict[str, Any]]:
    path = Path(source)
    if not path.is_file():
        raise UsageError(f"{source}: no such file")
    with path.open("rb") as f:
        is_sqlite = f.read(16) == b"SQLite format 3\x00"
    if is_sqlite:
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            conn.row_factory = sqlite3.Row
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")]
            for table in sorted(tables, key=lambda t: ("schedule" not in t.lower(), t)):
                cols = {r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')}
                if set(REQUIRED) <= cols:
                    rows = [dict(r) for r in conn.execute(f'SELECT * FROM "{table}" ORDER BY rowid')]
                    conn.close()
                    return rows
            conn.close()
        except sqlite3.Error as e:
            raise UsageError(f"{source}: cannot read SQLite database: {e}") from None
        raise UsageError(f"{source}: no table with columns {', '.join(REQUIRED)}")
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise UsageError(f"{source}: not a schedules table: missing column(s) {', '.join(missing)} "
                                 f"(header: {', '.join(reader.fieldnames or []) or 'none'})")
            return [dict(r) for r in reader]
    except (UnicodeDecodeError, csv.Error) as e:
        raise UsageError(f"{source}: cannot read CSV: {e}") from None


def parse_table(source: str) -> Report:
    report = Report()
    for i, row in enumerate(read_rows(source), start=1):
        key = str(row.get("job_key") or "").strip()
        where = f"row {i} (job_key={key or '?'})"
        expr = str(row.get("cron") or "").strip()
        zone = str(row.get("timezone") or "").strip() or "UTC"
        if not key:
            report.skipped.append(Skipped(where, "empty job_key"))
            continue
        problem = cron.schedule_problem(expr) if expr else "empty cron"
        if problem:
            report.skipped.append(Skipped(where, f"cron: {problem}"))
            continue
        if cron.zone_problem(zone):
            report.skipped.append(Skipped(where, f"timezone: {cron.zone_problem(zone)}"))
            continue
        enabled = _truthy(row.get("enabled"))
        if enabled is None:
            report.skipped.append(Skipped(where, f"enabled: expected true/false, got {row.get('enabled')!r}"))
            continue
        try:
            period = float(row.get("unique_period_seconds") or 0)
            max_attempts = int(row["max_attempts"]) if str(row.get("max_attempts") or "").strip() else None
            args = json.loads(row["args"]) if str(row.get("args") or "").strip() else {}
            if not isinstance(args, dict):
                raise ValueError("args must be a JSON object")
        except (ValueError, TypeError) as e:
            report.skipped.append(Skipped(where, str(e)))
            continue
        queue = str(row.get("queue") or "").strip() or None
        notes = [] if enabled else ["disabled in the old scheduler: paused"]
        builtin = builtin_entry(key)
        if builtin is not None:
            entry = CronEntry(name=builtin.name, task=builtin.task, args={**builtin.args, **args},
                              queue=queue or builtin.queue, priority=builtin.priority,
                              max_attempts=max_attempts or builtin.max_attempts, schedule_env=builtin.schedule_env,
                              partition=builtin.partition, domain=builtin.domain, meta=dict(builtin.meta))
            notes.append(f"overrides the built-in {builtin.name!r} (task {builtin.task}), keeping the old "
                         "schedule and uniqueness")
        else:
            task = str(row.get("task") or "").strip() or key
            entry = CronEntry(name=key, task=task, args=args, queue=queue or "default",
                              max_attempts=max_attempts or 20)
            notes.append(f"task {task!r} must be registered ([app] modules)")
        entry.schedule, entry.timezone, entry.paused = expr, zone, not enabled
        entry.unique_for = Duration(period) if period > 0 else None
        problem = entry.validate()
        if problem:
            report.skipped.append(Skipped(where, problem))
            continue
        report.entries.append(Migrated(entry, where, expr, "cron", notes))
    unique_names(report)
    return report
