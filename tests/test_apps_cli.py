"""Audit fixes in the built-in apps' CLI: ids beyond SQLite's integer range are unknown, not a traceback."""

from __future__ import annotations

from tests.conftest import Cli

HUGE = "9" * 23


def test_huge_ids_are_unknown_records(cli: Cli) -> None:
    token = cli.run("packages", "issue", "--site", "s").stdout.strip()
    assert cli.run("packages", "verify", token).returncode == 0
    p = cli.run("packages", "verify", f"{HUGE}.{token.split('.', 1)[1]}", check=False)
    assert (p.returncode, p.stdout.strip(), p.stderr) == (1, "invalid: unknown", "")
    for args, what in ((("packages", "revoke", HUGE), "edge_package"), (("alerts", "ack", HUGE), "alert")):
        p = cli.run(*args, check=False)
        assert (p.returncode, p.stderr.strip()) == (1, f"ashjobs: {what} {HUGE}: no such record")
