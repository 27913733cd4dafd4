"""`ashjobs migrate` as a real subprocess: JSON report, exit codes, atomic --write, --dry-run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from ashjobs import config

ROOT = Path(__file__).resolve().parent.parent
FIX = Path(__file__).parent / "fixtures" / "migrate"


def ashjobs(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASHJOBS_")}
    env["PYTHONPATH"] = str(ROOT)
    env["ASHJOBS_DATA_DIR"] = str(cwd / "data")
    return subprocess.run([sys.executable, "-m", "ashjobs", "migrate", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_json_report(tmp_path: Path) -> None:
    r = ashjobs(str(FIX / "schedules.csv"), "--format", "schedules-table", "--json", "--compare", "200",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [e["name"] for e in doc["entries"]][:2] == ["refresh_trace_summaries", "trigger:expire_packages"]
    assert all({"name", "schedule", "timezone", "equivalent"} <= set(e) and e["equivalent"] for e in doc["entries"])
    assert doc["skipped"] == [
        {"line": "row 6 (job_key=bad_row)", "reason": "cron: '0 25 * * *': bad hour"},
        {"line": "row 7 (job_key=bad_zone)",
         "reason": "timezone: 'Mars/Base' is not an IANA time zone (e.g. 'UTC', 'Europe/Berlin', 'America/New_York')"}]


def test_write_is_atomic_and_loads_as_config(tmp_path: Path) -> None:
    out = tmp_path / "cron.toml"
    r = ashjobs(str(FIX / "crontab"), "--format", "crontab", "--write", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "wrote 8 entries" in r.stderr
    assert "8 entries" in r.stdout  # the table is still shown
    cfg = config.from_dict(tomllib.loads(out.read_text()))
    assert len(cfg.section("cron")) == 8
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".cron.toml")] == []  # no temp file left
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o644 & ~umask  # like any new file, not mkstemp's 0600


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "cron.toml"
    r = ashjobs(str(FIX / "systemd"), "--format", "systemd", "--write", str(out), "--dry-run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "dry run: would write 5 entries" in r.stderr and not out.exists()


def test_not_equivalent_refuses_to_write_and_keeps_the_old_file(tmp_path: Path) -> None:
    tab = tmp_path / "crontab"
    tab.write_text("0 3 * * * /usr/bin/fine\n0 0 LW * * /usr/bin/last-weekday\n")
    out = tmp_path / "cron.toml"
    out.write_text("# ashjobs migrate crontab --format crontab\n# the previous run\n")
    r = ashjobs(str(tab), "--format", "crontab", "--write", str(out), "--json", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip() == f"ashjobs: not written to {out}: 1 entry not equivalent: last-weekday"
    doc = json.loads(r.stdout)
    assert [(e["name"], e["equivalent"]) for e in doc["entries"]] == [("fine", True), ("last-weekday", False)]
    assert out.read_text() == "# ashjobs migrate crontab --format crontab\n# the previous run\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cron.toml", "crontab"]


def test_bad_source_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("job,when\nx,* * * * *\n")
    for args in ([str(bad), "--format", "schedules-table"], [str(tmp_path / "missing"), "--format", "crontab"],
                 [str(FIX / "crontab"), "--format", "crontab", "--timezone", "Nowhere/City"],
                 [str(FIX / "crontab"), "--format", "cronjob"]):
        r = ashjobs(*args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stdout == ""
        if args[-1] != "cronjob":  # ours are one line; click's own usage errors print a usage block
            assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_many_entries_show_progress_on_stderr_and_keep_json_clean(tmp_path: Path) -> None:
    tab = tmp_path / "crontab"
    tab.write_text("".join(f"{i} {i % 24} * * * /usr/bin/job{i} --n {i}\n" for i in range(30)))
    r = ashjobs(str(tab), "--format", "crontab", "--json", "--compare", "100", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert len(doc["entries"]) == 30 and all(e["equivalent"] and e["compared"] == 100 for e in doc["entries"])


def test_write_never_clobbers_a_file_it_did_not_write(tmp_path: Path) -> None:
    conf = tmp_path / "ashjobs.toml"
    conf.write_text("[node]\nroles = [\"scheduler\"]\n")
    r = ashjobs(str(FIX / "crontab"), "--format", "crontab", "--write", str(conf), cwd=tmp_path)
    assert r.returncode == 2 and "was not written by `ashjobs migrate`" in r.stderr
    assert conf.read_text() == "[node]\nroles = [\"scheduler\"]\n"
    r = ashjobs(str(FIX / "crontab"), "--format", "crontab", "--write", str(conf), "--force", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert conf.read_text().startswith("# ashjobs migrate crontab --format crontab")
    # a second run may replace what the first one wrote
    r = ashjobs(str(FIX / "schedules.csv"), "--format", "schedules-table", "--write", str(conf), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
