"""`[metrics] listen`: Prometheus `/metrics` and `/healthz` on a small HTTP server thread.

Every figure is read from the store when Prometheus scrapes (on the server's own read connection, never the
daemon's), so there is nothing to keep in step. Attempt counts and the duration histogram are computed from
the attempts table incrementally: they count the attempts recorded since the daemon started (as Prometheus
counters do: use rate() / increase()), and each scrape only reads the rows added since the last one, so a
scrape stays cheap with millions of attempts in the history.
This module is imported by the config loader: prometheus_client is imported only when the server starts.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ashjobs import health
from ashjobs.errors import AshError

if TYPE_CHECKING:
    import sqlite3

log = logging.getLogger("ashjobs.metrics")

OUTCOMES = ("success", "failure", "timeout", "lost", "cancelled")
STATES = ("available", "scheduled", "executing", "retryable", "completed", "discarded", "cancelled")
# Upper bounds (seconds) of the job duration histogram: from sub-millisecond checks to 10-minute scans.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def parse_listen(text: str) -> tuple[str, int]:
    """'127.0.0.1:9464' → ('127.0.0.1', 9464); '[::1]:9464' and ':9464' (every interface) too."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT like '127.0.0.1:9464', got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"write an IPv6 address in brackets, like '[::1]:9464', got {text!r}")
    return host or "0.0.0.0", int(port)


@dataclass
class MetricsConfig:
    # HOST:PORT to serve /metrics and /healthz on; empty (the default) serves nothing.
    listen: str = ""

    def validate(self) -> str | None:
        if self.listen:
            try:
                parse_listen(self.listen)
            except ValueError as e:
                return f"listen: {e}"
        return None


@dataclass
class AttemptTotals:
    """Running totals over the attempts table, advanced by the rows after `last_id`."""

    last_id: int = 0
    outcomes: dict[str, int] | None = None
    buckets: dict[str, list[int]] | None = None  # queue → cumulative counts per BUCKETS bound, then +Inf
    sums: dict[str, float] | None = None

    def advance(self, conn: sqlite3.Connection) -> None:
        outcomes = self.outcomes if self.outcomes is not None else dict.fromkeys(OUTCOMES, 0)
        buckets = self.buckets if self.buckets is not None else {}
        sums = self.sums if self.sums is not None else {}
        top = conn.execute("SELECT max(id) FROM attempts").fetchone()[0] or 0
        if top > self.last_id:
            for outcome, n in conn.execute("SELECT outcome, count(*) FROM attempts WHERE id > ? AND id <= ? "
                                           "GROUP BY outcome", (self.last_id, top)):
                outcomes[outcome] = outcomes.get(outcome, 0) + n
            # Durations of attempts that ran to an end (lost attempts have no meaningful duration).
            le = ", ".join(f"sum(duration <= {b!r})" for b in BUCKETS)
            for queue, total, count, *counts in conn.execute(
                    f"SELECT queue, sum(duration), count(*), {le} FROM attempts WHERE id > ? AND id <= ? "
                    "AND outcome != 'lost' GROUP BY queue", (self.last_id, top)):
                acc = buckets.setdefault(queue, [0] * (len(BUCKETS) + 1))
                for i, n in enumerate([*counts, count]):
                    acc[i] += n
                sums[queue] = sums.get(queue, 0.0) + total
            self.last_id = top
        self.outcomes, self.buckets, self.sums = outcomes, buckets, sums


def _table_has(conn: sqlite3.Connection, table: str, column: str) -> bool:
    return any(row[1] == column for row in conn.execute(f"PRAGMA table_info({table})"))


class StoreCollector:
    """A prometheus_client collector that reads the store at scrape time."""

    def __init__(self, svc: Any, conn: sqlite3.Connection) -> None:
        self.svc = svc
        self.conn = conn
        self.lock = threading.Lock()  # one scrape at a time on the connection
        # Count from now on: reading a long history at the first scrape would take seconds.
        self.attempts = AttemptTotals(last_id=conn.execute("SELECT coalesce(max(id), 0) FROM attempts").fetchone()[0])

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        from ashjobs import __version__
        from ashjobs.store import jobs

        svc, conn = self.svc, self.conn
        with self.lock:
            now = svc.clock.now()
            conn.execute("BEGIN")  # one snapshot for every figure of this scrape
            try:
                by_queue = jobs.counts(conn)
                self.attempts.advance(conn)
                leases_active = conn.execute(
                    "SELECT count(*) FROM jobs WHERE state = 'executing' AND lease_expires_at >= ?",
                    (now,)).fetchone()[0]
                peers = (conn.execute("SELECT state, count(*) FROM peers GROUP BY state").fetchall()
                         if _table_has(conn, "peers", "state") else None)
                notes = (conn.execute("SELECT status, count(*) FROM notifications GROUP BY status").fetchall()
                         if _table_has(conn, "notifications", "status") else None)
            finally:
                conn.execute("COMMIT")

        info = GaugeMetricFamily("ashjobs_build_info", "ashjobs version and node name", labels=["version", "node"])
        info.add_metric([__version__, svc.node], 1)
        yield info

        g = GaugeMetricFamily("ashjobs_jobs", "Jobs in the table by state and queue", labels=["state", "queue"])
        for queue in sorted({*by_queue, *svc.cfg.queues}):
            for state in STATES:
                g.add_metric([state, queue], by_queue.get(queue, {}).get(state, 0))
        yield g

        c = CounterMetricFamily("ashjobs_attempts", "Attempts recorded, by outcome", labels=["outcome"])
        for outcome, n in sorted((self.attempts.outcomes or {}).items()):
            c.add_metric([outcome], n)
        yield c

        h = HistogramMetricFamily("ashjobs_job_duration_seconds",
                                  "Duration of attempts that ran to an end (all but lost), by queue",
                                  labels=["queue"])
        for queue, counts in sorted((self.attempts.buckets or {}).items()):
            bounds = [*(repr(b) for b in BUCKETS), "+Inf"]
            h.add_metric([queue], list(zip(bounds, counts, strict=True)), (self.attempts.sums or {})[queue])
        yield h

        if "cron_lag_ms" in svc.stats:  # the cron loop runs on this node (it keeps these in svc.stats)
            yield GaugeMetricFamily("ashjobs_cron_lag_seconds", "How late the cron loop enqueued its newest "
                                    "on-time slot (slot time to commit)", value=svc.stats["cron_lag_ms"] / 1000)
        if "cron_fired" in svc.stats:
            yield CounterMetricFamily("ashjobs_cron_fired", "Cron slots fired (a job enqueued)",
                                      value=svc.stats["cron_fired"])

        yield GaugeMetricFamily("ashjobs_leases_active", "Executing jobs holding an unexpired lease",
                                value=leases_active)
        yield CounterMetricFamily("ashjobs_leases_expired", "Leases that expired and had their job rescued",
                                  value=svc.stats.get("leases_expired", 0))
        yield CounterMetricFamily("ashjobs_stale_results_refused",
                                  "Results refused because their fencing token was stale",
                                  value=svc.stats.get("stale_results_refused", 0))
        if peers is not None:
            p = GaugeMetricFamily("ashjobs_peers", "Pollers known to this scheduler, by state", labels=["state"])
            for state, n in peers:
                p.add_metric([state], n)
            yield p
        if notes is not None:
            n_ = GaugeMetricFamily("ashjobs_notifications", "Notifications by delivery status", labels=["status"])
            for status, n in notes:
                n_.add_metric([status], n)
            yield n_


class MetricsServer:
    """Daemon component: serves /metrics and /healthz when `[metrics] listen` is set."""

    def __init__(self, svc: Any) -> None:
        self.svc = svc
        self.listen: str = svc.cfg.section("metrics").listen
        self.server: Any = None
        self.conn: sqlite3.Connection | None = None
        if self.listen:
            self._start()

    def _start(self) -> None:
        from http.server import ThreadingHTTPServer

        from prometheus_client import CollectorRegistry
        from prometheus_client.process_collector import ProcessCollector

        host, port = parse_listen(self.listen)
        self.conn = self.svc.store.new_connection()
        registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=registry)
        collector = StoreCollector(self.svc, self.conn)
        registry.register(collector)
        handler = _handler(self.svc, registry, collector)
        try:
            self.server = ThreadingHTTPServer((host, port), handler)
        except OSError as e:
            raise AshError(f"metrics.listen: cannot listen on {self.listen}: {e.strerror}") from None
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                         name="ashjobs-metrics", daemon=True).start()
        log.info("metrics on http://%s:%d/metrics", host, self.server.server_address[1])

    @property
    def port(self) -> int | None:
        return int(self.server.server_address[1]) if self.server else None

    async def run(self) -> None:
        try:
            await asyncio.get_running_loop().create_future()  # serve until the daemon cancels us
        finally:
            self.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _handler(svc: Any, registry: Any, collector: StoreCollector) -> Any:
    from http.server import BaseHTTPRequestHandler

    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

    class Handler(BaseHTTPRequestHandler):
        server_version = "ashjobs"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                try:
                    body, status, ctype = generate_latest(registry), 200, CONTENT_TYPE_LATEST
                except Exception as e:  # a scrape must not take the server down; say why
                    log.exception("metrics scrape failed")
                    body, status, ctype = f"scrape failed: {e}\n".encode(), 500, "text/plain"
            elif path == "/healthz":
                with collector.lock:
                    problem = health.problem(collector.conn, svc.alive, svc.clock.monotonic())
                body, status, ctype = (problem or "ok").encode() + b"\n", 503 if problem else 200, "text/plain"
            else:
                body, status, ctype = b"not found: try /metrics or /healthz\n", 404, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("metrics %s " + format, self.client_address[0], *args)

    return Handler
