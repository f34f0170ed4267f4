"""One room's events as a process receives them from elsewhere, put back in order.

Theory of operation: when several processes share a room, the room's ids
are handed out in one place (the backplane) and every process hears each
event from there, its own included, over a channel that may drop, repeat or
reorder what it carries (a reconnect, a slow subscriber, a full buffer).
Members must still receive every event exactly once, in id order. So a
`RoomFeed` remembers the last id it let through (`last_id`) and:

* an id at or below it is a repeat, dropped;
* the next id goes through, with any held ones that now follow on;
* a later id is held, and the gap before it is asked for (`Fill`) from the
  room's log, where every retained event can be read back by id;
* a fill's answer goes through in order; ids it does not hold are gone from
  the log (trimmed, or lost with the backplane) and are skipped, so the feed
  never waits for what can no longer come.

At most one fill per room is outstanding: a later gap waits for the answer,
which may close it too. When the channel is known to have lost something
whose ids are unknown (a full buffer, a resubscription), `resync` asks for
everything after `last_id`. Pure: the shell reads the log and the clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from .history import StoredEvent

H = TypeVar("H")


@dataclass(frozen=True, slots=True)
class Fill:
    """Read the room's log after `after_id`, up to `up_to_id` (None: to the end)."""

    after_id: int
    up_to_id: int | None


@dataclass(frozen=True, slots=True)
class FeedStep:
    """What to do now: deliver `events` in this order, then ask for `fill` if any."""

    events: list[StoredEvent] = field(default_factory=list)
    fill: Fill | None = None


@dataclass(frozen=True, slots=True)
class FeedStatistics:
    delivered: int
    repeats: int  # ids received again, dropped
    held: int  # ids waiting for the gap before them
    skipped: int  # ids no longer in the log when asked for: never delivered
    fills: int  # fills asked for


class RoomFeed:
    """Puts one room's incoming events in id order; see the module docstring."""

    def __init__(self, last_id: int) -> None:
        self.last_id = last_id
        self._held: dict[int, bytes] = {}
        self._filling: Fill | None = None
        self._delivered = 0
        self._repeats = 0
        self._skipped = 0
        self._fills = 0

    @property
    def filling(self) -> bool:
        """Whether a fill has been asked for and not answered yet."""
        return self._filling is not None

    def receive(self, event: StoredEvent) -> FeedStep:
        """An event heard on the channel."""
        if event.id <= self.last_id or event.id in self._held:
            self._repeats += 1
            return FeedStep()
        if event.id != self.last_id + 1:
            self._held[event.id] = event.line
            return FeedStep(fill=self._ask(Fill(self.last_id, min(self._held) - 1)))
        return FeedStep(self._advance([event]))

    def resync(self) -> FeedStep:
        """The channel lost events we cannot name: read everything after `last_id`."""
        return FeedStep(fill=self._ask(Fill(self.last_id, None)))

    def filled(self, events: Sequence[StoredEvent]) -> FeedStep:
        """The answer to the outstanding fill: the log's events in its range.

        Ids in the range that the answer lacks are gone from the log and are
        skipped. If a gap remains past the range, the next fill is asked for.
        """
        asked = self._filling
        if asked is None:
            raise RuntimeError("a fill answer without a fill outstanding")  # a shell bug
        self._filling = None
        for event in events:
            if event.id > self.last_id and (asked.up_to_id is None or event.id <= asked.up_to_id):
                self._held.setdefault(event.id, event.line)
        end = asked.up_to_id
        if end is None:
            end = max([event.id for event in events], default=self.last_id)
        ready: list[StoredEvent] = []
        while self.last_id < end or self.last_id + 1 in self._held:
            line = self._held.pop(self.last_id + 1, None)
            if line is None:
                self._skipped += 1
                self.last_id += 1
                continue
            ready.append(StoredEvent(self.last_id + 1, line))
            self.last_id += 1
        self._delivered += len(ready)
        fill = self._ask(Fill(self.last_id, min(self._held) - 1)) if self._held else None
        return FeedStep(ready, fill)

    def statistics(self) -> FeedStatistics:
        return FeedStatistics(
            delivered=self._delivered,
            repeats=self._repeats,
            held=len(self._held),
            skipped=self._skipped,
            fills=self._fills,
        )

    def _advance(self, ready: list[StoredEvent]) -> list[StoredEvent]:
        """Let `ready` (the next id) through, and the held ids that follow on."""
        self.last_id = ready[-1].id
        while (line := self._held.pop(self.last_id + 1, None)) is not None:
            self.last_id += 1
            ready.append(StoredEvent(self.last_id, line))
        self._delivered += len(ready)
        return ready

    def _ask(self, fill: Fill) -> Fill | None:
        if self._filling is not None:
            return None  # its answer comes first; what is still missing then is asked for
        self._filling = fill
        self._fills += 1
        return fill


# --------------------------------------------------------------------------
# Who receives what a feed lets through


def recipients_of(members: Mapping[H, int], event_id: int) -> list[H]:
    """The members (handle -> join id) who receive event `event_id` live: those
    who joined before it. A member's own join and what precedes it come in
    its welcome's replay."""
    return [member for member, join_id in members.items() if join_id < event_id]


def catch_up(
    window: Sequence[StoredEvent], after_id: int, last_id: int
) -> list[StoredEvent] | None:
    """The events after `after_id` up to `last_id`, from `window` (a room's
    recently delivered events, in id order), or None if it no longer reaches
    back that far: then the log has them.

    A join's reply can come back after the room's feed has let through later
    events; the new member gets those right behind its replay.
    """
    if last_id <= after_id:
        return []
    if not window or window[0].id > after_id + 1:
        return None
    return [event for event in window if after_id < event.id <= last_id]
