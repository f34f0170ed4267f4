"""Per-connection rate arithmetic: message rate, typing throttle, error budget.

Pure: every method takes the current time (seconds, any monotonic origin) as
an argument, so the session passes Trio's clock and tests pass numbers.
"""

from __future__ import annotations

from collections import deque


class TokenBucket:
    """`burst` messages at once, then `rate` per second; rate 0 is no limit."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._stamp = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one; False means: drop the message."""
        if self._rate <= 0:
            return True
        if now > self._stamp:  # a clock that steps back credits nothing twice
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class Throttle:
    """At most one event per `interval`; the ones in between are dropped."""

    __slots__ = ("_interval", "_last")

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._last: float | None = None

    def allow(self, now: float) -> bool:
        if self._last is not None and now - self._last < self._interval:
            return False
        self._last = now
        return True


class ErrorBudget:
    """Counts errors in a sliding window; exceeding the budget is abuse.

    The protocol closes a client that draws more than `limit` errors within
    `window` seconds. Only the last `limit + 1` timestamps are kept.
    """

    __slots__ = ("_stamps", "_window")

    def __init__(self, limit: int = 100, window: float = 10.0) -> None:
        self._window = window
        self._stamps: deque[float] = deque(maxlen=limit + 1)

    def spend(self, now: float) -> bool:
        """Record one error; False once more than `limit` fall in the window."""
        self._stamps.append(now)
        full = len(self._stamps) == self._stamps.maxlen
        return not (full and now - self._stamps[0] <= self._window)
