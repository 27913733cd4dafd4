"""Metrics: config parsing, and a real scrape of MetricsServer over loopback against a real store."""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import open_services
from prometheus_client.parser import text_string_to_metric_families

from ashjobs import config, health
from ashjobs.clock import FakeClock
from ashjobs.errors import ConfigError
from ashjobs.metrics import MetricsServer, parse_listen
from ashjobs.services import Services
from ashjobs.store import jobs as jobs_sql


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:9464") == ("::1", 9464)
    assert parse_listen(":9464") == ("0.0.0.0", 9464)
    for bad in ("9464", "host:port", "::1:9464", "127.0.0.1:70000"):
        with pytest.raises(ValueError):
            parse_listen(bad)


def test_bad_listen_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"metrics\.listen: expected HOST:PORT"):
        config.from_dict({"metrics": {"listen": "localhost"}}, data_dir=str(tmp_path), where="a.toml")
    assert config.from_dict({}, data_dir=str(tmp_path)).section("metrics").listen == ""


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def svc(tmp_path: Path):
    with open_services(config.from_dict({"metrics": {"listen": "127.0.0.1:0"}, "queues": {"checks": 2}},
                           data_dir=str(tmp_path / "data"))) as s:
        yield s


def run_jobs(svc: Services, outcomes: list[tuple[str, float]]) -> None:
    """One job per (outcome, duration), each claimed and finished for real."""
    clock = svc.clock
    assert isinstance(clock, FakeClock)
    with svc.store.tx() as conn:
        for _ in outcomes:
            jobs_sql.insert(conn, jobs_sql.NewJob(task="noop", max_attempts=1), clock.now())
    for outcome, duration in outcomes:
        start = clock.now()
        with svc.store.tx() as conn:
            (row,) = jobs_sql.claim(conn, "default", 1, "n1", start, 60)
        clock.advance(duration)
        with svc.store.tx() as conn:
            jobs_sql.finish(conn, [jobs_sql.Result(row["id"], row["lease_token"], outcome, "n1",  # type: ignore[arg-type]
                                                   start, duration, error="boom" if outcome != "success" else None)],
                            clock.now())


def test_scrape_reads_the_store_and_healthz_follows_the_beats(svc: Services) -> None:
    server = MetricsServer(svc)
    base = f"http://127.0.0.1:{server.port}"
    try:
        run_jobs(svc, [("success", 0.003), ("success", 0.2), ("failure", 2.0)])
        with svc.store.tx() as conn:
            jobs_sql.insert(conn, jobs_sql.NewJob(task="noop", queue="checks"), svc.clock.now())
            jobs_sql.insert(conn, jobs_sql.NewJob(task="noop"), svc.clock.now())
            jobs_sql.claim(conn, "default", 1, "n1", svc.clock.now(), 60)
        svc.stats["leases_expired"] += 2  # the dispatcher's lifeline and a restarted scheduler's housekeeping
        svc.stats["cluster_leases_lost"] += 1  # a failed dispatch loses its leases too, but none expired
        svc.stats["stale_results_refused"] += 3
        assert ("ashjobs_cron_lag_seconds", ()) not in samples(get(base + "/metrics")[1])  # no cron loop here
        svc.stats["cron_lag_ms"] = 1250
        svc.stats["cron_fired"] += 4
        status, text = get(base + "/metrics")
        assert status == 200
        m = samples(text)
        assert m[("ashjobs_jobs", (("queue", "default"), ("state", "completed")))] == 2
        assert m[("ashjobs_jobs", (("queue", "default"), ("state", "discarded")))] == 1
        assert m[("ashjobs_jobs", (("queue", "default"), ("state", "executing")))] == 1
        assert m[("ashjobs_jobs", (("queue", "checks"), ("state", "available")))] == 1
        assert m[("ashjobs_attempts_total", (("outcome", "success"),))] == 2
        assert m[("ashjobs_attempts_total", (("outcome", "failure"),))] == 1
        assert m[("ashjobs_attempts_total", (("outcome", "lost"),))] == 0
        q = (("queue", "default"),)
        assert m[("ashjobs_job_duration_seconds_bucket", (("le", "0.005"), *q))] == 1
        assert m[("ashjobs_job_duration_seconds_bucket", (("le", "0.25"), *q))] == 2
        assert m[("ashjobs_job_duration_seconds_bucket", (("le", "+Inf"), *q))] == 3
        assert m[("ashjobs_job_duration_seconds_count", q)] == 3
        assert m[("ashjobs_job_duration_seconds_sum", q)] == pytest.approx(2.203)
        assert m[("ashjobs_leases_active", ())] == 1
        assert m[("ashjobs_leases_expired_total", ())] == 2
        assert m[("ashjobs_stale_results_refused_total", ())] == 3
        assert m[("ashjobs_cron_lag_seconds", ())] == 1.25 and m[("ashjobs_cron_fired_total", ())] == 4
        assert m[("ashjobs_build_info", (("node", "n1"), ("version", "0.1.0")))] == 1

        # The next scrape only adds what is new, and counters never go back.
        run_jobs(svc, [("timeout", 40.0)])
        m = samples(get(base + "/metrics")[1])
        assert m[("ashjobs_attempts_total", (("outcome", "timeout"),))] == 1
        assert m[("ashjobs_attempts_total", (("outcome", "success"),))] == 2
        assert m[("ashjobs_job_duration_seconds_bucket", (("le", "30.0"), *q))] == 3
        assert m[("ashjobs_job_duration_seconds_count", q)] == 4

        assert get(base + "/healthz") == (200, "ok\n")
        svc.beat("executor")
        assert get(base + "/healthz") == (200, "ok\n")
        assert isinstance(svc.clock, FakeClock)
        svc.clock.advance(health.STALE_AFTER + 5)
        status, body = get(base + "/healthz")
        assert (status, body) == (503, f"no heartbeat for {health.STALE_AFTER + 5:.0f}s from: executor\n")
        assert get(base + "/nope")[0] == 404
    finally:
        server.close()


def test_off_by_default_and_clear_error_when_port_taken(svc: Services, tmp_path: Path) -> None:
    off = config.from_dict({}, data_dir=str(tmp_path / "data"))
    idle = MetricsServer(Services(cfg=off, store=svc.store, writer=svc.writer, clock=svc.clock, node="n1",
                                  log=logging.getLogger("test")))
    assert idle.port is None

    async def cancelled() -> None:
        task = asyncio.create_task(idle.run())
        await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(cancelled())

    first = MetricsServer(svc)
    try:
        svc.cfg.section("metrics").listen = f"127.0.0.1:{first.port}"
        from ashjobs.errors import AshError

        with pytest.raises(AshError, match=r"metrics\.listen: cannot listen on 127\.0\.0\.1:\d+: Address already in use"):
            MetricsServer(svc)
    finally:
        first.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_scrape_a_running_daemon(tmp_path: Path, daemons: list) -> None:
    from conftest import Cli, Daemon, write_config

    port = free_port()
    cfg = write_config(tmp_path / "ashjobs.toml", f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    cli = Cli(tmp_path / "data", cfg)
    daemon = Daemon(cli)
    daemons.append(daemon)
    daemon.start()
    ids = [cli.enqueue("noop") for _ in range(3)]
    cli.wait_finished(ids)
    status, text = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    m = samples(text)
    assert m[("ashjobs_jobs", (("queue", "default"), ("state", "completed")))] == 3
    assert m[("ashjobs_attempts_total", (("outcome", "success"),))] == 3
    assert m[("ashjobs_job_duration_seconds_count", (("queue", "default"),))] == 3
    assert m[("ashjobs_leases_active", ())] == 0
    assert ("process_resident_memory_bytes", ()) in m
    assert get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
    assert daemon.terminate() == 0


def test_attempt_counters_start_at_the_daemon_start(svc: Services) -> None:
    run_jobs(svc, [("success", 0.1)])  # history from before this daemon: not re-read at every start
    server = MetricsServer(svc)
    try:
        run_jobs(svc, [("failure", 0.1)])
        m = samples(get(f"http://127.0.0.1:{server.port}/metrics")[1])
        assert m[("ashjobs_attempts_total", (("outcome", "success"),))] == 0
        assert m[("ashjobs_attempts_total", (("outcome", "failure"),))] == 1
        assert m[("ashjobs_jobs", (("queue", "default"), ("state", "completed")))] == 1  # gauges: the table
    finally:
        server.close()
