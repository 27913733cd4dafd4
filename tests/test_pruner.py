"""The pruner deletes old finished jobs in batches through the writer and keeps their attempts."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from ashjobs import config, pruner
from ashjobs.clock import FakeClock
from ashjobs.services import Services
from ashjobs.store import Store, Writer
from ashjobs.store import jobs as sql


def test_prunes_only_old_finished_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    cfg = config.from_dict({"node": {"data_dir": str(tmp_path)}, "store": {"prune_after": "1d"}})
    store = Store(cfg.db_path)
    t0 = clock.now()
    with store.tx() as conn:
        old = [sql.insert(conn, sql.NewJob("noop"), t0)[0] for _ in range(12)]
        rows = sql.claim(conn, "default", 12, "n", t0, 30)
        sql.finish(conn, [sql.Result(r["id"], r["lease_token"], "success", "n", t0, 0) for r in rows], t0)
        waiting = sql.insert(conn, sql.NewJob("noop", {"k": 1}), t0)[0]
        recent = sql.insert(conn, sql.NewJob("noop", {"k": 2}), t0 + 86400)[0]
    writer = Writer(store)
    svc = Services(cfg=cfg, store=store, writer=writer, clock=clock, node="n", log=logging.getLogger("t"))
    p = pruner.Pruner(svc)
    monkeypatch.setattr(pruner, "BATCH", 5)
    clock.advance(86400 - 1)
    assert asyncio.run(p.prune_once()) == 0
    clock.advance(2)
    assert asyncio.run(p.prune_once()) == 12
    assert all(sql.get(store.conn, i) is None for i in old)
    assert sql.get(store.conn, waiting) is not None and sql.get(store.conn, recent) is not None
    assert store.conn.execute("SELECT count(*) FROM attempts").fetchone()[0] == 12
    writer.close()
    store.close()


def test_a_long_prune_logs_its_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    cfg = config.from_dict({"node": {"data_dir": str(tmp_path)}, "store": {"prune_after": "1d"}})
    store = Store(cfg.db_path)
    t0 = clock.now()
    with store.tx() as conn:
        for _ in range(45):
            sql.insert(conn, sql.NewJob("noop"), t0)
        rows = sql.claim(conn, "default", 45, "n", t0, 30)
        sql.finish(conn, [sql.Result(r["id"], r["lease_token"], "success", "n", t0, 0) for r in rows], t0)
    writer = Writer(store)
    svc = Services(cfg=cfg, store=store, writer=writer, clock=clock, node="n", log=logging.getLogger("t"))
    monkeypatch.setattr(pruner, "BATCH", 1)  # a progress line every 20 batches: every 20 rows here
    clock.advance(86400 + 1)
    with caplog.at_level(logging.INFO, logger="t"):
        assert asyncio.run(pruner.Pruner(svc).prune_once()) == 45
    assert [r.getMessage() for r in caplog.records] == [
        "pruning: 20 finished jobs deleted so far", "pruning: 40 finished jobs deleted so far",
        "pruned 45 finished job(s) older than 86400s"]
    writer.close()
    store.close()
