"""`ashjobs notifications list/show` over a real database, through the real command line."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

from ashjobs.apps.notifications import put
from tests.conftest import Cli
from tests.notify_helpers import Receiver, close, run_due, services


def ashjobs(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return Cli(data_dir).run(*args, check=False, COLUMNS="200")


def test_list_and_show(tmp_path):
    with Receiver([500]) as rx:
        svc = services(tmp_path, {"notify": {"channels": ["webhook"], "webhook": {"url": rx.url}}})
        try:
            with svc.store.tx() as conn:
                first = put(conn, svc.clock.now(), kind="alert.escalated", subject="edge-7 down", body="b",
                            payload={})
                second = put(conn, svc.clock.now(), kind="package.expired", subject="site-a", body="b",
                             payload={})
            asyncio.run(run_due(svc, "notifications"))  # first gets the 500, second the 200
        finally:
            close(svc)
    listed = json.loads(ashjobs(tmp_path, "notifications", "list", "--json").stdout)
    by_id = {n["id"]: n for n in listed}
    assert by_id[first]["status"] == "pending" and by_id[first]["attempts"] == 1
    assert by_id[first]["last_error"].startswith("webhook: HTTP 500")
    assert by_id[second]["status"] == "sent" and by_id[second]["sent_at"].endswith("Z")
    assert set(by_id[first]) >= {"id", "kind", "subject", "status", "attempts", "created_at", "sent_at",
                                 "last_error"}
    only_sent = json.loads(ashjobs(tmp_path, "notifications", "list", "--status", "sent", "--json").stdout)
    assert [n["id"] for n in only_sent] == [second]
    shown = json.loads(ashjobs(tmp_path, "notifications", "show", str(first), "--json").stdout)
    assert [(d["channel"], d["outcome"], d["code"]) for d in shown["deliveries"]] == [("webhook", "failed", 500)]
    table = ashjobs(tmp_path, "notifications", "list")
    assert table.returncode == 0 and "edge-7 down" in table.stdout
    missing = ashjobs(tmp_path, "notifications", "show", "999")
    assert missing.returncode == 1 and "notification 999: not found" in missing.stderr


def test_list_without_a_database_is_empty(tmp_path):
    result = ashjobs(tmp_path, "notifications", "list", "--json")
    assert result.returncode == 0 and json.loads(result.stdout) == []
    assert not (tmp_path / "ashjobs.db").exists()
