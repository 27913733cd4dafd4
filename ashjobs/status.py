"""What `ashjobs status` shows, as data. Renderers (rich, JSON) take this dict and nothing else."""

from __future__ import annotations

import importlib
from typing import Any

from ashjobs import presence
from ashjobs.clock import Clock, iso
from ashjobs.config import Config
from ashjobs.queue import STATES

# Optional parts add to status with a function (conn, now) -> data, by import path; missing ones are skipped.
SECTIONS: dict[str, str] = {
    "trace_summaries": "ashjobs.apps.trace_summaries:last_hour",
    "peers": "ashjobs.store.peers:summary",
    "cluster": "ashjobs.store.peers:cluster_counters",
}


def collect(cfg: Config, clock: Clock) -> dict[str, Any]:
    from ashjobs.store import Store
    from ashjobs.store import jobs as sql

    pid = presence.daemon_pid(cfg.data_dir)
    out: dict[str, Any] = {
        "node": cfg.node.name, "roles": list(cfg.node.roles), "data_dir": str(cfg.data_dir),
        "data_file": str(cfg.db_path), "daemon_running": pid is not None, "daemon_pid": pid if pid and pid > 0 else None,
    }
    if not cfg.db_path.exists():
        out.update({"size_bytes": 0, "schema_version": None, "jobs": dict.fromkeys(STATES, 0), "queues": {},
                    "oldest_available_age_s": None, "recent_failures": []})
        return out
    now = clock.now()
    with Store.from_config(cfg) as store:
        conn = store.conn
        by_queue = sql.counts(conn)
        paused = sql.paused_queues(conn)
        totals = dict.fromkeys(STATES, 0)
        queues: dict[str, Any] = {}
        for name in sorted(set(cfg.queues) | set(by_queue) | paused):
            counts = {s: by_queue.get(name, {}).get(s, 0) for s in STATES}
            for s, n in counts.items():
                totals[s] += n
            queues[name] = {"limit": cfg.queues.get(name), "paused": name in paused, "jobs": counts}
        oldest = sql.oldest_available(conn)
        out.update({
            "size_bytes": sum(p.stat().st_size for p in cfg.data_dir.glob("ashjobs.db*") if p.is_file()),
            "schema_version": store.version,
            "jobs": totals,
            "queues": queues,
            "oldest_available_age_s": round(max(0.0, now - oldest), 3) if oldest is not None else None,
            "recent_failures": sql.recent_failures(conn),
            "waiting": sql.waiting_reasons(conn),
            "generated_at": iso(now),
        })
        for key, ref in SECTIONS.items():
            module, _, attr = ref.partition(":")
            try:
                fn = getattr(importlib.import_module(module), attr)
            except (ModuleNotFoundError, AttributeError):
                continue
            out[key] = fn(conn, now)
    return out


# Column heads short enough for an 80-column terminal.
_SHORT = {"available": "avail", "scheduled": "sched", "executing": "exec", "retryable": "retry",
          "completed": "done", "discarded": "discard", "cancelled": "cancel"}


def render(data: dict[str, Any]) -> Any:
    """A rich renderable of the status dict."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    running = (f"[green]running[/] (pid {data['daemon_pid']})" if data["daemon_running"]
               else "[yellow]not running[/]")
    head = Table.grid(padding=(0, 2))
    head.add_row("node", f"{data['node']} ({', '.join(data['roles'])})")
    head.add_row("daemon", running)
    size = data.get("size_bytes") or 0
    head.add_row("data", f"{data['data_file']} ({size / 1e6:.1f} MB, schema v{data.get('schema_version')})")
    jobs = data["jobs"]
    head.add_row("jobs", "  ".join(f"{s} {n}" for s, n in jobs.items()))
    if data.get("oldest_available_age_s") is not None:
        head.add_row("oldest available", f"{data['oldest_available_age_s']:.1f}s")
    if data.get("cluster"):
        head.add_row("cluster", "  ".join(f"{k.replace('_', ' ')} {v}" for k, v in data["cluster"].items()))
    parts: list[Any] = [head]
    if data["queues"]:
        q = Table("queue", "limit", "paused", *(_SHORT[s] for s in STATES), title="queues", title_justify="left", box=None)
        for name, info in data["queues"].items():
            q.add_row(name, str(info["limit"] or "-"), "yes" if info["paused"] else "",
                      *(str(info["jobs"][s]) for s in STATES))
        parts.append(q)
    for reason in data.get("waiting") or []:
        parts.append(Text(f"waiting: {reason['count']} job(s): {reason['reason']}", style="yellow"))
    if data.get("peers"):
        p = Table("peer", "partition", "state", "in flight", title="peers", title_justify="left", box=None)
        for peer in data["peers"]:
            p.add_row(str(peer.get("node")), str(peer.get("partition")), str(peer.get("state")),
                      str(peer.get("in_flight")))
        parts.append(p)
    if data.get("trace_summaries"):
        t = Table("task", "queue", "runs", "ok", "failed", "lost", "p50 ms", "p95 ms", title="last hour",
                  title_justify="left", box=None)
        for row in data["trace_summaries"]:
            t.add_row(row["task"], row["queue"], str(row["count"]), str(row["successes"]), str(row["failures"]),
                      str(row.get("lost", 0)), f"{row['p50'] * 1000:.1f}", f"{row['p95'] * 1000:.1f}")
        parts.append(t)
    if data.get("recent_failures"):
        f = Table("job", "attempt", "task", "outcome", "when", "error", title="recent failures",
                  title_justify="left", box=None)
        for r in data["recent_failures"]:
            f.add_row(str(r["job_id"]), str(r["attempt"]), r["task"], r["outcome"], r["finished_at"],
                      (r["error"] or "")[:80])
        parts.append(f)
    return Group(*parts)
