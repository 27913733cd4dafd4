"""Pure lifecycle rules: backoff, failure outcome, transitions, uniqueness keys."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from ashjobs import queue as rules


def test_backoff_is_15s_plus_two_to_the_attempt_plus_at_most_ten_percent() -> None:
    rng = random.Random(7)
    for attempt in range(1, 12):
        base = 15 + 2**attempt
        for _ in range(50):
            b = rules.default_backoff(attempt, rng)
            assert base <= b <= base * 1.1


def test_backoff_is_capped_at_a_day() -> None:
    assert rules.default_backoff(40, random.Random(1)) == 86400.0


def test_failure_retries_until_max_attempts_then_discards() -> None:
    assert rules.after_failure(1, 3, 100.0, 17.0) == rules.Failure("retryable", 117.0)
    assert rules.after_failure(2, 3, 100.0, 19.0) == rules.Failure("retryable", 119.0)
    assert rules.after_failure(3, 3, 100.0, 23.0) == rules.Failure("discarded", None)


def test_finished_states_leave_only_by_manual_retry() -> None:
    for state in rules.FINISHED:
        assert rules.TRANSITIONS[state] == frozenset({"available"})
    assert not rules.can_transition("available", "completed")
    assert not rules.can_transition("scheduled", "executing")


def test_unique_key_shares_a_bucket_within_the_period_and_splits_across_it() -> None:
    u = rules.Unique(period=60)
    job = {"task": "t", "queue": "q", "args": {"a": 1}}
    assert rules.unique_key(u, job, 120.0) == rules.unique_key(u, job, 179.9)
    assert rules.unique_key(u, job, 120.0) != rules.unique_key(u, job, 180.0)
    assert rules.unique_key(u, job, 1.0) != rules.unique_key(u, {**job, "args": {"a": 2}}, 1.0)
    forever = rules.Unique(period=None)
    assert rules.unique_key(forever, job, 1.0) == rules.unique_key(forever, job, 1e9)


@given(st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=4),
       st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=4))
def test_unique_key_equal_exactly_when_fields_equal(a: dict[str, object], b: dict[str, object]) -> None:
    u = rules.Unique(period=None)
    ka = rules.unique_key(u, {"task": "t", "queue": "q", "args": a}, 0.0)
    kb = rules.unique_key(u, {"task": "t", "queue": "q", "args": b}, 0.0)
    assert (ka == kb) == (a == b)


@given(st.lists(st.sampled_from(rules.STATES), min_size=1, max_size=7))
def test_state_mask_holds_exactly_the_chosen_states(states: list[rules.State]) -> None:
    mask = rules.state_mask(states)
    for s in rules.STATES:
        assert bool(mask & rules.state_bit(s)) == (s in states)
