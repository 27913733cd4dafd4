"""The built-in edge_package resource: tokens kept only as hashes, expiry by the hourly trigger, and the
`packages` CLI (a real subprocess) reporting why a token fails."""

from __future__ import annotations

import time

from conftest import write_config
from triggers_helpers import HOUR_SLOT, close, run_jobs, services

from ashjobs import triggers
from ashjobs.apps import packages
from ashjobs.apps.packages import edge_package

DAY = 86400.0


def _expire(svc):
    fire = triggers.run_scheduler(svc.writer.call, triggers.get(svc.cfg, "expire_packages"), svc.clock.now(),
                                  collect_ids=True)
    return fire, run_jobs(svc, fire.job_ids)


def test_expire_packages_expires_issued_packages_whose_tokens_both_expired(tmp_path):
    svc = services(tmp_path, start=HOUR_SLOT - 2 * DAY)
    try:
        now = svc.clock.now()
        with svc.store.tx() as conn:
            old, old_token = packages.issue(conn, now, site="edge-1", partition="p1")
            join_later, _ = packages.issue(conn, now, site="edge-2", join_ttl=3 * DAY)
            delivered, _ = packages.issue(conn, now, site="edge-3")
            edge_package.run(conn, "deliver", delivered["id"], now=now, actor="user:ann")
        assert packages.verify(svc.store.conn, old_token, now) == "ok"
        svc.clock.set(HOUR_SLOT)
        assert packages.verify(svc.store.conn, old_token, svc.clock.now()) == "expired"  # by time, before the slot
        fire, states = _expire(svc)
        assert fire.matched == 1 and list(states.values()) == ["completed"]
        conn = svc.store.conn
        rec = edge_package.get(conn, old["id"])
        assert (rec["status"], rec["download_token_hash"]) == ("expired", None)
        assert [edge_package.get(conn, p["id"])["status"] for p in (join_later, delivered)] == ["issued", "delivered"]
        last = edge_package.history(conn, old["id"])[-1]
        assert (last["from_state"], last["to_state"], last["actor"], last["job_id"]) == (
            "issued", "expired", "system:scheduler", fire.job_ids[0])
        # Even if the clock went back, the invalidated token never verifies again.
        assert packages.verify(conn, old_token, HOUR_SLOT - 2 * DAY) == "expired"
    finally:
        close(svc)


def test_tokens_are_stored_only_as_hashes(tmp_path):
    svc = services(tmp_path)
    try:
        with svc.store.tx() as conn:
            _, token = packages.issue(conn, svc.clock.now(), site="edge-1")
        svc.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        secret = token.split(".", 1)[1].encode()
        for f in tmp_path.glob("ashjobs.db*"):
            assert secret not in f.read_bytes()
        assert packages.verify(svc.store.conn, token, svc.clock.now()) == "ok"
        assert packages.verify(svc.store.conn, token[:-1] + ("A" if token[-1] != "A" else "B"),
                               svc.clock.now()) == "unknown"
        assert packages.verify(svc.store.conn, "99." + token.split(".", 1)[1], svc.clock.now()) == "unknown"
        assert packages.verify(svc.store.conn, "no-dot", svc.clock.now()) == "unknown"
    finally:
        close(svc)


def test_cli_verify_fails_with_expired_after_the_trigger_ran(cli):
    issued = cli.json("packages", "issue", "--site", "edge-7", "--partition", "p1")
    assert set(issued) >= {"id", "token", "site", "partition", "status", "download_token_expires_at"}
    token = issued["token"]
    ok = cli.run("packages", "verify", token)
    assert (ok.returncode, ok.stdout.strip()) == (0, "valid")

    # The trigger runs a day later (injected clock); the real clock still says the token is in time,
    # so it is the trigger's invalidation that makes it fail.
    svc = services(cli.data_dir, start=time.time() + DAY + 3600)
    try:
        _, states = _expire(svc)
        assert list(states.values()) == ["completed"]
    finally:
        close(svc)
    bad = cli.run("packages", "verify", token, check=False)
    assert (bad.returncode, bad.stdout.strip()) == (1, "invalid: expired")
    assert cli.json("packages", "verify", token, check=False) == {"valid": False, "reason": "expired"}
    [listed] = cli.json("packages", "list")
    assert (listed["id"], listed["status"]) == (issued["id"], "expired") and "token" not in listed


def test_cli_revoke_and_unknown(cli):
    token = cli.run("packages", "issue", "--site", "edge-8", "--ttl", "2h").stdout.strip()
    cli.run("packages", "revoke", token.split(".")[0])
    revoked = cli.run("packages", "verify", token, check=False)
    assert (revoked.returncode, revoked.stdout.strip()) == (1, "invalid: revoked")
    unknown = cli.run("packages", "verify", "1.nope", check=False)
    assert (unknown.returncode, unknown.stdout.strip()) == (1, "invalid: unknown")
    again = cli.run("packages", "revoke", token.split(".")[0], check=False)
    assert again.returncode == 1 and "cannot revoke from 'revoked'" in again.stderr
    bad = cli.run("packages", "issue", "--site", "x", "--ttl", "soon", check=False)
    assert bad.returncode == 2 and "--ttl: bad duration" in bad.stderr


def test_cli_triggers_run_wait_expires_in_the_foreground(cli, tmp_path):
    cli.config = write_config(tmp_path / "a.toml", "[queues]\ndefault = 5\nonboarding = 2\n")
    token = cli.json("packages", "issue", "--site", "edge-9", "--ttl", "1ms", "--join-ttl", "1ms")["token"]
    out = cli.json("triggers", "run", "expire_packages", "--wait")
    assert (out["matched"], out["enqueued"]) == (1, 1)
    assert [j["state"] for j in out["jobs"]] == ["completed"]
    assert cli.run("packages", "verify", token, check=False).stdout.strip() == "invalid: expired"
    [row] = [t for t in cli.json("triggers", "list") if t["name"] == "expire_packages"]
    assert (row["last_outcome"], row["last_enqueued"], row["workers"]["completed"], row["matching_now"]) == (
        "ok", 1, 1, 0)
