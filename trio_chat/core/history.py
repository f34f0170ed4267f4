"""Room history: the retained, numbered events of each room.

Pure (no Trio). `RoomHistory` is the window of one room's most recent events
that replay reads, kept in memory while a room is in use. `HistoryStore` is
the seam to where histories live between uses: `MemoryHistoryStore` keeps
the windows in process memory, those of the `IDLE_ROOMS` most recently
emptied rooms included; the durable SQLite store (`trio_chat.stores.sqlite`) writes
events behind and loads a room's window on demand.
"""

from __future__ import annotations

import itertools
import secrets
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

# Rooms without members whose history `MemoryHistoryStore` keeps. Anyone can
# create rooms; without a bound, each emptied room would cost memory forever.
IDLE_ROOMS = 10_000


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A numbered event of a room, already encoded as its wire line."""

    id: int
    line: bytes


@dataclass(frozen=True, slots=True)
class Replay:
    """What a joining client is sent after its welcome."""

    events: list[StoredEvent]
    recovered: bool | None  # None when the client gave no `since`


class RoomHistory:
    """The last `limit` events of one room, and the room's last assigned id.

    Ids are contiguous inside the window, so positions are arithmetic.
    """

    __slots__ = ("_events", "last_id")

    def __init__(
        self, limit: int, events: list[StoredEvent] | None = None, *, last_id: int = 0
    ) -> None:
        self._events: deque[StoredEvent] = deque(events or (), maxlen=limit)
        self.last_id = self._events[-1].id if self._events else last_id

    @classmethod
    def from_storage(cls, limit: int, stored: Sequence[StoredEvent], last_id: int) -> RoomHistory:
        """The window for events read back from storage, where ids may have gaps.

        `stored` is oldest first; `last_id` is the room's last assigned id as
        storage recorded it (raised to the newest stored id if lower). Only
        the newest run of contiguous ids that ends at `last_id` is kept, at
        most `limit` events: an event before a gap can never be replayed
        together with the ones lost in it, and this class numbers by position.
        If the newest events themselves were lost, the window is empty and
        keeps `last_id`, so the numbering still never repeats an id.
        """
        if stored:
            last_id = max(last_id, stored[-1].id)
        run: list[StoredEvent] = []
        for event in reversed(stored):
            if len(run) == limit or event.id != last_id - len(run):
                break
            run.append(event)
        run.reverse()
        return cls(limit, run, last_id=last_id)

    def append(self, event: StoredEvent) -> None:
        """Add the room's next event (its id must be `last_id + 1`)."""
        assert event.id == self.last_id + 1, (event.id, self.last_id)
        self._events.append(event)
        self.last_id = event.id

    def __len__(self) -> int:
        return len(self._events)

    @property
    def first_id(self) -> int:
        """Id of the oldest retained event (`last_id + 1` when none is)."""
        return self._events[0].id if self._events else self.last_id + 1

    def after(self, since: int) -> list[StoredEvent]:
        """Every retained event with id > `since`, oldest first."""
        start = max(since + 1 - self.first_id, 0)
        return list(itertools.islice(self._events, start, None))

    def page(self, before: int | None, limit: int) -> tuple[list[StoredEvent], bool]:
        """The newest `limit` retained events with ids below `before` (None:
        below none), oldest first; and whether older ones are retained."""
        end = len(self._events)
        if before is not None:
            end = min(max(before - self.first_id, 0), end)
        start = max(end - limit, 0)
        return list(itertools.islice(self._events, start, end)), start > 0

    def tail(self, count: int) -> list[StoredEvent]:
        """The `count` most recent retained events, oldest first."""
        start = max(len(self._events) - count, 0)
        return list(itertools.islice(self._events, start, None))

    def replay_for_join(
        self, since: int | None, replay_limit: int, *, same_epoch: bool = True
    ) -> Replay:
        """History for a client whose own `join` is the newest event.

        Implements the protocol's replay rules: without `since`, the last
        `replay_limit` events but never fewer than the client's own join;
        with `since`, everything retained after it, and whether that is all
        that was missed. A `since` from another numbering (`same_epoch`
        false), or beyond what existed before this join (the history was
        lost), is answered like no `since`, with `recovered: false`.
        """
        own_join = self.last_id
        if since is None or not same_epoch or since > own_join - 1:
            events = self.tail(max(replay_limit, 1))
            return Replay(events, None if since is None else False)
        return Replay(self.after(since), recovered=self.first_id <= since + 1)

    def replay_for_resume(
        self, since: int | None, replay_limit: int, *, same_epoch: bool = True
    ) -> Replay:
        """History for a member taking its place back (no join of its own):
        the same rules as `replay_for_join`, but nothing is newer than what
        the member may have seen, so a `since` up to `last_id` is honoured."""
        if since is None or not same_epoch or since > self.last_id:
            events = self.tail(replay_limit)
            return Replay(events, None if since is None else False)
        return Replay(self.after(since), recovered=self.first_id <= since + 1)


class HistoryStore(Protocol):
    """Where rooms' histories live between uses.

    The chat core acquires a room's window when the room gets its first
    member (`acquire`), records every event it appends (`record`), and
    releases the room when its last member leaves (`release`). A store whose
    windows are not all in memory returns None from `acquire` until the shell
    has read the window (off the hub task: the hub's `load`, which a durable
    store provides) and handed it to `install`.

    `epoch` names the store's numbering: it changes whenever ids may start
    over (a new database), so that a client's `since` from before is never
    taken for an id of the new numbering.
    """

    @property
    def epoch(self) -> str:
        """The numbering's name, opaque to clients (the welcome's `epoch`)."""
        ...

    def acquire(self, room: str) -> RoomHistory | None:
        """The window of `room`, now in use; None if it must be loaded first."""
        ...

    def install(self, room: str, history: RoomHistory) -> None:
        """Keep a window produced by `load` in memory."""
        ...

    def record(self, room: str, event: StoredEvent) -> None:
        """Persist an event just appended to `room`'s window (never blocks)."""
        ...

    def release(self, room: str) -> None:
        """`room` has no members now: its window may leave memory."""
        ...


@dataclass(frozen=True, slots=True)
class MemoryStoreStatistics:
    rooms_in_memory: int  # rooms in use and idle rooms kept
    idle_rooms: int  # rooms without members whose history is kept


class MemoryHistoryStore:
    """History kept in process memory, bounded by `limit` events per room.

    The history of a room in use is always kept. Of the rooms without
    members, only the `max_idle_rooms` most recently emptied keep theirs; the
    least recently emptied is forgotten first. Ids are never handed out twice
    for a room, though: once a room has been forgotten, every room created
    afterwards numbers on from the highest id any forgotten room reached. So
    a client resuming a forgotten room with the `since` it last saw gets
    `recovered: false` (or, when nothing happened in between, exactly what
    followed), never a replay of a different room's events under old ids.
    """

    def __init__(
        self, limit: int, *, max_idle_rooms: int = IDLE_ROOMS, epoch: str | None = None
    ) -> None:
        # A new store numbers from scratch: a new epoch unless told (tests).
        self._epoch = secrets.token_hex(8) if epoch is None else epoch
        self._limit = limit
        self._max_idle_rooms = max_idle_rooms
        self._rooms: dict[str, RoomHistory] = {}
        self._idle: dict[str, None] = {}  # least recently emptied first
        self._floor = 0  # the highest last id of any forgotten room

    @property
    def epoch(self) -> str:
        return self._epoch

    def acquire(self, room: str) -> RoomHistory:
        self._idle.pop(room, None)
        history = self._rooms.get(room)
        if history is None:
            history = self._rooms[room] = RoomHistory(self._limit, last_id=self._floor)
        return history

    def install(self, room: str, history: RoomHistory) -> None:
        self._rooms[room] = history

    def record(self, room: str, event: StoredEvent) -> None:
        """Nothing to do: the window in memory is all the storage there is."""

    def release(self, room: str) -> None:
        """Keep the room's window among the idle ones, forgetting the oldest past the bound."""
        self._idle.pop(room, None)
        self._idle[room] = None
        while len(self._idle) > self._max_idle_rooms:
            oldest = next(iter(self._idle))
            del self._idle[oldest]
            forgotten = self._rooms.pop(oldest, None)
            if forgotten is not None:
                self._floor = max(self._floor, forgotten.last_id)

    def statistics(self) -> MemoryStoreStatistics:
        return MemoryStoreStatistics(rooms_in_memory=len(self._rooms), idle_rooms=len(self._idle))
