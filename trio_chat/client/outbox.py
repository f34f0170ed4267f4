"""The lines a client has to send, until the server confirms them.

Theory of operation: every line typed gets its `ref` when it enters the
outbox, and keeps it until its echo (a `message` with that `ref`) or a final
refusal takes it out, across any number of reconnects. The server stores a
`say` whose `ref` this member already used only once (it answers a repeat
with the original event), so sending a line again with its own `ref` is
always safe: after `rate_limited` or `unavailable`, after a reconnect whose
replay did not echo it, or when the client cannot tell whether it arrived.

Invariants:

* Lines leave in the order they were typed: only the oldest is ever in
  flight (stop and wait), and a refusal that allows a retry puts it back
  at the front, with its `ref`.
* A `ref` is confirmed at most once: an echo of a line already confirmed
  (a repeat the server sent, or the same event in a replay) finds nothing.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

RETRY_BASE: Final = 0.25  # first delay before resending a line the server could not take
RETRY_CAP: Final = 5.0


@dataclass(slots=True)
class Pending:
    """A line typed and not yet confirmed."""

    text: str
    ref: str
    sent: bool = False  # on the current connection, awaiting its echo
    not_before: float = -math.inf  # do not send before this time (after `unavailable`)
    retries: int = 0

    def retry_later(self, now: float) -> float:
        """Mark it unsent, to go again after a growing delay; returns the delay."""
        self.retries += 1
        delay = min(RETRY_CAP, RETRY_BASE * 2.0 ** (self.retries - 1))
        self.sent = False
        self.not_before = now + delay
        return delay


class Outbox:
    """The lines to deliver, oldest first (see the module docstring).

    The caller sends `head` when it is not `sent` (and marks it so), passes
    every echo to `confirm` and every refusal to `take`, and calls
    `connection_lost` when a connection ends: what was in flight on it goes
    again on the next, with the same `ref`.
    """

    __slots__ = ("_count", "_entries", "_prefix", "confirmed")

    def __init__(self, ref_prefix: str) -> None:
        self._prefix = ref_prefix
        self._count = 0
        self._entries: deque[Pending] = deque()
        self.confirmed = 0

    def add(self, text: str) -> Pending:
        self._count += 1
        entry = Pending(text, f"{self._prefix}-{self._count}")
        self._entries.append(entry)
        return entry

    @property
    def head(self) -> Pending | None:
        return self._entries[0] if self._entries else None

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Pending]:
        return iter(self._entries)

    def find(self, ref: object) -> Pending | None:
        """The pending line whose `ref` this is, if any."""
        return next((entry for entry in self._entries if entry.ref == ref), None)

    def confirm(self, ref: object) -> Pending | None:
        """An echo with `ref` arrived: the line it confirms, now out of the
        outbox, or None if it confirms nothing (not ours, or already confirmed)."""
        entry = self.take(ref)
        if entry is not None:
            self.confirmed += 1
        return entry

    def take(self, ref: object) -> Pending | None:
        """Remove the line with `ref` (refused for good) and return it."""
        entry = self.find(ref)
        if entry is not None:
            self._entries.remove(entry)
        return entry

    def connection_lost(self) -> None:
        """Lines in flight on a connection that ended go again on the next."""
        for entry in self._entries:
            entry.sent = False
