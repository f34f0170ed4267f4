"""Tests of the per-connection rate arithmetic (time is passed in as numbers)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_chat.core.limits import ErrorBudget, Throttle, TokenBucket


def takes(bucket: TokenBucket, now: float, count: int) -> list[bool]:
    return [bucket.take(now) for _ in range(count)]


# --------------------------------------------------------------------------
# TokenBucket


def test_burst_then_refused() -> None:
    bucket = TokenBucket(rate=10, burst=20, now=0.0)
    assert takes(bucket, 0.0, 20) == [True] * 20
    assert bucket.take(0.0) is False
    assert bucket.take(0.05) is False  # half a token


def test_refill_at_rate() -> None:
    bucket = TokenBucket(rate=10, burst=20, now=0.0)
    takes(bucket, 0.0, 20)
    assert takes(bucket, 0.1, 2) == [True, False]
    assert takes(bucket, 0.35, 3) == [True, True, False]  # 2.5 tokens
    assert takes(bucket, 0.4, 2) == [True, False]  # the half token + 0.5


def test_refill_is_capped_at_burst() -> None:
    bucket = TokenBucket(rate=10, burst=20, now=0.0)
    takes(bucket, 0.0, 20)
    assert takes(bucket, 1000.0, 21) == [True] * 20 + [False]


def test_a_full_bucket_stays_full_while_idle() -> None:
    bucket = TokenBucket(rate=2, burst=3, now=0.0)
    assert takes(bucket, 50.0, 4) == [True, True, True, False]


@pytest.mark.parametrize("rate", [0, 0.0, -1.0])
def test_rate_zero_is_unlimited(rate: float) -> None:
    bucket = TokenBucket(rate=rate, burst=1, now=0.0)
    assert takes(bucket, 0.0, 1000) == [True] * 1000


def test_time_going_backwards_creates_no_tokens() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=100.0)
    assert takes(bucket, 100.0, 5) == [True] * 5
    assert takes(bucket, 50.0, 3) == [False] * 3  # no refill for negative time
    assert takes(bucket, -1e9, 3) == [False] * 3


def test_time_going_backwards_does_not_credit_the_same_time_twice() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=100.0)
    takes(bucket, 100.0, 5)
    assert bucket.take(99.0) is False
    # Back at 100.0 no time has passed since the bucket was emptied.
    assert bucket.take(100.0) is False
    # And the bucket still refills once time moves on.
    assert takes(bucket, 100.2, 3) == [True, True, False]


@settings(max_examples=300)
@given(
    rate=st.floats(min_value=0.1, max_value=100),
    burst=st.integers(min_value=1, max_value=30),
    steps=st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=60),
)
def test_token_bucket_never_exceeds_burst_plus_rate(
    rate: float, burst: int, steps: list[float]
) -> None:
    bucket = TokenBucket(rate=rate, burst=burst, now=0.0)
    now = 0.0
    accepted: list[float] = []
    for step in steps:
        now += step
        if bucket.take(now):
            accepted.append(now)
    for first, t0 in enumerate(accepted):
        for last in range(first, len(accepted)):
            count = last - first + 1  # accepted takes in [t0, accepted[last]]
            assert count <= burst + rate * (accepted[last] - t0) + 1e-9


# --------------------------------------------------------------------------
# Throttle


def test_throttle_allows_one_per_interval() -> None:
    throttle = Throttle(1.0)
    assert [throttle.allow(t) for t in (0.0, 0.2, 0.99, 1.0, 1.5, 2.0, 2.0)] == [
        True,
        False,
        False,
        True,
        False,
        True,
        False,
    ]


def test_throttle_measures_from_the_last_allowed() -> None:
    throttle = Throttle(1.0)
    # Dropped events do not push the window forward.
    assert [throttle.allow(t) for t in (0.0, 0.9, 1.8, 1.95, 2.0)] == [
        True,
        False,
        True,
        False,
        False,
    ]


def test_throttle_first_event_is_always_allowed() -> None:
    assert Throttle(1.0).allow(-12345.0) is True


# --------------------------------------------------------------------------
# ErrorBudget


def test_error_budget_allows_100_within_the_window() -> None:
    budget = ErrorBudget()
    assert all(budget.spend(i * 0.01) for i in range(100))
    assert budget.spend(1.0) is False  # the 101st within 10 s


def test_error_budget_refuses_101_at_the_same_instant() -> None:
    budget = ErrorBudget()
    assert [budget.spend(5.0) for _ in range(101)] == [True] * 100 + [False]


def test_error_budget_window_is_ten_seconds() -> None:
    budget = ErrorBudget()
    for _ in range(100):
        budget.spend(0.0)
    assert budget.spend(10.5) is True  # the first 100 are more than 10 s old


@pytest.mark.parametrize("spacing", [0.1001, 0.2, 1.0, 30.0])
def test_spread_out_errors_are_never_refused(spacing: float) -> None:
    budget = ErrorBudget()
    assert all(budget.spend(i * spacing) for i in range(1000))


@pytest.mark.parametrize(("limit", "window"), [(1, 1.0), (5, 2.0), (100, 0.5)])
def test_error_budget_custom_limit(limit: int, window: float) -> None:
    budget = ErrorBudget(limit=limit, window=window)
    assert [budget.spend(0.0) for _ in range(limit + 1)] == [True] * limit + [False]
    spaced = ErrorBudget(limit=limit, window=window)
    assert all(spaced.spend(i * window * 1.01) for i in range(3 * limit + 3))


def test_error_budget_of_zero_refuses_every_error() -> None:
    budget = ErrorBudget(limit=0, window=1.0)
    assert [budget.spend(t) for t in (0.0, 5.0, 100.0)] == [False, False, False]
