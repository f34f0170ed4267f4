"""How fast a client sends, and how soon it reconnects: arithmetic only.

Theory of operation: the server refuses a `say` beyond its rate limit
(docs/protocol.md: by default a burst of 20, then 10 per second) with
`rate_limited`, and drops it. A client that answers each refusal with a
blind backoff is refused again and again, and slower than the limit. The
`Pacer` is a token bucket on the client's side that starts free (no pacing:
a server may allow more than the default) and, from the first refusal on,
mirrors the server's: empty at that moment, refilled at the default rate up
to the default burst. Since it starts counting when the refusal *arrives*,
after the server's bucket ran dry, it never believes it has more than the
server has. A refusal while pacing means the server is stricter than the
default: rate and burst are halved, down to a floor.

`reconnect_delay` is the schedule of reconnect attempts after a connection
is lost: the first soon (a restarted server or a dropped Wi-Fi is usually
back within a second), then doubling up to a cap, always jittered so that
clients dropped together do not come back together.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final

DEFAULT_RATE: Final = 10.0  # messages per second, the server's default
DEFAULT_BURST: Final = 20
_MARGIN: Final = 0.001  # seconds added to every paced wait
MIN_RATE: Final = 0.2  # a line every 5 s: well within the drain bound of 10 s

RECONNECT_FIRST: Final = 0.5  # the first attempt comes within this many seconds
RECONNECT_FLOOR: Final = 0.05  # ... but not sooner (the server may be mid-restart)
RECONNECT_CAP: Final = 5.0  # no wait between attempts exceeds this


class Pacer:
    """A token bucket learned from `rate_limited` refusals (see the module docstring).

    Call `ready_at(now)` for the time the next message may go, `spend(now)`
    when it goes, and `refused(now)` when the server refused one as too fast.
    """

    __slots__ = ("burst", "pacing", "rate", "refusals", "tokens", "updated")

    def __init__(self, rate: float = DEFAULT_RATE, burst: int = DEFAULT_BURST) -> None:
        self.rate = rate
        self.burst = burst
        self.pacing = False  # no refusal yet: nothing is known about the limit
        self.tokens = math.inf
        self.updated = 0.0
        self.refusals = 0

    def _refill(self, now: float) -> None:
        if self.pacing and now > self.updated:
            self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        self.updated = max(self.updated, now)

    def ready_at(self, now: float) -> float:
        """The earliest time (>= `now`) at which the next message may be sent."""
        if not self.pacing:
            return now
        self._refill(now)
        if self.tokens >= 1.0:
            return now
        # A hair late rather than early: the server's clock arithmetic may round
        # a tenth of a second at 10/s to a token of 0.999..., and refuse.
        return now + (1.0 - self.tokens) / self.rate + _MARGIN

    def spend(self, now: float) -> None:
        """A message is being sent now."""
        if self.pacing:
            self._refill(now)
            self.tokens -= 1.0

    def refused(self, now: float) -> None:
        """The server refused a message as too fast: its bucket is empty now."""
        self.refusals += 1
        if self.pacing:  # stricter than we thought
            self.rate = max(MIN_RATE, self.rate / 2)
            self.burst = max(1, self.burst // 2)
        self.pacing = True
        self.tokens = 0.0
        self.updated = now


def reconnect_delay(failures: int, uniform: Callable[[float, float], float]) -> float:
    """Seconds to wait before reconnect attempt number `failures` (1, 2, ...)
    since the last connection that worked.

    The first within `RECONNECT_FIRST` (jittered over most of it); then
    half fixed and half random around a delay that doubles from
    `RECONNECT_FIRST` up to `RECONNECT_CAP`.
    """
    if failures <= 1:
        return uniform(RECONNECT_FLOOR, RECONNECT_FIRST)
    ceiling = min(RECONNECT_CAP, RECONNECT_FIRST * 2.0 ** min(failures - 1, 16))
    return ceiling / 2 + uniform(0.0, ceiling / 2)
