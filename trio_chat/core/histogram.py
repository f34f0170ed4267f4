"""A histogram of plain counters, observed on the hot path, read at scrape time.

`observe` costs a binary search and two additions: no lock, no allocation, no
metrics library. `/metrics` reads `cumulative()` and `total` when it is
scraped and turns them into a Prometheus histogram there. Bucket bounds are
upper bounds (`le`): a value equal to a bound counts in that bucket.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

# Seconds, for latencies from a tenth of a millisecond to ten seconds.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip
# Counts (events in a commit, and the like).
SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class Histogram:
    """Counts of observed values per bucket, and their sum."""

    __slots__ = ("_bounds", "_counts", "sum")

    def __init__(self, bounds: Iterable[float]) -> None:
        self._bounds = tuple(sorted(bounds))
        self._counts = [0] * (len(self._bounds) + 1)  # the last: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1
        self.sum += value

    @property
    def total(self) -> int:
        """How many values were observed."""
        return sum(self._counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """`(upper bound, values at most that)` for each bound, then `(inf, total)`."""
        result: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip((*self._bounds, float("inf")), self._counts, strict=True):
            running += count
            result.append((bound, running))
        return result
