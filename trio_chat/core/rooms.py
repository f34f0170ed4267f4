"""The chat state: rooms, their members, event numbering, who receives what.

Theory of operation
-------------------
This module is pure: it imports neither Trio nor any I/O, and it is driven one
call at a time by the hub, which owns the only instance. Each call applies one
command atomically and returns the decision: the encoded event and the members
who must receive it. The invariants it keeps, which the property tests check:

* Every stored event of a room (`join`, `message`, `leave`) gets the room's
  next id: ids rise by exactly 1 per room, never repeat, never skip.
* Stored events are recorded in the room's history before they are returned,
  so a client that joins later replays exactly what live members received.
* A member receives every stored event of its room numbered after its own
  `join` (which it gets in its welcome replay, not live), and nothing of any
  other room. `typing` goes to the other members only and is not numbered.
* No two members of a room have names that clash (`protocol.name_keys`:
  look-alikes and case variants count as taken). A member leaves exactly
  once: `leave` of a non-member is a no-op, so the session, the hub (slow
  consumer) and shutdown may all ask and only the first one counts.

Member handles are opaque hashable objects chosen by the caller (the hub
uses its client objects), so recipients need no lookup.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from . import protocol
from .errors import TrioChatError
from .history import HistoryStore, RoomHistory, StoredEvent
from .protocol import ErrorCode, Hello, LeaveReason, ProtocolError, Say

H = TypeVar("H", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Delivery(Generic[H]):
    """One encoded event line and the members it goes to."""

    line: bytes
    recipients: tuple[H, ...]


@dataclass(frozen=True, slots=True)
class Joined(Generic[H]):
    """The outcome of a successful hello."""

    room: str
    name: str
    welcome: list[bytes]  # the welcome event, then the history replay
    announce: Delivery[H]  # the new member's `join`, for the others
    join_id: int


def name_taken(name: str, room: str, holder: str) -> ProtocolError:
    """The refusal of a hello for `name` in `room`, where member `holder`'s name
    clashes with it (the same, or a look-alike: then the message says which)."""
    like = "" if holder == name else f" (it looks like {holder!r})"
    return ProtocolError(ErrorCode.NAME_TAKEN, f"the name {name!r} is taken in {room!r}{like}")


class RoomNotLoaded(TrioChatError):
    """A join needs the room's history, which the store has not loaded yet."""

    def __init__(self, room: str) -> None:
        super().__init__(room)
        self.room = room


@dataclass(frozen=True, slots=True)
class ChatStatistics:
    rooms: int
    members: int


class _Room(Generic[H]):
    __slots__ = ("by_key", "history", "members", "name", "store")

    def __init__(self, name: str, history: RoomHistory, store: HistoryStore) -> None:
        self.name = name
        self.history = history
        self.store = store
        self.members: dict[H, str] = {}  # handle -> name, in join order
        self.by_key: dict[str, H] = {}  # each of protocol.name_keys(name) -> handle

    def append(self, line: bytes) -> None:
        event = StoredEvent(self.history.last_id + 1, line)
        self.history.append(event)
        self.store.record(self.name, event)


class Chat(Generic[H]):
    """All rooms of one server and the members in them."""

    def __init__(self, store: HistoryStore, replay_limit: int) -> None:
        self._store = store
        self._replay_limit = replay_limit
        self._rooms: dict[str, _Room[H]] = {}
        self._room_of: dict[H, _Room[H]] = {}

    def join(self, handle: H, hello: Hello, ts: str) -> Joined[H]:
        """Add `handle` to the room `hello` names.

        Raises:
            ProtocolError: `name_taken` if the name clashes with a member's in
                that room (the same or a look-alike, in any case; see
                `protocol.name_keys`), `already_joined` if `handle` is a member.
            RoomNotLoaded: the store must load the room's history first.
        """
        if handle in self._room_of:
            raise ProtocolError(ErrorCode.ALREADY_JOINED, "this connection already joined")
        room = self._rooms.get(hello.room)
        if room is None:
            history = self._store.acquire(hello.room)
            if history is None:
                raise RoomNotLoaded(hello.room)
            room = self._rooms[hello.room] = _Room(hello.room, history, self._store)
        keys = protocol.name_keys(hello.name)
        clashes = [room.by_key[key] for key in keys if key in room.by_key]
        if clashes:
            raise name_taken(hello.name, room.name, room.members[clashes[0]])
        others = tuple(room.members)
        room.members[handle] = hello.name
        room.by_key.update(dict.fromkeys(keys, handle))
        self._room_of[handle] = room

        join_id = room.history.last_id + 1
        line = protocol.join_event(join_id, room.name, hello.name, ts)
        room.append(line)
        epoch = self._store.epoch
        replay = room.history.replay_for_join(
            hello.since, self._replay_limit, same_epoch=hello.epoch in (None, epoch)
        )
        welcome = protocol.welcome_event(
            room.name,
            hello.name,
            list(room.members.values()),
            join_id,
            epoch=epoch,
            recovered=replay.recovered,
        )
        return Joined(
            room=room.name,
            name=hello.name,
            welcome=[welcome, *(event.line for event in replay.events)],
            announce=Delivery(line, others),
            join_id=join_id,
        )

    def say(self, handle: H, say: Say, ts: str) -> Delivery[H] | None:
        """Number and address a message; None if `handle` is not a member."""
        room = self._room_of.get(handle)
        if room is None:
            return None
        line = protocol.message_event(
            room.history.last_id + 1, room.name, room.members[handle], say.text, ts, ref=say.ref
        )
        room.append(line)
        return Delivery(line, tuple(room.members))

    def typing(self, handle: H) -> Delivery[H] | None:
        """Address a typing notice to the other members; None if not a member."""
        room = self._room_of.get(handle)
        if room is None:
            return None
        line = protocol.typing_event(room.name, room.members[handle])
        return Delivery(line, tuple(h for h in room.members if h != handle))

    def leave(self, handle: H, reason: LeaveReason, ts: str) -> Delivery[H] | None:
        """Remove `handle` from its room; None if it was not a member.

        An emptied room is forgotten here; its history stays in the store.
        """
        left = self.leave_all([handle], reason, ts)
        return left[0] if left else None

    def leave_all(self, handles: list[H], reason: LeaveReason, ts: str) -> list[Delivery[H]]:
        """Remove several members at once; one `leave` per member removed.

        Every leave goes to the members who remain after all of `handles`
        are gone, so none of those leaving is addressed another's leave
        (they are being disconnected). Handles that are not members are
        skipped, as with `leave`.
        """
        left: list[tuple[_Room[H], bytes]] = []
        for handle in handles:
            room = self._room_of.pop(handle, None)
            if room is None:
                continue
            name = room.members.pop(handle)
            for key in protocol.name_keys(name):
                del room.by_key[key]
            line = protocol.leave_event(room.history.last_id + 1, room.name, name, ts, reason)
            room.append(line)
            left.append((room, line))
        remaining: dict[str, tuple[H, ...]] = {}
        deliveries: list[Delivery[H]] = []
        for room, line in left:
            recipients = remaining.get(room.name)
            if recipients is None:
                recipients = remaining[room.name] = tuple(room.members)
                if not room.members and room.name in self._rooms:
                    del self._rooms[room.name]
                    self._store.release(room.name)
            deliveries.append(Delivery(line, recipients))
        return deliveries

    def is_active(self, room: str) -> bool:
        """Whether `room` has members (and so its window is in use)."""
        return room in self._rooms

    def members(self, room: str) -> list[str]:
        """Names in `room`, in join order (empty if nobody is there)."""
        found = self._rooms.get(room)
        return list(found.members.values()) if found else []

    def statistics(self) -> ChatStatistics:
        return ChatStatistics(rooms=len(self._rooms), members=len(self._room_of))
