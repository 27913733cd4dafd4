"""Logging: `--log-format text|json`, `--log-level`. Job outcomes carry job_id, task, attempt, node, duration."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_FIELDS = ("job_id", "task", "attempt", "node", "outcome", "duration", "error", "peer", "component")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
               "msg": record.getMessage()}
        for f in _FIELDS:
            if hasattr(record, f):
                out[f] = getattr(record, f)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        extra = " ".join(f"{f}={getattr(record, f)}" for f in _FIELDS
                         if getattr(record, f, None) is not None and f not in ("job_id",))
        line = f"{ts}Z {record.levelname.lower():7} {record.getMessage()}" + (f" {extra}" if extra else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def job_outcome(log: logging.Logger, result: Any, task: str, attempt: int) -> None:
    """The one info line per finished attempt: `result` is a store.jobs.Result, logged by whoever records it
    (the local executor for its jobs, the scheduler's dispatcher for routed ones)."""
    if not log.isEnabledFor(logging.INFO):
        return
    outcome = "snoozed" if result.snooze is not None else result.outcome
    log.info("job %s %s", result.job_id, outcome, extra={
        "job_id": result.job_id, "task": task, "attempt": attempt, "node": result.node, "outcome": outcome,
        "duration": round(result.duration, 6), "error": result.error})


def setup(fmt: str = "text", level: str = "info") -> logging.Logger:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("ashjobs")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    return root
