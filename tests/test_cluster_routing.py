"""Routing is pure: properties over generated registries and jobs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ashjobs.cluster.routing import (
    POLLER_STATES,
    Poller,
    Routable,
    assign,
    candidates,
    choose,
    serves,
    target_key,
    why_not,
)

PARTITIONS = ["default", "p1", "p2"]
DOMAINS = ["site-a", "site-b", "site-c"]


@st.composite
def pollers(draw: st.DrawFn) -> Poller:
    cap = draw(st.integers(1, 5))
    return Poller(node=draw(st.sampled_from([f"n{i}" for i in range(8)])),
                  partition=draw(st.sampled_from(PARTITIONS)),
                  domains=frozenset(draw(st.lists(st.sampled_from(DOMAINS), max_size=3))),
                  capacity=cap, in_flight=draw(st.integers(0, cap)),
                  state=draw(st.sampled_from(POLLER_STATES)))


def registry() -> st.SearchStrategy[list[Poller]]:
    return st.lists(pollers(), max_size=10, unique_by=lambda p: p.node)


domain_st = st.one_of(st.none(), st.sampled_from(DOMAINS))


@given(registry(), st.sampled_from(PARTITIONS), domain_st, st.text(max_size=8))
def test_never_another_partition_or_wrong_domain(reg: list[Poller], partition: str, domain: str | None,
                                                  target: str) -> None:
    for p in candidates(reg, partition, domain):
        assert p.partition == partition
        assert domain is None or domain in p.domains
        assert p.state == "available" and p.in_flight < p.capacity
    chosen = choose(candidates(reg, partition, domain), target)
    if chosen is not None:
        assert serves(chosen, partition, domain)


@given(registry(), st.sampled_from(PARTITIONS), domain_st, st.text(max_size=8),
       st.frozensets(st.sampled_from([f"n{i}" for i in range(8)])))
def test_a_choice_exists_whenever_a_candidate_does(reg: list[Poller], partition: str, domain: str | None,
                                                   target: str, avoid: frozenset[str]) -> None:
    cands = candidates(reg, partition, domain)
    chosen = choose(cands, target, avoid)
    assert (chosen is None) == (not cands)
    if chosen is not None:
        assert chosen in cands
        assert min(p.load for p in cands) <= chosen.load
        others = [p for p in cands if p.node not in avoid]
        if others:  # a job lost on a poller goes elsewhere when it can
            assert chosen.node not in avoid
            assert chosen.load == min(p.load for p in others)


@given(registry(), st.sampled_from(PARTITIONS), domain_st, st.text(max_size=8), st.randoms())
def test_ties_are_deterministic_whatever_the_order(reg: list[Poller], partition: str, domain: str | None,
                                                   target: str, rnd: object) -> None:
    cands = candidates(reg, partition, domain)
    shuffled = list(cands)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert choose(cands, target) == choose(shuffled, target)


def test_one_target_stays_on_one_poller_when_others_come_and_go() -> None:
    base = [Poller(f"n{i}", "p1", frozenset(), 10, 0, "available") for i in range(5)]
    keys = [target_key(i, "p1", {"host": f"10.0.0.{i}"}) for i in range(200)]
    before = {k: choose(base, k).node for k in keys}  # type: ignore[union-attr]
    after = {k: choose(base[:4], k).node for k in keys}  # type: ignore[union-attr]
    moved = [k for k in keys if before[k] != after[k]]
    # Only the targets of the removed poller move (rendezvous hashing), and they spread out.
    assert all(before[k] == "n4" for k in moved)
    assert len(set(before.values())) == 5


def test_same_ip_in_two_partitions_is_two_targets() -> None:
    assert target_key(1, "p1", {"host": "10.0.0.1"}) != target_key(2, "p2", {"host": "10.0.0.1"})
    assert target_key(7, "p1", {}) == "job/7"


@given(st.lists(st.tuples(st.sampled_from(PARTITIONS), domain_st), max_size=30), registry())
def test_assign_respects_rules_and_room(jobs: list[tuple[str, str | None]], reg: list[Poller]) -> None:
    batch = [Routable(i, p, d, f"job/{i}") for i, (p, d) in enumerate(jobs)]
    placed, waiting = assign(batch, reg)
    by_node = {p.node: p for p in reg}
    assert set(placed) | set(waiting) == {j.id for j in batch}
    for job in batch:
        if job.id in placed:
            assert serves(by_node[placed[job.id]], job.partition, job.domain)
    for node, p in by_node.items():
        n = sum(1 for v in placed.values() if v == node)
        assert n == 0 or (p.state == "available" and p.in_flight + n <= p.capacity)


def test_why_not_says_what_is_missing() -> None:
    assert why_not("p1", "site-a") == "no poller for partition p1, domain site-a"
    assert why_not("p2", None) == "no poller for partition p2"
    gone = Poller("a", "p1", frozenset({"site-a"}), 2, 0, "unavailable")
    full = Poller("b", "p1", frozenset({"site-a"}), 2, 2, "busy")
    assert why_not("p1", "site-a", [gone]) == "no available poller for partition p1, domain site-a (1 unavailable)"
    assert why_not("p1", "site-a", [gone, full]) == "every poller for partition p1, domain site-a is at capacity"
    assert why_not("p1", "site-b", [gone, full]) == "no poller for partition p1, domain site-b"
