"""`ashjobs alerts` and `ashjobs triggers run auto_escalate` as real subprocesses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conftest import write_config


def _ago(minutes: float) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat()


def test_raise_list_escalate_ack_resolve(cli, tmp_path):
    cli.config = write_config(tmp_path / "a.toml", "[queues]\ndefault = 5\nalerts = 2\n")
    late = int(cli.run("alerts", "raise", "--severity", "critical", "--source", "edge-7/disk",
                       "--partition", "p1", "--message", "/var 99% full", "--triggered-at", _ago(31)).stdout)
    warning = cli.json("alerts", "raise", "--severity", "warning", "--source", "edge-7/fan",
                       "--triggered-at", _ago(31))
    assert (warning["status"], warning["severity"], warning["escalation_level"]) == ("pending", "warning", 0)
    young = cli.json("alerts", "raise", "--severity", "critical", "--source", "edge-8", "--triggered-at", _ago(29))

    out = cli.json("triggers", "run", "auto_escalate", "--wait")
    assert [(j["record_id"], j["state"]) for j in out["jobs"]] == [(late, "completed")]

    listed = {a["id"]: a for a in cli.json("alerts", "list")}
    assert {k: listed[late][k] for k in ("status", "severity", "escalation_level", "notification_count")} == {
        "status": "escalated", "severity": "critical", "escalation_level": 1, "notification_count": 1}
    assert listed[warning["id"]]["status"] == listed[young["id"]]["status"] == "pending"
    assert [a["id"] for a in cli.json("alerts", "list", "--status", "escalated")] == [late]

    cli.run("alerts", "ack", str(late))
    cli.run("alerts", "resolve", str(late))
    again = cli.run("alerts", "ack", str(late), check=False)
    assert again.returncode == 1 and "cannot acknowledge from 'resolved'" in again.stderr
    missing = cli.run("alerts", "ack", "999", check=False)
    assert missing.returncode == 1 and "alert 999: no such record" in missing.stderr


def test_bad_input_exits_2_and_writes_nothing(cli):
    bad = cli.run("alerts", "raise", "--severity", "critical", "--source", "x", "--triggered-at", "yesterday",
                  check=False)
    assert bad.returncode == 2 and "--triggered-at: not an ISO 8601 time" in bad.stderr
    assert cli.json("alerts", "list") == []
    unknown = cli.run("triggers", "run", "nope", check=False)
    assert unknown.returncode == 2 and "unknown trigger 'nope'" in unknown.stderr


def test_config_error_in_a_trigger_names_it(cli, tmp_path):
    cli.config = write_config(tmp_path / "a.toml", '[[trigger]]\nname = "t1"\nresource = "alert"\n'
                                                   'action = "escalate"\nwhere = { colour = "red" }\n')
    p = cli.run("triggers", "list", check=False)
    assert p.returncode == 2 and "trigger 't1': where.colour: unknown field" in p.stderr
