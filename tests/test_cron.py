"""Fire times as pure functions: parsing, nicknames, seconds, DST rules, `every`, missed policies, config."""

from __future__ import annotations

import itertools
import math

import pytest
from cron_helpers import NO_BUILTINS, at, local

from ashjobs import config, cron
from ashjobs.cron import CronEntry, next_fire, next_fires, plan, slots_between
from ashjobs.errors import ConfigError


def entry(schedule: str = "", zone: str = "UTC", **kw: object) -> CronEntry:
    return CronEntry(name="e", task="noop", schedule=schedule, timezone=zone, **kw)  # type: ignore[arg-type]


def fires(schedule: str, zone: str, start: str, n: int) -> list[str]:
    return [local(t, zone) for t in next_fires(entry(schedule, zone), at(start, zone), n)]


def test_fields_ranges_steps_lists_names() -> None:
    assert fires("0 9-17/4 * * mon-fri", "UTC", "2026-01-02T10:00", 4) == [
        "2026-01-02T13:00:00+00:00", "2026-01-02T17:00:00+00:00",
        "2026-01-05T09:00:00+00:00", "2026-01-05T13:00:00+00:00"]
    assert fires("15 0 1 jan,jul *", "UTC", "2026-01-01T00:00", 2) == [
        "2026-01-01T00:15:00+00:00", "2026-07-01T00:15:00+00:00"]


@pytest.mark.parametrize(("nick", "expect"), [
    ("@hourly", "2026-01-01T01:00:00+00:00"), ("@daily", "2026-01-02T00:00:00+00:00"),
    ("@midnight", "2026-01-02T00:00:00+00:00"), ("@weekly", "2026-01-04T00:00:00+00:00"),
    ("@monthly", "2026-02-01T00:00:00+00:00"), ("@yearly", "2027-01-01T00:00:00+00:00"),
    ("@annually", "2027-01-01T00:00:00+00:00")])
def test_nicknames(nick: str, expect: str) -> None:
    assert fires(nick, "UTC", "2026-01-01T00:00", 1) == [expect]


def test_leading_seconds_field() -> None:
    assert fires("*/20 * * * * *", "UTC", "2026-01-01T00:00:05", 3) == [
        "2026-01-01T00:00:20+00:00", "2026-01-01T00:00:40+00:00", "2026-01-01T00:01:00+00:00"]
    assert fires("30 0 12 * * *", "UTC", "2026-01-01T00:00", 1) == ["2026-01-01T12:00:30+00:00"]


def test_reboot_has_no_slots() -> None:
    assert next_fire(entry("@reboot"), 0.0) == math.inf
    assert cron.is_reboot(entry("@reboot"))


def test_every_is_epoch_aligned_real_time() -> None:
    e = CronEntry(name="e", task="noop", every=config.Duration(90.0), timezone="Europe/Berlin")
    assert slots_between(e, 0.0, 400.0) == [90.0, 180.0, 270.0, 360.0]
    assert slots_between(e, 0.0, 400.0, limit=2) == [270.0, 360.0]
    assert next_fire(e, 90.0) == 180.0
    # Across the fall-back hour the interval stays 90 s of real time.
    t0 = at("2026-10-25T01:59", "Europe/Berlin")
    got = slots_between(e, t0, t0 + 7200)
    assert all(b - a == 90.0 for a, b in itertools.pairwise(got))


# DST: fixed wall-clock times fire once (skipped hour: right after the jump; repeated hour: first occurrence);
# interval-like schedules follow real elapsed time.
@pytest.mark.parametrize(("zone", "spring", "fall"), [
    ("Europe/Berlin", "2026-03-29", "2026-10-25"), ("America/New_York", "2026-03-08", "2026-11-01")])
def test_dst_fixed_time(zone: str, spring: str, fall: str) -> None:
    got = fires("30 2 * * *", zone, f"{spring}T00:00", 2)  # 02:00-03:00 does not exist on `spring`
    assert [g[11:19] for g in got] == ["03:00:00", "02:30:00"] and got[0][:10] == spring
    got = fires("30 1 * * *" if zone == "America/New_York" else "30 2 * * *", zone, f"{fall}T00:00", 2)
    assert got[0][:10] == fall and got[1][:10] != fall  # once on the fall-back day
    first = at(f"{fall}T{'01' if zone == 'America/New_York' else '02'}:30", zone)  # fold=0: first occurrence
    assert next_fire(entry("30 1 * * *" if zone == "America/New_York" else "30 2 * * *", zone),
                     at(f"{fall}T00:00", zone)) == first


def test_dst_interval_follows_real_time() -> None:
    z = "Europe/Berlin"
    assert fires("*/30 * * * *", z, "2026-10-25T01:50", 5) == [
        "2026-10-25T02:00:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-25T02:00:00+01:00",
        "2026-10-25T02:30:00+01:00", "2026-10-25T03:00:00+01:00"]
    assert fires("*/30 * * * *", z, "2026-03-29T01:20", 2) == ["2026-03-29T01:30:00+01:00", "2026-03-29T03:00:00+02:00"]
    day = lambda d: len(slots_between(entry("0 * * * *", z), at(f"{d}T00:00", z) - 1, at(f"{d}T23:59", z)))  # noqa: E731
    assert (day("2026-03-29"), day("2026-10-25"), day("2026-10-26")) == (23, 25, 24)


def test_dst_six_fields_follow_the_same_rules() -> None:
    z = "Europe/Berlin"
    assert fires("0 30 2 * * *", z, "2026-03-29T00:00", 1) == ["2026-03-29T03:00:00+02:00"]
    assert len(slots_between(entry("0 30 2 * * *", z), at("2026-10-25T00:00", z), at("2026-10-25T12:00", z))) == 1


def test_several_skipped_slots_fire_once_after_the_jump() -> None:
    assert fires("0,30 2,3 * * *", "Europe/Berlin", "2026-03-29T01:00", 2) == [
        "2026-03-29T03:00:00+02:00", "2026-03-29T03:30:00+02:00"]


def test_next_fire_from_inside_the_repeated_hour_does_not_repeat() -> None:
    z = "America/New_York"
    second_pass = at("2026-11-01T06:10", "UTC")  # 01:10 EST, after 01:30 EDT already happened
    assert local(next_fire(entry("30 1 * * *", z), second_pass), z) == "2026-11-02T01:30:00-05:00"


def test_plan_on_time_and_missed_policies() -> None:
    t = at("2026-01-01T10:00", "UTC")
    hourly = {p: entry("0 * * * *", missed=p, max_catchup=2) for p in ("skip", "latest", "all")}
    # on time: the slot just passed fires, whatever the policy
    assert plan(hourly["skip"], t - 1, t + 0.2) == ([(t, False)], False)
    assert plan(hourly["skip"], t - 1, t + 59) == ([(t, False)], False)  # up to GRACE late
    # 3 h 10 min outage: 11:00, 12:00, 13:00 missed
    now = t + 3 * 3600 + 600
    assert plan(hourly["skip"], t, now) == ([], True)
    assert plan(hourly["latest"], t, now) == ([(t + 3 * 3600, True)], True)
    assert plan(hourly["all"], t, now) == ([(t + 2 * 3600, True), (t + 3 * 3600, True)], True)
    assert plan(entry("0 * * * *", missed="all"), t, now) == (
        [(t + 3600, True), (t + 7200, True), (t + 3 * 3600, True)], False)
    # a per-second schedule after 5 s away: the current slot is on time, the 4 before it were missed
    sec = entry("* * * * * *", missed="latest")
    assert plan(sec, t, t + 5.5) == ([(t + 4, True), (t + 5, False)], True)
    # the wall clock went back: nothing
    assert plan(hourly["all"], now, t) == ([], False)


def test_schedule_env_replaces_the_schedule() -> None:
    e = CronEntry(name="e", task="noop", schedule="*/2 * * * *", schedule_env="MY_CRON")
    assert cron.effective(e, {"MY_CRON": "0 3 * * *"}).schedule == "0 3 * * *"
    assert cron.effective(e, {}).schedule == "*/2 * * * *"
    cfg = config.from_dict({**NO_BUILTINS, "cron": [{"name": "e", "task": "noop", "schedule": "*/2 * * * *",
                                      "schedule_env": "MY_CRON"}]})
    assert [x.schedule for x in cron.entries(cfg, {"MY_CRON": "*/7 * * * *"})] == ["*/7 * * * *"]


def test_schedule_env_bad_value_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_CRON", "not a cron")
    with pytest.raises(ConfigError, match=r"cron\['e'\]\.schedule_env: \$MY_CRON"):
        config.from_dict({"cron": [{"name": "e", "task": "noop", "schedule": "* * * * *",
                                    "schedule_env": "MY_CRON"}]})


@pytest.mark.parametrize(("fields", "problem"), [
    ({"schedule": "61 * * * *"}, r"cron\['bad'\]\.schedule: '61 \* \* \* \*': bad minute"),
    ({"schedule": "* * * *"}, r"cron\['bad'\]\.schedule: .*expected 5 fields"),
    ({"schedule": "@fortnightly"}, r"cron\['bad'\]\.schedule: unknown nickname"),
    ({"schedule": "* * * * *", "timezone": "Mars/Olympus"}, r"cron\['bad'\]\.timezone: 'Mars/Olympus' is not"),
    ({}, r"cron\['bad'\]\.schedule: set exactly one of 'schedule' or 'every'"),
    ({"schedule": "* * * * *", "every": "5m"}, r"set exactly one"),
    ({"schedule": "* * * * *", "missed": "never"}, r"cron\['bad'\]\.missed"),
])
def test_config_errors_are_one_line_naming_the_entry(fields: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as e:
        config.from_dict({"cron": [{"name": "bad", "task": "noop", **fields}]}, where="ashjobs.toml")
    assert "\n" not in str(e.value) and str(e.value).startswith("ashjobs.toml: ")


def test_config_entries_override_builtins_and_duplicates_are_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    mod = types.ModuleType("fake_provider")
    mod.cron_entries = lambda cfg: [CronEntry(name="builtin", task="noop", schedule="*/2 * * * *")]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_provider", mod)
    monkeypatch.setattr(cron, "PROVIDERS", ["fake_provider:cron_entries", "not_installed_mod:cron_entries"])
    cfg = config.from_dict({**NO_BUILTINS, "cron": [{"name": "builtin", "task": "noop", "schedule": "*/5 * * * *"}]})
    assert [(e.name, e.schedule) for e in cron.entries(cfg)] == [("builtin", "*/5 * * * *")]
    cfg = config.from_dict({"cron": [{"name": "x", "task": "noop", "schedule": "* * * * *"},
                                     {"name": "x", "task": "noop", "schedule": "* * * * *"}]})
    with pytest.raises(ConfigError, match=r"cron\['x'\]: duplicate name"):
        cron.entries(cfg)


# Two independent readings agree: our fire times (cronsim + the DST rules) and croniter's (+ classic cron's
# first-occurrence rule), for generated expressions in zones with DST at 02:00, at midnight, and by 30 min.
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _field(lo: int, hi: int) -> st.SearchStrategy[str]:
    n = st.integers(lo, hi)
    return st.one_of(
        # (croniter reads a one-value range like "0-0" as "*", so ranges here span two values or more)
        st.just("*"), n.map(str), st.lists(n, min_size=2, max_size=2, unique=True).map(lambda p: f"{min(p)}-{max(p)}"),
        st.integers(1, max(1, (hi - lo) // 2)).map(lambda s: f"*/{s}"),
        st.lists(n, min_size=2, max_size=3, unique=True).map(lambda v: ",".join(map(str, sorted(v)))))


@settings(max_examples=60, deadline=None)
@given(minute=_field(0, 59), hour=_field(0, 23), dom=st.one_of(st.just("*"), _field(1, 28)),
       dow=st.one_of(st.just("*"), _field(0, 6)),
       zone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "America/Santiago", "Australia/Lord_Howe"]),
       start=st.integers(1_767_225_600, 1_830_297_600))
def test_fire_times_agree_with_croniter(minute: str, hour: str, dom: str, dow: str, zone: str, start: int) -> None:
    from ashjobs.migrate import croniter_fires

    expr = f"{minute} {hour} {dom} * {dow}"
    assert next_fires(entry(expr, zone), float(start), 40) == croniter_fires(expr, zone, float(start), 40)
