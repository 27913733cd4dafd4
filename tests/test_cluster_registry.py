"""Registry states and scheduler leases over a fake clock; lease fencing on a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from ashjobs.clock import FakeClock
from ashjobs.cluster.leases import LeaseTable
from ashjobs.cluster.registry import Registry
from ashjobs.store import Store
from ashjobs.store import jobs as sj
from ashjobs.store import peers as sp

INFO = {"partition": "p1", "domains": ["site-a"], "cap": 2}


def test_states_follow_heartbeats_only() -> None:
    clock = FakeClock()
    reg = Registry(clock, lease_ttl=2.0)
    reg.add_address("10.0.0.5:7420", "mdns", {"node": "a", **INFO})
    assert [r["state"] for r in reg.rows()] == ["unavailable"]  # an mDNS sighting is not a heartbeat
    reg.linked("a", "10.0.0.5:7420", "mdns", INFO)
    assert reg.by_node["a"].state == "available"
    assert reg.rows()[0]["node"] == "a" and len(reg.rows()) == 1
    reg.set_leased("a", 2)
    assert reg.by_node["a"].state == "busy"
    reg.set_leased("a", 1)
    clock.advance(1.9)
    assert reg.tick() == []
    clock.advance(0.2)  # 2.1 s without a heartbeat: more than lease_ttl
    assert reg.tick() == [("a", "unavailable")]
    reg.heartbeat("a", in_flight=1, ours=1)
    assert reg.by_node["a"].state == "available"
    reg.heartbeat("a", in_flight=3, ours=1)  # it runs 2 jobs for another scheduler
    assert reg.by_node["a"].in_flight == 3 and reg.by_node["a"].state == "busy"
    reg.heartbeat("a", in_flight=0, ours=0, draining=True)
    assert reg.by_node["a"].state == "draining"
    reg.heartbeat("a", in_flight=0, ours=0)
    reg.unlinked("a")
    assert reg.by_node["a"].state == "unavailable"


def test_static_address_becomes_a_node_when_linked() -> None:
    reg = Registry(FakeClock(), lease_ttl=2.0)
    reg.add_address("127.0.0.1:7001", "static")
    assert reg.rows()[0]["node"] is None
    reg.linked("b", "127.0.0.1:7001", "static", {"partition": "p2", "domain": "x,y", "cap": "3"})
    rows = reg.rows()
    assert len(rows) == 1 and rows[0]["node"] == "b" and rows[0]["domains"] == ["x", "y"]
    assert rows[0]["capacity"] == 3 and rows[0]["partition"] == "p2"


def test_bad_info_falls_back_to_safe_values() -> None:
    reg = Registry(FakeClock(), lease_ttl=2.0)
    rec = reg.linked("c", "h:1", "registered", {"partition": 5, "domains": "not-a-list", "cap": "x"})
    assert (rec.partition, rec.capacity, rec.state) == ("default", 0, "busy")


def test_lease_table_renews_expires_and_remembers_where_lost() -> None:
    clock = FakeClock()
    table = LeaseTable(ttl=2.0)
    table.add(1, "a", 10, clock.monotonic())
    table.add(2, "a", 11, clock.monotonic())
    assert table.held_by("a") == 2
    clock.advance(1.5)
    r = table.renew("a", [(1, 10), (2, 99), (3, 12)], clock.monotonic())
    assert r.renewed == [(1, 10)] and r.stale == [2] and r.unknown == [(3, 12)]
    clock.advance(1.0)
    gone = table.expired(clock.monotonic())
    assert [g.job_id for g in gone] == [2]
    assert table.lost_on == {2: {"a"}} and table.held_by("a") == 1
    assert table.release(1, 999) is None  # wrong token: the lease stays
    assert table.release(1, 10) is not None and len(table) == 0


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "t.db")


def test_fencing_and_rescue_in_the_store(store: Store) -> None:
    clock = FakeClock()
    now = clock.now()
    with store.tx() as conn:
        jid, _, _ = sj.insert(conn, sj.NewJob("sleep", partition="p1", domain="site-a"), now)
        (row,) = sj.lease(conn, [jid], "a", now, 2.0)
    first = row["lease_token"]
    with store.tx() as conn:
        assert sp.expired_routed(conn, now + 1) == []
        assert sp.expired_routed(conn, now + 3) == [(jid, "a")]
        sj.rescue(conn, now + 3, ids=[jid], reason="lease expired on a")
        (row,) = sj.lease(conn, [jid], "b", now + 3, 2.0)
    assert row["lease_token"] > first
    with store.tx() as conn:
        stale = sj.Result(jid, first, "success", "a", now, 0.1)
        assert sj.finish(conn, [stale], now + 4) == [stale]
        assert sj.renew(conn, [(jid, first)], now + 6) == [jid]
        sj.finish(conn, [sj.Result(jid, row["lease_token"], "success", "b", now + 3, 0.5)], now + 4)
        attempts = sj.attempts(conn, jid)
    assert [(a["node"], a["outcome"]) for a in attempts] == [("a", "lost"), ("b", "success")]
    assert attempts[0]["error"] == "lease expired on a"


def test_waiting_reason_and_routed_selection(store: Store) -> None:
    now = FakeClock().now()
    with store.tx() as conn:
        a, _, _ = sj.insert(conn, sj.NewJob("noop", partition="p1", domain="site-a"), now)
        b, _, _ = sj.insert(conn, sj.NewJob("noop", domain="site-b"), now)  # partition "default"
        c, _, _ = sj.insert(conn, sj.NewJob("noop"), now)  # unrouted: never ours
        assert sorted(sp.routed_groups(conn)) == [("default", "site-b"), ("p1", "site-a")]
        assert sp.set_waiting(conn, "p1", "site-a", "no poller for partition p1, domain site-a") == 1
        assert sp.set_waiting(conn, "p1", "site-a", "no poller for partition p1, domain site-a") == 0
        got = sp.available_routed(conn, {"p1": {"site-a"}, "default": {"site-b"}}, 10)
        assert [g[0] for g in sp.available_routed(conn, {"p1": set(), "default": {"site-b"}}, 10)] == [b]
    assert [(g[0], g[4]) for g in got] == [(a, True), (b, False)]
    job = sj.get(store.conn, a)
    assert job is not None and job.meta["waiting"] == "no poller for partition p1, domain site-a"
    with store.tx() as conn:
        sp.clear_waiting(conn, [a])
    assert "waiting" not in sj.get(store.conn, a).meta  # type: ignore[union-attr]
    assert c not in [g[0] for g in got]


def test_peers_snapshot_and_counter(store: Store) -> None:
    clock = FakeClock()
    reg = Registry(clock, lease_ttl=2.0)
    reg.linked("a", "127.0.0.1:1", "static", INFO)
    reg.add_address("127.0.0.1:2", "static")
    with store.tx() as conn:
        sp.replace_peers(conn, reg.rows(), "sched", clock.now())
        sp.bump(conn, "stale_results_refused", 2)
    rows = sp.list_peers(store.conn)
    assert [(r["node"], r["state"], r["source"]) for r in rows] == [
        (None, "unavailable", "static"), ("a", "available", "static")]
    assert rows[1]["domains"] == ["site-a"] and rows[1]["last_heartbeat"].endswith("Z")
    assert sp.counter(store.conn, "stale_results_refused") == 2


def test_jobs_nobody_can_take_do_not_crowd_out_the_rest(store: Store) -> None:
    now = FakeClock().now()
    with store.tx() as conn:
        for _ in range(5):  # first in line, for a site no poller serves
            sj.insert(conn, sj.NewJob("noop", partition="p1", domain="site-z", priority=0), now)
        served = [sj.insert(conn, sj.NewJob("noop", partition="p1", domain="site-a", priority=5), now)[0],
                  sj.insert(conn, sj.NewJob("noop", partition="p1", priority=5), now)[0]]
    got = sp.available_routed(store.conn, {"p1": {"site-a"}}, 2)
    assert [g[0] for g in got] == served


def test_a_poller_that_refuses_for_room_counts_as_full_until_it_heartbeats() -> None:
    reg = Registry(FakeClock(), lease_ttl=2.0)
    reg.linked("a", "h:1", "static", {"partition": "p1", "cap": 4})
    reg.set_leased("a", 1)
    reg.mark_full("a")
    assert reg.by_node["a"].state == "busy"
    reg.heartbeat("a", in_flight=1, ours=1)
    assert reg.by_node["a"].state == "available"
