"""SQL for the cluster: the registry snapshot behind `ashjobs peers`, routed-job selection for the dispatcher,
waiting reasons, and cluster counters."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from ashjobs.clock import iso

_PEER_COLS = ("node", "address", "partition", "domains", "capacity", "in_flight", "state", "last_heartbeat",
              "source")


def replace_peers(conn: sqlite3.Connection, rows: Iterable[Mapping[str, Any]], scheduler: str,
                  now: float) -> None:
    """This scheduler's registry, as it stands now (rows as `PeerRecord.as_row()`)."""
    conn.execute("DELETE FROM peers WHERE scheduler = ?", (scheduler,))
    conn.executemany(
        "INSERT OR REPLACE INTO peers (key, node, address, partition, domains, capacity, in_flight, state, "
        "last_heartbeat, source, scheduler, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(r["node"] or r["address"], r["node"], r["address"], r["partition"], json.dumps(list(r["domains"])),
          r["capacity"], r["in_flight"], r["state"], r["last_heartbeat"], r["source"], scheduler, now)
         for r in rows])


def list_peers(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    out = []
    for row in conn.execute(f"SELECT {', '.join(_PEER_COLS)}, scheduler, updated_at FROM peers "
                            "ORDER BY partition, node, address"):
        d = dict(zip((*_PEER_COLS, "scheduler", "updated_at"), row, strict=True))
        d["domains"] = json.loads(d["domains"])
        d["last_heartbeat"] = iso(d["last_heartbeat"])
        d["updated_at"] = iso(d["updated_at"])
        out.append(d)
    return out


def bump(conn: sqlite3.Connection, name: str, n: int = 1) -> None:
    conn.execute("INSERT INTO counters (name, value) VALUES (?, ?) "
                 "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value", (name, n))


def counter(conn: sqlite3.Connection, name: str) -> int:
    row = conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
    return int(row[0]) if row else 0


def available_routed(conn: sqlite3.Connection, served: Mapping[str, Collection[str]], limit: int,
                     paused: Collection[str] = ()) -> list[tuple[int, str, str | None, str, bool]]:
    """Up to `limit` available routed jobs that some poller can take now, in priority order. `served` maps a
    partition to the domains its pollers serve (jobs without a domain go to any of them); jobs nobody serves
    are not fetched, so they cannot crowd out those behind them. Rows: (id, partition, domain, args json,
    has a waiting reason)."""
    if not served or limit <= 0:
        return []
    clauses, params = [], []
    for partition, domains in served.items():
        doms = sorted(domains)
        clauses.append(f"(partition = ? AND (domain IS NULL OR domain IN ({','.join('?' * len(doms))})))")
        params += [partition, *doms]
    skip = f" AND queue NOT IN ({','.join('?' * len(paused))})" if paused else ""
    rows = conn.execute(
        f"SELECT id, partition, domain, args, json_extract(meta, '$.waiting') IS NOT NULL FROM jobs "
        f"WHERE state = 'available' AND partition IS NOT NULL AND ({' OR '.join(clauses)}){skip} "
        "ORDER BY priority, scheduled_at, id LIMIT ?", [*params, *paused, limit])
    return [(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows]


def routed_groups(conn: sqlite3.Connection) -> list[tuple[str, str | None]]:
    """Every (partition, domain) that has available routed jobs."""
    return [(r[0], r[1]) for r in conn.execute(
        "SELECT DISTINCT partition, domain FROM jobs "
        "WHERE state = 'available' AND partition IS NOT NULL")]


def set_waiting(conn: sqlite3.Connection, partition: str, domain: str | None, reason: str | None) -> int:
    """Say in each waiting job's meta why it waits (None: clear it). Only rows whose reason changes."""
    if reason is None:
        sql = ("UPDATE jobs SET meta = json_remove(meta, '$.waiting') WHERE state = 'available' AND partition = ? "
               "AND domain IS ? AND json_extract(meta, '$.waiting') IS NOT NULL")
        return conn.execute(sql, (partition, domain)).rowcount
    sql = ("UPDATE jobs SET meta = json_set(meta, '$.waiting', ?) WHERE state = 'available' AND partition = ? "
           "AND domain IS ? AND json_extract(meta, '$.waiting') IS NOT ?")
    return conn.execute(sql, (reason, partition, domain, reason)).rowcount


def clear_waiting(conn: sqlite3.Connection, ids: Sequence[int]) -> None:
    conn.executemany("UPDATE jobs SET meta = json_remove(meta, '$.waiting') WHERE id = ?", [(i,) for i in ids])


def expired_routed(conn: sqlite3.Connection, now: float) -> list[tuple[int, str | None]]:
    """Routed jobs whose stored wall-clock lease expired (leases a restarted scheduler does not hold)."""
    return [(r[0], r[1]) for r in conn.execute(
        "SELECT id, lease_owner FROM jobs WHERE state = 'executing' AND partition IS NOT NULL "
        "AND lease_expires_at < ?", (now,))]


def routed_executing(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, tuple[str | None, int | None]]:
    """(lease owner, token) of those of `ids` that are executing."""
    if not ids:
        return {}
    rows = conn.execute(f"SELECT id, lease_owner, lease_token FROM jobs WHERE state = 'executing' "
                        f"AND id IN ({','.join('?' * len(ids))})", list(ids))
    return {r[0]: (r[1], r[2]) for r in rows}


def summary(conn: sqlite3.Connection, now: float) -> list[dict[str, Any]]:
    """The `peers` part of `status`."""
    return list_peers(conn)


def cluster_counters(conn: sqlite3.Connection, now: float) -> dict[str, int]:
    """Durable cluster counters for `status` (e.g. results refused for a stale fencing token)."""
    return {"stale_results_refused": counter(conn, "stale_results_refused")}
