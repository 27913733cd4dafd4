"""Numbered forward migrations, one file each in `migrations/` (NNNN_name.sql). A file at version N is
upgraded by running every step after N, each in its own transaction; a file newer than the last step here is
refused. Never edit a released step: add a file with the next number.

Times are Unix seconds (REAL). JSON columns hold compact JSON text.
"""

from __future__ import annotations

from importlib.resources import files


def _load() -> list[str]:
    found = sorted((p.name, p) for p in files("ashjobs.store.migrations").iterdir() if p.name.endswith(".sql"))
    steps = []
    for i, (name, path) in enumerate(found, start=1):
        if not name.startswith(f"{i:04d}_"):
            raise RuntimeError(f"migration {name}: expected number {i:04d} (steps must be contiguous)")
        steps.append(path.read_text())
    return steps


MIGRATIONS: list[str] = _load()
SCHEMA_VERSION = len(MIGRATIONS)
