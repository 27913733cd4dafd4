"""Migration sources → [[cron]] entries, each proven over 1,000 fire times against an independent reading of
the old schedule (croniter; our own OnCalendar expansion), across DST in Europe/Berlin and New York."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from ashjobs import config, cron
from ashjobs.clock import parse_iso
from ashjobs.cron import CronEntry
from ashjobs.errors import UsageError
from ashjobs.migrate import Migrated, Report, load, to_toml, verify

FIX = Path(__file__).parent / "fixtures" / "migrate"
START = parse_iso("2026-01-01T00:00:00Z")  # 1,000 daily fires span both DST changes of 2026-2028


def by_name(report: Report) -> dict[str, Migrated]:
    return {m.entry.name: m for m in report.entries}


def test_crontab_lines_become_command_entries() -> None:
    report = load(str(FIX / "crontab"), "crontab")
    verify(report, START)
    got = by_name(report)
    assert list(got) == ["poll-sites", "backup-sh", "logrotate", "warmup", "nightly-report", "true", "echo",
                         "ny-close"]
    assert all(m.equivalent and m.compared in (0, 1000) for m in report.entries), [m.mismatch for m in report.entries]
    poll = got["poll-sites"].entry
    assert (poll.task, poll.schedule, poll.timezone) == ("command", "*/5 * * * *", "UTC")
    assert poll.args == {"argv": ["/usr/local/bin/poll-sites", "--all"],
                         "env": {"PATH": "/usr/local/bin:/usr/bin:/bin"}}  # MAILTO and SHELL are not env
    # a line needing a shell runs through $SHELL -c; quoting is kept without one
    assert got["backup-sh"].entry.args["argv"] == [
        "/bin/bash", "-c", "/usr/local/bin/backup.sh --full > /var/log/backup.log 2>&1"]
    assert got["nightly-report"].entry.args["argv"] == ["/usr/local/bin/nightly-report", "site A"]
    # CRON_TZ applies to the lines after it
    assert [got[n].entry.timezone for n in ("nightly-report", "echo", "ny-close")] == [
        "Europe/Berlin", "Europe/Berlin", "America/New_York"]
    assert got["echo"].entry.args["argv"] == ["echo", "hello"] and got["echo"].entry.args["stdin"] == "world\nagain\n"
    assert got["warmup"].entry.schedule == "@reboot"
    assert [(s.line.split(":")[1], s.reason) for s in report.skipped] == [
        ("15", "'61 * * * *': bad minute"),
        ("16", "unknown nickname '@every_other_day' (known: @yearly, @annually, @monthly, @weekly, @daily, "
               "@midnight, @hourly, @reboot)"),
        ("17", "expected 5 schedule fields and a command")]


def test_systemd_timers_and_services() -> None:
    report = load(str(FIX / "systemd"), "systemd", timezone="Europe/Berlin")
    verify(report, parse_iso("2026-10-20T00:00:00Z"))  # hourly/quarter-hourly fires cross the fall-back
    got = by_name(report)
    assert all(m.equivalent for m in report.entries), [m.mismatch for m in report.entries]
    assert {n: (m.entry.schedule, m.entry.timezone) for n, m in got.items()} == {
        "check-disk": ("0-59/15 0-23 * * *", "Europe/Berlin"),
        "daily": ("0 0 * * *", "Europe/Berlin"),
        "hourly": ("0 0-23 * * *", "Europe/Berlin"),
        "report": ("30 7 * * 1,2,3,4,5", "Europe/Berlin"),
        "report-2": ("0 10 * * 0,6", "Europe/Berlin")}
    disk = got["check-disk"].entry
    assert disk.args == {"argv": ["/usr/local/bin/check-disk", "--threshold", "90"],
                         "env": {"LANG": "C", "LC_ALL": "C"}}
    assert disk.missed == "latest"  # Persistent=true
    assert got["report"].entry.args["argv"] == ["/usr/bin/report-gen", "--out", "/srv/reports"]
    assert "User=reports is not carried over" in got["report"].notes
    assert sorted(s.line for s in report.skipped) == [
        "boot.timer: OnBootSec=5min", "boot.timer: OnUnitActiveSec=1h",
        "lastday.timer: OnCalendar=*-*~01 23:00", "lastday.timer: OnCalendar=2027-*-* 00:00"]


def test_systemd_in_utc_uses_plain_cron_forms() -> None:
    report = load(str(FIX / "systemd"), "systemd")
    verify(report, START)
    assert by_name(report)["check-disk"].entry.schedule == "*/15 * * * *"
    assert by_name(report)["hourly"].entry.schedule == "0 * * * *"
    assert report.all_equivalent


def test_the_proof_catches_a_real_difference_across_dst() -> None:
    """systemd's `hourly` walks the wall clock (24 fires on the fall-back day); cron's `0 * * * *` follows
    real time (25). The translation must spell the hours out, and the proof notices when it does not."""
    naive = Migrated(CronEntry(name="h", task="noop", schedule="0 * * * *", timezone="Europe/Berlin"),
                     "test", "hourly", "oncalendar")
    right = Migrated(CronEntry(name="h", task="noop", schedule="0 0-23 * * *", timezone="Europe/Berlin"),
                     "test", "hourly", "oncalendar")
    report = Report(entries=[naive, right])
    verify(report, parse_iso("2026-10-20T00:00:00Z"))
    assert naive.equivalent is False and naive.mismatch and "new 2026-10-25T01:00:00.000Z" in naive.mismatch
    assert right.equivalent is True


def test_the_proof_refuses_what_the_old_reading_cannot_evaluate() -> None:
    m = Migrated(CronEntry(name="lw", task="noop", schedule="0 0 LW * *"), "test", "0 0 LW * *")
    verify(Report(entries=[m]), START)
    assert m.equivalent is False and "cannot be evaluated independently" in (m.mismatch or "")


@pytest.mark.parametrize("source", ["schedules.csv", "schedules.sqlite"])
def test_schedules_table(source: str) -> None:
    report = load(str(FIX / source), "schedules-table")
    verify(report, START)
    got = by_name(report)
    assert report.all_equivalent
    assert list(got) == ["refresh_trace_summaries", "trigger:expire_packages", "sync_inventory", "nightly_rollup",
                         "weekly_digest"]
    ts = got["refresh_trace_summaries"].entry
    assert (ts.schedule, ts.queue, ts.max_attempts, ts.unique_for, ts.schedule_env) == (
        "*/2 * * * *", "maintenance", 3, 180.0, "TRACE_SUMMARIES_REFRESH_CRON")
    assert "overrides the built-in" in got["refresh_trace_summaries"].notes[0]
    exp = got["trigger:expire_packages"].entry
    assert (exp.schedule, exp.task, exp.args, exp.queue) == ("0 * * * *", "ashjobs.trigger.schedule",
                                                            {"trigger": "expire_packages"}, "onboarding")
    inv = got["sync_inventory"].entry
    assert (inv.task, inv.timezone, inv.unique_for, inv.max_attempts, inv.args) == (
        "sync_inventory", "Europe/Berlin", 600.0, 5, {"full": False})
    assert got["nightly_rollup"].entry.paused is True  # disabled rows are kept, paused
    assert [s.line for s in report.skipped] == ["row 6 (job_key=bad_row)", "row 7 (job_key=bad_zone)"]


def test_toml_round_trips_through_the_config_loader() -> None:
    report = load(str(FIX / "crontab"), "crontab")
    report.entries.extend(load(str(FIX / "schedules.csv"), "schedules-table").entries)
    text = to_toml(report, "header")
    cfg = config.from_dict(tomllib.loads(text))
    loaded = {e.name: e for e in cfg.section("cron")}
    assert loaded == {m.entry.name: m.entry for m in report.entries}
    assert "# skipped: crontab:15: 61 * * * * /usr/bin/broken-minute -- '61 * * * *': bad minute" in text
    assert cron.entries(cfg, environ={})  # and the loop would accept them


def test_bad_sources_are_usage_errors(tmp_path: Path) -> None:
    bad_csv = tmp_path / "x.csv"
    bad_csv.write_text("name,schedule\na,* * * * *\n")
    with pytest.raises(UsageError, match="missing column"):
        load(str(bad_csv), "schedules-table")
    with pytest.raises(UsageError, match="no such file"):
        load(str(tmp_path / "nope.csv"), "schedules-table")
    with pytest.raises(UsageError, match=r"no \.timer files"):
        load(str(tmp_path), "systemd")
    with pytest.raises(UsageError, match="cannot read crontab"):
        load(str(tmp_path / "nope"), "crontab")


def test_system_crontab_user_field(tmp_path: Path) -> None:
    tab = tmp_path / "sys"
    tab.write_text("SHELL=/bin/sh\n17 * * * * root cd / && run-parts --report /etc/cron.hourly\n"
                   "*/10 * * * * www-data /usr/bin/php /srv/cron.php\n")
    report = load(str(tab), "crontab", user_field=True)
    verify(report, START, 50)
    got = by_name(report)
    assert got["cd"].entry.args["argv"] == ["/bin/sh", "-c", "cd / && run-parts --report /etc/cron.hourly"]
    assert got["php"].entry.args["argv"] == ["/usr/bin/php", "/srv/cron.php"]
    assert "ran as user 'www-data' under cron; ashjobs runs it as its own user" in got["php"].notes
    assert report.all_equivalent
