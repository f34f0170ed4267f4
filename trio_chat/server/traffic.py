"""What the server's WebSocket connections have done, for `/metrics`.

Each session counts its own frames and bytes in plain integers (see
session.py); when it ends it adds them to the server's `Traffic`. A scrape
adds the totals of the sessions still open to those of the ended ones, so
the hot path pays an integer addition per read, frame or write and nothing
more: no lock, no metrics object, no allocation.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class Flow:
    """Frames and bytes each way."""

    frames_in: int = 0
    bytes_in: int = 0
    frames_out: int = 0
    bytes_out: int = 0

    def add(self, other: Flow) -> None:
        self.frames_in += other.frames_in
        self.bytes_in += other.bytes_in
        self.frames_out += other.frames_out
        self.bytes_out += other.bytes_out


@dataclass(slots=True)
class Traffic:
    """The server's counters that sessions update (one per server)."""

    ended: Flow = field(default_factory=Flow)  # of the sessions that have ended
    sessions_ended: int = 0
    ping_timeouts: int = 0  # sessions dropped for want of a pong
    errors: Counter[str] = field(default_factory=Counter)  # `error` events sent, by code
    refused_hellos: Counter[str] = field(default_factory=Counter)  # by protocol.RefusalReason
    token_expiries: int = 0  # sessions closed because their token expired
