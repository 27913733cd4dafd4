"""The cron loop over a real SQLite file: exactly once per slot across DST, restarts, a second loop, clock
steps; missed policies after an outage; @reboot. Time is a FakeClock moved slot to slot."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from cron_helpers import Node, at, cron_jobs, drive, local

from ashjobs.clock import FakeClock, iso, parse_iso
from ashjobs.cron_loop import describe
from ashjobs.store import cron as cron_sql


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def slots_of(node: Node, name: str, zone: str) -> list[str]:
    got = cron_jobs(node.store, name)
    assert len({s for s, _ in got}) == len(got), "a slot has two jobs"
    return [local(parse_iso(s), zone) for s, _ in got]


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York"])
@pytest.mark.parametrize("season", ["spring", "fall"])
def test_dst_each_slot_exactly_once(tmp_path: Path, zone: str, season: str) -> None:
    day = {("Europe/Berlin", "spring"): "2026-03-29", ("Europe/Berlin", "fall"): "2026-10-25",
           ("America/New_York", "spring"): "2026-03-08", ("America/New_York", "fall"): "2026-11-01"}[(zone, season)]
    clock = FakeClock(at(f"{day}T00:00", zone) - 12 * 3600)  # noon the day before
    node = Node(tmp_path / "a.db", clock, [
        {"name": "fixed", "task": "noop", "schedule": "30 2 * * *" if zone == "Europe/Berlin" else "30 1 * * *",
         "timezone": zone},
        {"name": "halfhour", "task": "noop", "schedule": "*/30 * * * *", "timezone": zone},
        {"name": "hourly", "task": "noop", "schedule": "0 * * * *", "timezone": zone},
    ])
    try:
        # Extra ticks every 7 minutes (off the slots) must not fire anything twice.
        run(drive(node.loop, clock, at(f"{day}T12:00", zone), extra=420.0))
        fixed = slots_of(node, "fixed", zone)
        halfhour = slots_of(node, "halfhour", zone)
        hourly = slots_of(node, "hourly", zone)
    finally:
        node.close()
    berlin = zone == "Europe/Berlin"
    if season == "spring":
        # 02:00-03:00 does not exist: 02:30 (Berlin) fires once at the jump; NY's 01:30 is an ordinary slot.
        assert fixed == ([f"{day}T03:00:00+02:00"] if berlin else [f"{day}T01:30:00-05:00"])
        assert len(hourly) == 23 and len(halfhour) == 46
        assert not any(f"{day}T02:" in s for s in halfhour + hourly)
    else:
        off1, off2 = ("+02:00", "+01:00") if berlin else ("-04:00", "-05:00")
        rep = "02" if berlin else "01"
        assert fixed == [f"{day}T{rep}:30:00{off1}"]  # the first occurrence only
        assert len(hourly) == 25 and len(halfhour) == 50  # real elapsed time: the repeated hour twice
        assert [s for s in halfhour if f"T{rep}:" in s] == [
            f"{day}T{rep}:00:00{off1}", f"{day}T{rep}:30:00{off1}", f"{day}T{rep}:00:00{off2}",
            f"{day}T{rep}:30:00{off2}"]


def test_job_carries_entry_options_and_slot_meta(tmp_path: Path) -> None:
    clock = FakeClock(at("2026-01-01T09:59:59", "UTC"))
    node = Node(tmp_path / "a.db", clock, [{
        "name": "opts", "task": "noop", "schedule": "0 10 * * *", "args": {"x": 1}, "queue": "maintenance",
        "priority": 3, "max_attempts": 3, "partition": "P1", "meta": {"team": "ops"}}])
    try:
        run(node.loop.tick())
        clock.advance(1.0)
        run(node.loop.tick())
        row = node.store.conn.execute("SELECT task, args, queue, priority, max_attempts, partition, meta, actor, "
                                      "state FROM jobs").fetchall()
    finally:
        node.close()
    assert len(row) == 1
    task, args, queue, prio, maxa, part, meta, actor, state = row[0]
    assert (task, json.loads(args), queue, prio, maxa, part, actor, state) == (
        "noop", {"x": 1}, "maintenance", 3, 3, "P1", "system:scheduler", "available")
    assert json.loads(meta) == {"team": "ops", "cron": "opts", "slot": "2026-01-01T10:00:00.000Z"}


def test_restart_across_a_slot_does_not_double_fire(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    clock = FakeClock(at("2026-01-01T09:59:30", "UTC"))
    spec = [{"name": "m", "task": "noop", "schedule": "* * * * *", "missed": "all"}]
    first = Node(db, clock, spec)
    run(drive(first.loop, clock, at("2026-01-01T10:00:00.2", "UTC")))
    first.close()  # the daemon dies right after firing 10:00
    second = Node(db, clock, spec)  # restarted within the same slot, on the same file
    try:
        run(second.loop.tick(clock.now()))
        run(drive(second.loop, clock, at("2026-01-01T10:02:10", "UTC")))
        got = [s for s, _ in cron_jobs(second.store, "m")]
    finally:
        second.close()
    assert got == ["2026-01-01T10:00:00.000Z", "2026-01-01T10:01:00.000Z", "2026-01-01T10:02:00.000Z"]


def test_two_loops_on_one_file_fire_each_slot_once(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    clock = FakeClock(at("2026-01-01T09:59:30", "UTC"))
    spec = [{"name": "m", "task": "noop", "schedule": "*/30 * * * * *", "unique_for": "1h"}]
    a, b = Node(db, clock, spec), Node(db, clock, spec)
    try:
        for _ in range(6):
            clock.advance(30.0)
            run(a.loop.tick(clock.now()))
            run(b.loop.tick(clock.now()))
        got = cron_jobs(a.store, "m")
        refused = a.svc.stats["cron_refused"] + b.svc.stats["cron_refused"]
        slot_rows = a.store.conn.execute("SELECT count(*), count(DISTINCT job_id) FROM cron_slots").fetchone()
    finally:
        a.close()
        b.close()
    # unique_for 1h + same args: the first slot's job absorbs later slots' inserts (deduped), one job only;
    # still one slot row per slot, and each slot was fired by exactly one loop.
    assert len(got) == 1 and refused == 5 and tuple(slot_rows) == (5, 1)  # the start tick has no slot


def test_clock_stepped_back_does_not_refire(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    clock = FakeClock(at("2026-01-01T09:59:30", "UTC"))
    spec = [{"name": "m", "task": "noop", "schedule": "* * * * *", "missed": "all"}]
    node = Node(db, clock, spec)
    try:
        run(drive(node.loop, clock, at("2026-01-01T10:01:10", "UTC")))
        clock.jump(-150.0)  # back to 09:58:40
        run(drive(node.loop, clock, at("2026-01-01T10:01:30", "UTC"), extra=5.0))
        assert [s for s, _ in cron_jobs(node.store, "m")] == ["2026-01-01T10:00:00.000Z", "2026-01-01T10:01:00.000Z"]
    finally:
        node.close()
    # A restart while the clock is still behind resumes from the newest recorded slot.
    clock.jump(-60.0)
    again = Node(db, clock, spec)
    try:
        run(drive(again.loop, clock, at("2026-01-01T10:02:01", "UTC"), extra=7.0))
        got = [s for s, _ in cron_jobs(again.store, "m")]
    finally:
        again.close()
    assert got == ["2026-01-01T10:00:00.000Z", "2026-01-01T10:01:00.000Z", "2026-01-01T10:02:00.000Z"]


@pytest.mark.parametrize(("missed", "catchup", "expect_hourly", "expect_quarter"), [
    ("skip", 10, [], []),
    ("latest", 10, ["13:00"], ["13:00"]),
    ("all", 10, ["11:00", "12:00", "13:00"], ["10:45", "11:00", "11:15", "11:30", "11:45", "12:00", "12:15",
                                               "12:30", "12:45", "13:00"]),
    ("all", 2, ["12:00", "13:00"], ["12:45", "13:00"]),
])
def test_missed_policies_after_a_three_hour_outage(tmp_path: Path, missed: str, catchup: int,
                                                   expect_hourly: list[str], expect_quarter: list[str]) -> None:
    db = tmp_path / "a.db"
    clock = FakeClock(at("2026-01-01T09:59:00", "UTC"))
    spec = [{"name": "hourly", "task": "noop", "schedule": "0 * * * *", "missed": missed, "max_catchup": catchup},
            {"name": "quarter", "task": "noop", "schedule": "*/15 * * * *", "missed": missed,
             "max_catchup": catchup}]
    node = Node(db, clock, spec)
    run(drive(node.loop, clock, at("2026-01-01T10:00:05", "UTC")))  # fires 10:00, then the host goes down
    node.close()
    clock.set(at("2026-01-01T13:10:00", "UTC"))
    node = Node(db, clock, spec)
    try:
        run(node.loop.tick(clock.now()))
        caught = {n: [s[11:16] for s, _ in cron_jobs(node.store, n)][1:] for n in ("hourly", "quarter")}
        late = node.store.conn.execute("SELECT count(*) FROM cron_slots WHERE late = 1").fetchone()[0]
        # back to normal on the next slot
        run(drive(node.loop, clock, at("2026-01-01T13:15:01", "UTC")))
        after = [s[11:16] for s, _ in cron_jobs(node.store, "quarter")][-1]
    finally:
        node.close()
    assert caught == {"hourly": expect_hourly, "quarter": expect_quarter}
    assert late == len(expect_hourly) + len(expect_quarter)
    assert after == "13:15"


def test_reboot_fires_once_per_start(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    clock = FakeClock(at("2026-01-01T10:00:00", "UTC"))
    spec = [{"name": "boot", "task": "noop", "schedule": "@reboot"}]
    for _ in range(2):
        node = Node(db, clock, spec)
        run(drive(node.loop, clock, clock.now() + 300, extra=20.0))
        node.close()
    node = Node(db, clock, spec)
    try:
        got = cron_jobs(node.store, "boot")
    finally:
        node.close()
    assert [s for s, _ in got] == [iso(at("2026-01-01T10:00:00", "UTC")), iso(at("2026-01-01T10:05:00", "UTC"))]


def test_paused_entry_never_fires_and_describe_reports_last_fire(tmp_path: Path) -> None:
    clock = FakeClock(at("2026-01-01T09:59:00", "UTC"))
    node = Node(tmp_path / "a.db", clock, [
        {"name": "on", "task": "noop", "schedule": "* * * * *"},
        {"name": "off", "task": "noop", "schedule": "* * * * *", "paused": True}])
    try:
        run(drive(node.loop, clock, at("2026-01-01T10:01:30", "UTC")))
        assert [s for s, _ in cron_jobs(node.store, "off")] == []
        node.store.conn.execute("UPDATE jobs SET state = 'completed'")
        info = describe(node.store.conn, node.loop.entries, clock.now())
        assert cron_sql.last_slots(node.store.conn) == {"on": at("2026-01-01T10:01", "UTC")}
        assert node.svc.stats["cron_fired"] == 2 and "cron_lag_ms" in node.svc.stats
    finally:
        node.close()
    assert info["on"]["last_fire"] == "2026-01-01T10:01:00.000Z"
    assert info["on"]["next_fire"] == "2026-01-01T10:02:00.000Z"
    assert info["on"]["last_outcome"] == "completed"
    assert info["off"] == {**info["off"], "next_fire": None, "last_fire": None, "paused": True}


def test_prune_keeps_each_entrys_newest_slot(tmp_path: Path) -> None:
    clock = FakeClock(at("2026-01-01T09:59:00", "UTC"))
    node = Node(tmp_path / "a.db", clock, [{"name": "m", "task": "noop", "schedule": "* * * * *"}])
    try:
        run(drive(node.loop, clock, at("2026-01-01T10:05:00", "UTC")))
        with node.store.tx() as conn:
            assert cron_sql.prune(conn, at("2026-01-02T00:00", "UTC")) == 5
        assert cron_sql.last_slots(node.store.conn) == {"m": at("2026-01-01T10:05", "UTC")}
    finally:
        node.close()


def test_schedule_env_replaces_the_schedule_in_the_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_REFRESH_CRON", "*/20 * * * *")
    clock = FakeClock(at("2026-01-01T09:59:00", "UTC"))
    node = Node(tmp_path / "a.db", clock, [{"name": "r", "task": "noop", "schedule": "0 0 1 1 *",
                                            "schedule_env": "TEST_REFRESH_CRON"}])
    try:
        run(drive(node.loop, clock, at("2026-01-01T11:00:00", "UTC")))
        got = [s[11:16] for s, _ in cron_jobs(node.store, "r")]
    finally:
        node.close()
    assert got == ["10:00", "10:20", "10:40", "11:00"]
