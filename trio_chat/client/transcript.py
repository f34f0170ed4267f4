"""The event-id bookkeeping of one connection to one room.

Theory of operation: the server numbers a room's stored events 1, 2, 3...
and every member receives them in that order, gap-free from its join (or
from its `since`, when the history still holds it). A client remembers the
highest id it has seen: that is what it sends as `since` when it
reconnects, and anything at or below it that arrives again (a replay
overlapping what was shown) is a duplicate to skip. An id more than one
above the last skips ids: an order violation, and the skipped ids are
remembered as missing, so that one arriving late is told apart from a
duplicate (it is new, but out of order). The server never does either; the
load generator counts them to prove it, the terminal client only skips
duplicates.

The server names its numbering with an `epoch` in each welcome; a client
sends it back with `since`, so that the server never takes an id from an old
numbering for one of the new. A welcome with another epoch than the one seen,
or whose room's last id is at or below what was seen (a server too old to
send epochs, restarted without durable history), means the room's numbering
started over: the transcript forgets its last id rather than hide every new
event as a duplicate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

MISSING_LIMIT: Final = 100_000  # skipped ids remembered, at most, per transcript


class Transcript:
    """The ids one connection has seen in its room (see the module docstring).

    `last` is the highest id seen, -1 before any; hot loops may compare
    against `last + 1` themselves and call `irregular` for anything else.
    """

    __slots__ = ("duplicates", "epoch", "last", "missing", "order_violations", "skipped")

    def __init__(self, since: int | None = None, epoch: str | None = None) -> None:
        self.last = -1 if since is None else since
        self.epoch = epoch  # the numbering `last` belongs to, once a welcome named it
        self.missing: set[int] = set()
        self.skipped = 0  # ids skipped, late arrivals deducted
        self.duplicates = 0
        self.order_violations = 0

    @property
    def since(self) -> int | None:
        """The id to resume after (`hello`'s `since`), None before any event."""
        return None if self.last < 0 else self.last

    def observe(self, ident: int) -> bool:
        """Whether the event numbered `ident` is new (to show, to count)."""
        if ident == self.last + 1:
            self.last = ident
            return True
        return self.irregular(ident)

    def observe_event(self, event: Mapping[str, object]) -> bool:
        """`observe` for a decoded event; unnumbered ones (typing, errors) are
        always new."""
        ident = event.get("id")
        return type(ident) is not int or self.observe(ident)

    def irregular(self, ident: int) -> bool:
        """`observe` for an id that is not `last + 1`."""
        if self.last < 0:  # the first event: a replay may start anywhere
            self.last = ident
            return True
        if ident > self.last + 1:
            gap = ident - self.last - 1
            self.order_violations += 1
            self.skipped += gap
            if len(self.missing) + gap <= MISSING_LIMIT:
                self.missing.update(range(self.last + 1, ident))
            self.last = ident
            return True
        if ident in self.missing:
            self.missing.discard(ident)
            self.skipped -= 1
            self.order_violations += 1
            return True
        self.duplicates += 1
        return False

    def renumbered(
        self, room_last_id: object, epoch: object = None, *, resuming: bool = False
    ) -> bool:
        """Whether a welcome whose room's last id (its own join included) is
        `room_last_id`, in numbering `epoch`, shows the numbering started
        over; if so, forget ours. Either way, remember the welcome's epoch.

        With `resuming` (the hello asked for our place back), the welcome may
        add no join of ours: a last id equal to ours then means that nothing
        happened meanwhile, not that the numbering started over."""
        known = self.epoch
        if isinstance(epoch, str):
            self.epoch = epoch
        if self.last < 0:
            return False
        floor = self.last - 1 if resuming else self.last
        if not (isinstance(epoch, str) and known is not None and epoch != known) and (
            type(room_last_id) is not int or room_last_id > floor
        ):
            return False
        self.last = -1
        self.missing.clear()
        return True
