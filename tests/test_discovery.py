"""mDNS discovery: TXT records (pure), and real zeroconf between network namespaces."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from netns import Agent, NetnsLab, netns_lab  # noqa: F401  (the fixture)

from ashjobs.cluster.discovery import parse_txt, txt_record
from ashjobs.errors import ConfigError

AGENT = str(Path(__file__).resolve().parent / "mdns_agent.py")

NODE = {"node": "poller-a", "role": ["poller"], "partition": "P1", "domains": ["site-a", "site-b"], "cap": 10,
        "cluster": "0123456789ab"}


# -- TXT records (pure) --------------------------------------------------------------------------------


def test_txt_record_round_trips() -> None:
    props = txt_record(NODE)
    assert props == {"v": "1", "node": "poller-a", "role": "poller", "partition": "P1", "domain": "site-a,site-b",
                     "cap": "10", "cluster": "0123456789ab"}
    wire = {k.encode(): v.encode() for k, v in props.items()}
    assert parse_txt(wire) == {"v": "1", "node": "poller-a", "role": ["poller"], "partition": "P1",
                               "domains": ["site-a", "site-b"], "cap": 10, "cluster": "0123456789ab"}


def test_txt_record_accepts_config_spellings() -> None:
    props = txt_record({"node": "n", "roles": ["scheduler", "poller"], "domain": "x", "capacity": 3,
                        "cluster": "c"})
    assert props["role"] == "scheduler,poller" and props["domain"] == "x" and props["cap"] == "3"
    assert props["partition"] == "default"
    assert txt_record({**NODE, "domains": []})["domain"] == ""


def test_txt_entry_of_exactly_255_bytes_fits_and_256_does_not() -> None:
    # "domain=" is 7 bytes; 248 more make 255
    fits = ["d" * 100, "e" * 100, "f" * 46]
    assert len("domain=" + ",".join(fits)) == 255
    txt_record({**NODE, "domains": fits})
    with pytest.raises(ConfigError) as e:
        txt_record({**NODE, "domains": [*fits[:2], "f" * 47]})
    assert str(e.value) == ("mDNS: TXT entry 'domain' would be 256 bytes (limit 255): too many or too long "
                            "[node] domains to advertise over mDNS; shorten them or run this poller as several nodes")


@pytest.mark.parametrize(("change", "message"), [
    ({"partition": "p" * 250}, "mDNS: TXT entry 'partition' would be 260 bytes (limit 255): shorten the partition"),
    ({"node": "n" * 64}, "an mDNS instance name holds at most 63"),
    ({"node": ""}, "mDNS: node name is empty"),
    ({"domains": ["a,b"]}, "without commas"),
    ({"domains": [" a"]}, "without commas or surrounding spaces"),
    ({"domains": ["x" * 200, "y" * 200, "z" * 200, "w" * 200]}, "TXT entry 'domain'"),
])
def test_bad_txt_is_refused_with_one_line(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        txt_record({**NODE, **change})
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("props", [
    {},
    {b"v": b"2", b"node": b"n", b"cluster": b"c"},  # another protocol version
    {b"v": b"1", b"cluster": b"c"},  # no node
    {b"v": b"1", b"node": b"n"},  # no cluster
    {b"v": b"1", b"node": b"n", b"cluster": b"c", b"cap": b"many"},
    {b"v": b"1", b"node": b"n", b"cluster": b"c", b"cap": b"-1"},
    {b"v": b"1", b"node": b"\xff\xfe", b"cluster": b"c"},
])
def test_malformed_txt_is_ignored(props: dict[bytes, bytes]) -> None:
    assert parse_txt(props) is None


def test_parse_txt_defaults() -> None:
    info = parse_txt({b"v": b"1", b"node": b"n", b"cluster": b"c", b"domain": None})
    assert info == {"v": "1", "node": "n", "role": [], "partition": "default", "domains": [], "cap": 0,
                    "cluster": "c"}


def test_unknown_interface_is_a_config_error() -> None:
    from ashjobs.cluster.discovery import _interface_ips

    with pytest.raises(ConfigError, match=r"cluster.interfaces: no network interface 'nope0' \(known: .*lo"):
        _interface_ips(["nope0"])
    assert _interface_ips(["lo", "10.0.0.1"]) == ["127.0.0.1", "10.0.0.1"]


# -- real zeroconf across namespaces -----------------------------------------------------------------------


def event_for(kind: str, node: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["event"] == kind and e.get("info", {}).get("node") == node


@pytest.mark.netns
def test_advertiser_on_one_host_is_seen_by_a_browser_on_another(netns_lab: Callable[[int], NetnsLab]) -> None:  # noqa: F811
    lab = netns_lab(3)
    cluster = "0123456789ab"
    browser = Agent(lab, 1, [AGENT, "browse", cluster])
    browser.expect(lambda e: e["event"] == "ready")
    ours = Agent(lab, 2, [AGENT, "advertise", json.dumps({**NODE, "node": "poller-2"}), "7420", "eth0"])
    theirs = Agent(lab, 3, [AGENT, "advertise", json.dumps({**NODE, "node": "poller-3", "cluster": "ba9876543210"}), "7421"])
    ours.expect(lambda e: e["event"] == "ready")
    theirs.expect(lambda e: e["event"] == "ready")

    added = browser.expect(event_for("added", "poller-2"))["info"]
    assert added == {"v": "1", "node": "poller-2", "role": ["poller"], "partition": "P1",
                     "domains": ["site-a", "site-b"], "cap": 10, "cluster": cluster,
                     "name": "poller-2._ashjobs._tcp.local.", "port": 7420, "addresses": [lab.addr(2)]}
    # the other cluster's poller is heard and skipped, never reported
    ignored = browser.expect(event_for("ignored", "poller-3"))
    assert ignored["reason"] == "other cluster"

    ours.proc.send_signal(signal.SIGUSR1)  # re-announce with cap 11
    ours.expect(lambda e: e["event"] == "updated")
    updated = browser.expect(event_for("updated", "poller-2"))["info"]
    assert updated == {**added, "cap": 11}

    ours.stop()  # a clean stop says goodbye: the browser drops it at once, without waiting out any TTL
    browser.expect(event_for("removed", "poller-2"))
    assert not [e for e in browser.seen if e.get("info", {}).get("node") == "poller-3" and e["event"] != "ignored"]
    theirs.stop()
    browser.stop()
