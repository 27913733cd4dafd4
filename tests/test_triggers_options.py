"""Audit fixes: record_limit caps the jobs a run enqueues (records already handled do not starve the rest);
a turned-off built-in app refuses new records through the CLI."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from test_triggers import add_widgets, fire, make, trig, widget
from triggers_helpers import close, run_jobs

from ashjobs import triggers
from ashjobs.store import jobs as sql
from ashjobs.store import resources as rsql
from tests.conftest import Cli


def test_record_limit_with_trigger_once_reaches_every_record(tmp_path):
    # The action leaves the record matching: with trigger_once each record is handled once, ever.
    svc = make(tmp_path, trig(name="note_high", action="note", where={"level": {"gte": 5}}, trigger_once=True,
                              record_limit=2))
    try:
        ids = add_widgets(svc, [7, 7, 7, 7, 7])
        done: list[int] = []
        for expected in (2, 2, 1, 0):
            run = fire(svc, "note_high", page_size=1)
            new = [j for j in run.job_ids if j not in done]
            assert (run.enqueued, len(new)) == (expected, expected)
            run_jobs(svc, new)
            done += new
        assert [widget.get(svc.store.conn, i)["note"] for i in ids] == ["noted"] * 5
    finally:
        close(svc)


@widget.action("note")
def _note(call):
    call.update(note="noted")


def test_turned_off_apps_refuse_new_records(data_dir: Path) -> None:
    path = data_dir.parent / "ashjobs.toml"
    path.write_text("[apps.alerts]\nenabled = false\n[apps.packages]\nenabled = false\n")
    cli = Cli(data_dir, path)
    for args, app in ((("alerts", "raise", "--severity", "critical", "--source", "x"), "alerts"),
                      (("packages", "issue", "--site", "s"), "packages")):
        p = cli.run(*args, check=False)
        assert p.returncode == 2 and p.stdout == ""
        assert p.stderr.strip() == f"ashjobs: {path}: [apps.{app}] enabled = false: the {app} app is turned off"
    assert cli.json("alerts", "list") == []
    path.write_text("")
    assert cli.run("alerts", "raise", "--severity", "critical", "--source", "x").stdout.strip() == "1"


def test_triggers_list_shows_the_cron_override_that_fires_the_trigger(data_dir: Path) -> None:
    # What a migrated schedules table writes for expire_packages: the trigger's cron entry, replaced.
    path = data_dir.parent / "ashjobs.toml"
    path.write_text('[[cron]]\nname = "trigger:expire_packages"\nschedule = "15 */2 * * *"\n'
                    'timezone = "Europe/Berlin"\ntask = "ashjobs.trigger.schedule"\n'
                    'args = { trigger = "expire_packages" }\n')
    rows = {r["name"]: r for r in Cli(data_dir, path).json("triggers", "list")}
    pkg = rows["expire_packages"]
    assert (pkg["schedule"], pkg["timezone"]) == ("15 */2 * * *", "Europe/Berlin")
    assert pkg["next_fire"].endswith(":15:00.000Z")  # Berlin is a whole-hour offset from UTC
    assert rows["auto_escalate"]["schedule"] == "*/5 * * * *"


LOCK_PROBE = '''
import os
from ashjobs import presence
from ashjobs.resources import Resource, Transition

probe = Resource("probe", fields={"note": "text"}, states=["new", "done"], initial="new",
                 transitions=[Transition("finish", ["new"], "done")])

@probe.action("finish")
def finish(call):
    holder = presence.daemon_pid(os.environ["ASHJOBS_DATA_DIR"])
    call.transition("finish", note=f"lock held by {holder}")
'''


def test_triggers_run_wait_in_the_foreground_holds_the_daemon_lock(data_dir: Path) -> None:
    # Otherwise a daemon starting meanwhile (same node name) would rescue the running workers from under it.
    app = data_dir.parent / "app"
    app.mkdir()
    (app / "lockprobe.py").write_text(LOCK_PROBE)
    path = data_dir.parent / "ashjobs.toml"
    path.write_text('[app]\nmodules = ["lockprobe"]\n[[trigger]]\nname = "p"\nresource = "probe"\n'
                    'action = "finish"\nwhere = { status = "new" }\n')
    cli = Cli(data_dir, path)
    env = cli.env()
    env["PYTHONPATH"] = f"{app}{os.pathsep}{env['PYTHONPATH']}"
    seed = ("import lockprobe; from ashjobs import config; from ashjobs.store import Store\n"
            "with Store.from_config(config.load()).tx() as c: lockprobe.probe.create(c, {}, now=0)\n")
    subprocess.run([sys.executable, "-c", seed], env=env, check=True, cwd=data_dir.parent)
    out = json.loads(subprocess.run([sys.executable, "-m", "ashjobs", "triggers", "run", "p", "--wait", "--json"],
                                    env=env, check=True, capture_output=True, text=True).stdout)
    assert [j["state"] for j in out["jobs"]] == ["completed"]
    with sqlite3.connect(data_dir / "ashjobs.db") as conn:
        [(note,)] = conn.execute("SELECT note FROM res_probe").fetchall()
    assert note.startswith("lock held by ") and note != "lock held by None", note


def test_record_limit_pages_past_queued_records_in_whole_pages(tmp_path, monkeypatch):
    # 6 records already queued, then a cap of 1 with pages of 4: two pages, not a transaction per record.
    svc = make(tmp_path, trig(name="capped", record_limit=1))
    try:
        ids = add_widgets(svc, [7] * 10)
        capped = triggers.get(svc.cfg, "capped")
        with svc.store.tx() as conn:  # its workers for the first 6 records are still queued
            rsql.enqueue_many(conn, [capped.worker_job(i) for i in ids[:6]], svc.clock.now())
        pages = []
        real = triggers._page

        def counting(conn, **kw):
            page = real(conn, **kw)
            pages.append((page.found, page.enqueued))
            return page

        monkeypatch.setattr(triggers, "_page", counting)
        run = fire(svc, "capped", page_size=4)
        assert pages == [(4, 0), (3, 1)]  # the second page ends at the record that reaches the cap
        assert (run.matched, run.enqueued) == (7, 1)
        new = {sql.get(svc.store.conn, j).args["record_id"] for j in run.job_ids} - set(ids[:6])
        assert new == {ids[6]}
    finally:
        close(svc)
