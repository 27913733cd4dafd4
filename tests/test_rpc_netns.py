"""RPC across network namespaces: a silent cut ends pending calls through TCP keepalive / user timeout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from netns import Agent, NetnsLab, netns_lab  # noqa: F401  (the fixture)

AGENT = str(Path(__file__).resolve().parent / "rpc_agent.py")


@pytest.mark.netns
def test_silent_cut_fails_a_pending_call_long_before_its_timeout(netns_lab: Callable[[int], NetnsLab]) -> None:  # noqa: F811
    lab = netns_lab(2)
    server = Agent(lab, 2, [AGENT, "serve", "7420"])
    server.expect(lambda e: e["event"] == "ready")
    # both sides set a 60 s idle timeout and the call a 60 s timeout: only the socket options can end it sooner
    client = Agent(lab, 1, [AGENT, "call", lab.addr(2), "7420", "hang"])
    client.expect(lambda e: e["event"] == "calling")
    lab.cut(2)  # frames to and from host 2 vanish at the bridge; neither side gets a FIN or RST
    outcome = client.expect(lambda e: e["event"] in ("error", "result"), timeout=30)
    assert outcome["type"] == "ConnectionLost", outcome
    assert "timed out" in outcome["message"], outcome  # ETIMEDOUT from keepalive / TCP_USER_TIMEOUT

    lab.heal(2)
    again = Agent(lab, 1, [AGENT, "call", lab.addr(2), "7420", "echo"])
    assert again.expect(lambda e: e["event"] in ("error", "result"), timeout=30) == {"event": "result",
                                                                                     "value": {"x": 1}}
