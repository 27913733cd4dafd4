"""SQL for resource records, their history, and trigger bookkeeping.

A resource's records live in table `res_<name>`: `id`, the state column, then one column per declared field.
The table is made (and new fields/indexes added) from the declaration on first use in a transaction, so a
new version of a resource migrates itself forward. Every identifier that reaches SQL here was checked
against `IDENTIFIER` when the resource was declared; values always travel as parameters.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ashjobs.resources import Resource

IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,47}$")

SQL_TYPES = {"text": "TEXT", "int": "INTEGER", "real": "REAL", "bool": "INTEGER", "timestamp": "REAL",
             "json": "TEXT"}


def table(res: Resource) -> str:
    return f'"res_{res.name}"'


def _q(name: str) -> str:
    assert IDENTIFIER.match(name), name  # declarations are validated; this guards against misuse
    return f'"{name}"'


def _column_ddl(name: str, sql_type: str, default: Any) -> str:
    ddl = f"{_q(name)} {sql_type}"
    if default is not None:
        # Defaults are ints/floats/strings/bools checked at declaration; render them as SQL literals.
        if isinstance(default, bool):
            literal = str(int(default))
        elif isinstance(default, int | float):
            literal = repr(default)
        else:
            literal = "'" + str(default).replace("'", "''") + "'"
        ddl += f" DEFAULT {literal}"
    return ddl


def ensure(conn: sqlite3.Connection, res: Resource) -> None:
    """Create the record table, add missing columns and indexes. Cheap when nothing is missing; must run
    inside a write transaction when something is."""
    name = f"res_{res.name}"
    have = {r[0] for r in conn.execute("SELECT name FROM pragma_table_info(?)", (name,))}
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?",
                                          (name,))}
    if not have:
        cols = ["id INTEGER PRIMARY KEY", f"{_q(res.state_field)} TEXT NOT NULL"]
        cols += [_column_ddl(f, SQL_TYPES[spec.type], spec.default) for f, spec in res.fields.items()]
        conn.execute(f"CREATE TABLE {table(res)} ({', '.join(cols)})")
        have = {"id", res.state_field, *res.fields}
    for f, spec in res.fields.items():
        if f not in have:  # a field added in a newer declaration
            conn.execute(f"ALTER TABLE {table(res)} ADD COLUMN {_column_ddl(f, SQL_TYPES[spec.type], spec.default)}")
    all_indexes: list[tuple[str, ...]] = [(res.state_field,), *res.indexes]
    for index_cols in all_indexes:
        index = f"res_{res.name}_{'_'.join(index_cols)}"
        if index not in indexes:
            conn.execute(f'CREATE INDEX IF NOT EXISTS "{index}" ON {table(res)} ({", ".join(_q(c) for c in index_cols)})')


def insert(conn: sqlite3.Connection, res: Resource, values: Mapping[str, Any]) -> int:
    ensure(conn, res)
    cols = list(values)
    sql = (f"INSERT INTO {table(res)} ({', '.join(_q(c) for c in cols)}) "
           f"VALUES ({', '.join('?' * len(cols))})")
    cur = conn.execute(sql, [values[c] for c in cols])
    return int(cur.lastrowid or 0)


def get(conn: sqlite3.Connection, res: Resource, record_id: int) -> dict[str, Any] | None:
    ensure(conn, res)
    if not -(2**63) <= record_id < 2**63:  # an id typed by a user: SQLite cannot even bind it
        return None
    row = conn.execute(f"SELECT * FROM {table(res)} WHERE id = ?", (record_id,)).fetchone()
    return dict(row) if row is not None else None


def update(conn: sqlite3.Connection, res: Resource, record_id: int, changes: Mapping[str, Any]) -> None:
    if not changes:
        return
    sets = ", ".join(f"{_q(c)} = ?" for c in changes)
    conn.execute(f"UPDATE {table(res)} SET {sets} WHERE id = ?", [*changes.values(), record_id])


def select(conn: sqlite3.Connection, res: Resource, where_sql: str = "1", params: Sequence[Any] = (),
           *, limit: int = 100, order: str = "id DESC") -> list[dict[str, Any]]:
    """Records matching a compiled where (see ashjobs.where). `order` is a fixed choice of the caller."""
    assert order in ("id DESC", "id ASC"), order
    ensure(conn, res)
    rows = conn.execute(f"SELECT * FROM {table(res)} WHERE {where_sql} ORDER BY {order} LIMIT ?",
                        [*params, limit])
    return [dict(r) for r in rows]


def matching_ids(conn: sqlite3.Connection, res: Resource, where_sql: str, params: Sequence[Any], *,
                 after_id: int, limit: int) -> list[int]:
    """One page of ids matching `where`, in id order after `after_id` (keyset pagination: each page is an
    index range scan, however deep)."""
    return [r[0] for r in conn.execute(
        f"SELECT id FROM {table(res)} WHERE id > ? AND ({where_sql}) ORDER BY id LIMIT ?",
        [after_id, *params, limit])]


def count(conn: sqlite3.Connection, res: Resource, where_sql: str = "1", params: Sequence[Any] = ()) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {table(res)} WHERE {where_sql}", list(params)).fetchone()[0])


def record_matches(conn: sqlite3.Connection, res: Resource, record_id: int, where_sql: str,
                   params: Sequence[Any]) -> bool:
    return conn.execute(f"SELECT 1 FROM {table(res)} WHERE id = ? AND ({where_sql})",
                        [record_id, *params]).fetchone() is not None


def exists(conn: sqlite3.Connection, res: Resource) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (f"res_{res.name}",)).fetchone() is not None


# History

def add_history(conn: sqlite3.Connection, *, resource: str, record_id: int, from_state: str | None,
                to_state: str, action: str, actor: str | None, job_id: int | None, at: float,
                reason: str | None) -> None:
    conn.execute("INSERT INTO resource_history (resource, record_id, from_state, to_state, action, actor, job_id, "
                 "at, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                 (resource, record_id, from_state, to_state, action, actor, job_id, at, reason))


def history(conn: sqlite3.Connection, resource: str, record_id: int | None = None,
            limit: int = 1000) -> list[dict[str, Any]]:
    if record_id is None:
        rows = conn.execute("SELECT * FROM resource_history WHERE resource = ? ORDER BY id LIMIT ?",
                            (resource, limit))
    else:
        rows = conn.execute("SELECT * FROM resource_history WHERE resource = ? AND record_id = ? ORDER BY id "
                            "LIMIT ?", (resource, record_id, limit))
    return [dict(r) for r in rows]


# Trigger bookkeeping

def record_fire(conn: sqlite3.Connection, trigger: str, *, at: float, matched: int, enqueued: int,
                outcome: str, error: str | None = None) -> None:
    conn.execute("INSERT INTO trigger_state (trigger, last_fire_at, last_matched, last_enqueued, last_outcome, "
                 "last_error) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (trigger) DO UPDATE SET "
                 "last_fire_at = excluded.last_fire_at, last_matched = excluded.last_matched, "
                 "last_enqueued = excluded.last_enqueued, last_outcome = excluded.last_outcome, "
                 "last_error = excluded.last_error", (trigger, at, matched, enqueued, outcome, error))


_WORKER_COLUMN = {"completed": "workers_completed", "cancelled": "workers_cancelled",
                  "discarded": "workers_discarded"}


def record_worker(conn: sqlite3.Connection, trigger: str, state: str, at: float) -> None:
    column = _WORKER_COLUMN[state]
    conn.execute(f"INSERT INTO trigger_state (trigger, {column}, last_worker_outcome, last_worker_at) "
                 f"VALUES (?, 1, ?, ?) ON CONFLICT (trigger) DO UPDATE SET {column} = {column} + 1, "
                 "last_worker_outcome = excluded.last_worker_outcome, last_worker_at = excluded.last_worker_at",
                 (trigger, state, at))


def trigger_states(conn: sqlite3.Connection, names: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    rows = conn.execute("SELECT * FROM trigger_state")
    out = {r["trigger"]: dict(r) for r in rows}
    if names is not None:
        wanted = set(names)
        out = {k: v for k, v in out.items() if k in wanted}
    return out


def enqueue_many(conn: sqlite3.Connection, new_jobs: Sequence[Any], now: float) -> int:
    """Insert many jobs in one executemany, skipping uniqueness conflicts. Returns how many were inserted.
    (jobs.insert_many falls back to a statement per job when any is unique; triggers enqueue thousands.)"""
    from ashjobs.store import jobs

    if not new_jobs:
        return 0
    sql = jobs._INSERT.replace("RETURNING id, state", "")
    before = conn.total_changes
    conn.executemany(sql, [jobs._insert_params(j, now) for j in new_jobs])
    return conn.total_changes - before
