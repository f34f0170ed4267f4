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

Presence: a member is a *seat* (its name, its `resume` secret) held by a
connection (a handle). A connection that drops (`drop`: no goodbye, a
timeout, a server shutdown) leaves its seat *held* for `grace` seconds:
nobody sees anything, the name stays taken, and a `hello` with the seat's
secret takes the seat back with no `join` event (a connection still holding
it is displaced). When the grace ends (`expire`), the member leaves, with
the reason it dropped for. With `grace` 0, a drop is a leave, and welcomes
carry no secret.

Exactly once: a `say` whose `ref` the same member used for a message still
retained in the room's window, at most `DEDUPE_WINDOW` seconds ago, is not
stored again: the original event goes back to the sender alone (`Resent`).

Member handles are opaque hashable objects chosen by the caller (the hub
uses its client objects), so recipients need no lookup. Time (`now`) is the
caller's monotonic clock in seconds; secrets are the caller's too, so that
this module stays deterministic.
"""

from __future__ import annotations

import heapq
import hmac
import itertools
from collections import deque
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from . import protocol
from .errors import TrioChatError
from .history import HistoryStore, RoomHistory, StoredEvent
from .protocol import ErrorCode, Hello, HistoryRequest, LeaveReason, ProtocolError, Say

H = TypeVar("H", bound=Hashable)

DEDUPE_WINDOW: Final = 600.0  # seconds a `ref` is remembered (while its event is retained)


@dataclass(frozen=True, slots=True)
class Delivery(Generic[H]):
    """One encoded event line and the members it goes to."""

    line: bytes
    recipients: tuple[H, ...]


@dataclass(frozen=True, slots=True)
class Resent(Delivery[H]):
    """An event stored before, sent again to one member: not a new event."""


@dataclass(frozen=True, slots=True)
class Reply(Delivery[H]):
    """A line for one member alone that is no event (a `history` page)."""


@dataclass(frozen=True, slots=True)
class Joined(Generic[H]):
    """The outcome of a successful hello."""

    room: str
    name: str
    welcome: list[bytes]  # the welcome event, then the history replay
    announce: Delivery[H]  # the new member's `join`, for the others (empty on a resume)
    join_id: int  # its join's id; on a resume, the room's last id
    resumed: bool = False  # took its held seat back: nothing to announce
    displaced: H | None = None  # the connection that held the seat until now


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
    members: int  # connected
    held: int = 0  # seats kept for members whose connection dropped
    joins: int = 0  # new seats taken since start (each announced by a `join`)
    resumes: int = 0  # seats taken back with their resume secret (no `join`)
    leaves: Mapping[str, int] = field(default_factory=dict)  # `leave` events by reason


@dataclass(frozen=True, slots=True)
class HeldSeat:
    """A member whose connection dropped, kept for `remaining` seconds more:
    what a graceful restart writes down and restores."""

    room: str
    name: str
    secret: str
    reason: LeaveReason
    remaining: float
    joined_id: int  # the id of the member's join: its `ref`s count from there


class _Seat(Generic[H]):
    __slots__ = ("handle", "held_reason", "held_until", "hold", "joined_id", "name", "secret")

    def __init__(self, name: str, secret: str, handle: H | None, joined_id: int) -> None:
        self.name = name
        self.secret = secret
        self.handle = handle  # None while held
        self.joined_id = joined_id
        self.hold = -1  # which hold of the seat is the current one (`Chat._held`)
        self.held_reason = LeaveReason.QUIT
        self.held_until = 0.0


class _Room(Generic[H]):
    __slots__ = ("by_key", "connected", "history", "name", "ref_order", "refs", "seats", "store")

    def __init__(self, name: str, history: RoomHistory, store: HistoryStore, now: float) -> None:
        self.name = name
        self.history = history
        self.store = store
        self.seats: dict[str, _Seat[H]] = {}  # name -> seat, in join order
        self.by_key: dict[str, _Seat[H]] = {}  # each of protocol.name_keys(name) -> seat
        self.connected: dict[H, _Seat[H]] = {}  # handle -> seat, in join order
        # (name, ref) -> the message event; `ref_order` is the same, oldest first.
        self.refs: dict[tuple[str, str], StoredEvent] = {}
        self.ref_order: deque[tuple[float, int, tuple[str, str]]] = deque()
        for event in history.after(0):
            self._remember(event, now)

    def append(self, line: bytes, now: float) -> StoredEvent:
        event = StoredEvent(self.history.last_id + 1, line)
        self.history.append(event)
        self.store.record(self.name, event)
        self._remember(event, now)
        return event

    def _remember(self, event: StoredEvent, now: float) -> None:
        key = protocol.message_author_and_ref(event.line)
        if key is not None:
            self.refs[key] = event
            self.ref_order.append((now, event.id, key))

    def original(self, seat: _Seat[H], ref: str, now: float) -> StoredEvent | None:
        """The retained message `seat`'s member sent with `ref` within
        DEDUPE_WINDOW (a namesake who left before does not count)."""
        first_id = self.history.first_id
        order = self.ref_order
        while order and (order[0][1] < first_id or order[0][0] < now - DEDUPE_WINDOW):
            _, event_id, key = order.popleft()
            if self.refs.get(key) is not None and self.refs[key].id == event_id:
                del self.refs[key]
        event = self.refs.get((seat.name, ref))
        return event if event is not None and event.id > seat.joined_id else None

    def add(self, seat: _Seat[H]) -> None:
        self.seats[seat.name] = seat
        self.by_key.update(dict.fromkeys(protocol.name_keys(seat.name), seat))

    def remove(self, seat: _Seat[H]) -> None:
        del self.seats[seat.name]
        for key in protocol.name_keys(seat.name):
            del self.by_key[key]

    def clash(self, name: str) -> _Seat[H] | None:
        """The seat whose name is `name` or looks like it, if any."""
        return next(
            (self.by_key[key] for key in protocol.name_keys(name) if key in self.by_key), None
        )


class Chat(Generic[H]):
    """All rooms of one server and the members in them."""

    def __init__(self, store: HistoryStore, replay_limit: int, *, grace: float = 0.0) -> None:
        self._store = store
        self._replay_limit = replay_limit
        self._grace = grace
        self._rooms: dict[str, _Room[H]] = {}
        self._seat_of: dict[H, tuple[_Room[H], _Seat[H]]] = {}
        # (held until, hold number, room, seat): stale entries (the seat
        # taken back, held again since, or gone) are skipped when they come up.
        self._held: list[tuple[float, int, _Room[H], _Seat[H]]] = []
        self._held_count = 0
        self._holds = itertools.count()
        self._joins = 0
        self._resumes = 0
        self._leaves = dict.fromkeys(LeaveReason, 0)

    def _room(self, name: str, now: float) -> _Room[H]:
        room = self._rooms.get(name)
        if room is None:
            history = self._store.acquire(name)
            if history is None:
                raise RoomNotLoaded(name)
            room = self._rooms[name] = _Room(name, history, self._store, now)
        return room

    def join(
        self, handle: H, hello: Hello, ts: str, *, now: float = 0.0, secret: str = ""
    ) -> Joined[H]:
        """Add `handle` to the room `hello` names, or give it its seat back.

        A `hello` whose `resume` is the secret of the seat named `hello.name`
        (held, or held by another connection) takes that seat: no `join`
        event, and the connection that held it, if any, is `displaced`.
        Otherwise a new seat, with `secret` for a later resume.

        Raises:
            ProtocolError: `name_taken` if the name clashes with a member's in
                that room (the same or a look-alike, in any case; see
                `protocol.name_keys`), held seats included; `already_joined`
                if `handle` is a member.
            RoomNotLoaded: the store must load the room's history first.
        """
        if handle in self._seat_of:
            raise ProtocolError(ErrorCode.ALREADY_JOINED, "this connection already joined")
        room = self._room(hello.room, now)
        epoch = self._store.epoch
        same_epoch = hello.epoch in (None, epoch)
        seat = room.seats.get(hello.name)
        if (
            seat is not None
            and self._grace > 0
            and hello.resume is not None
            and hmac.compare_digest(seat.secret.encode(), hello.resume.encode())
        ):
            return self._resume(room, seat, handle, hello, epoch, same_epoch=same_epoch)
        clash = room.clash(hello.name)
        if clash is not None:
            raise name_taken(hello.name, room.name, clash.name)
        others = tuple(room.connected)
        join_id = room.history.last_id + 1
        seat = _Seat(hello.name, secret, handle, join_id)
        room.add(seat)
        room.connected[handle] = seat
        self._seat_of[handle] = (room, seat)
        self._joins += 1

        line = protocol.join_event(join_id, room.name, hello.name, ts)
        room.append(line, now)
        replay = room.history.replay_for_join(
            hello.since, self._replay_limit, same_epoch=same_epoch
        )
        welcome = protocol.welcome_event(
            room.name,
            hello.name,
            list(room.seats),
            join_id,
            epoch=epoch,
            recovered=replay.recovered,
            resume=secret if self._grace > 0 else None,
        )
        return Joined(
            room=room.name,
            name=hello.name,
            welcome=[welcome, *(event.line for event in replay.events)],
            announce=Delivery(line, others),
            join_id=join_id,
        )

    def _resume(
        self,
        room: _Room[H],
        seat: _Seat[H],
        handle: H,
        hello: Hello,
        epoch: str,
        *,
        same_epoch: bool,
    ) -> Joined[H]:
        displaced = seat.handle
        if displaced is None:
            self._held_count -= 1
        else:
            del room.connected[displaced]
            del self._seat_of[displaced]
        seat.handle = handle
        room.connected[handle] = seat
        self._seat_of[handle] = (room, seat)
        self._resumes += 1
        replay = room.history.replay_for_resume(
            hello.since, self._replay_limit, same_epoch=same_epoch
        )
        welcome = protocol.welcome_event(
            room.name,
            seat.name,
            list(room.seats),
            room.history.last_id,
            epoch=epoch,
            recovered=replay.recovered,
            resume=seat.secret,
        )
        return Joined(
            room=room.name,
            name=seat.name,
            welcome=[welcome, *(event.line for event in replay.events)],
            announce=Delivery(b"", ()),
            join_id=room.history.last_id,
            resumed=True,
            displaced=displaced,
        )

    def say(self, handle: H, say: Say, ts: str, *, now: float = 0.0) -> Delivery[H] | None:
        """Number and address a message; None if `handle` is not a member.

        A `ref` this member used for a retained message in the last
        `DEDUPE_WINDOW` seconds gives that message back to the sender alone
        (`Resent`), and stores nothing.
        """
        found = self._seat_of.get(handle)
        if found is None:
            return None
        room, seat = found
        if say.ref is not None:
            original = room.original(seat, say.ref, now)
            if original is not None:
                return Resent(original.line, (handle,))
        line = protocol.message_event(
            room.history.last_id + 1, room.name, seat.name, say.text, ts, ref=say.ref
        )
        room.append(line, now)
        return Delivery(line, tuple(room.connected))

    def history(self, handle: H, request: HistoryRequest) -> Reply[H] | None:
        """A page of the member's room's retained history, for it alone;
        None if `handle` is not a member."""
        found = self._seat_of.get(handle)
        if found is None:
            return None
        room = found[0]
        events, more = room.history.page(request.before, request.limit)
        line = protocol.history_event(
            room.name, [event.line for event in events], more=more, ref=request.ref
        )
        return Reply(line, (handle,))

    def typing(self, handle: H) -> Delivery[H] | None:
        """Address a typing notice to the other members; None if not a member."""
        found = self._seat_of.get(handle)
        if found is None:
            return None
        room, seat = found
        line = protocol.typing_event(room.name, seat.name)
        return Delivery(line, tuple(h for h in room.connected if h != handle))

    def leave(self, handle: H, reason: LeaveReason, ts: str) -> Delivery[H] | None:
        """Remove `handle` from its room; None if it was not a member.

        An emptied room is forgotten here; its history stays in the store.
        """
        left = self.leave_all([handle], reason, ts)
        return left[0] if left else None

    def leave_all(self, handles: Iterable[H], reason: LeaveReason, ts: str) -> list[Delivery[H]]:
        """Remove several members at once; one `leave` per member removed.

        Every leave goes to the members who remain after all of `handles`
        are gone, so none of those leaving is addressed another's leave
        (they are being disconnected). Handles that are not members are
        skipped, as with `leave`.
        """
        seats: list[tuple[_Room[H], _Seat[H], LeaveReason]] = []
        for handle in handles:
            found = self._seat_of.pop(handle, None)
            if found is None:
                continue
            room, seat = found
            del room.connected[handle]
            seats.append((room, seat, reason))
        return self._leave_seats(seats, ts)

    def _leave_seats(
        self, seats: list[tuple[_Room[H], _Seat[H], LeaveReason]], ts: str, now: float = 0.0
    ) -> list[Delivery[H]]:
        left: list[tuple[_Room[H], bytes]] = []
        for room, seat, reason in seats:
            room.remove(seat)
            self._leaves[reason] += 1
            line = protocol.leave_event(room.history.last_id + 1, room.name, seat.name, ts, reason)
            room.append(line, now)
            left.append((room, line))
        remaining: dict[str, tuple[H, ...]] = {}
        deliveries: list[Delivery[H]] = []
        for room, line in left:
            recipients = remaining.get(room.name)
            if recipients is None:
                recipients = remaining[room.name] = tuple(room.connected)
                self._forget_if_empty(room)
            deliveries.append(Delivery(line, recipients))
        return deliveries

    def _forget_if_empty(self, room: _Room[H]) -> None:
        if not room.seats and self._rooms.get(room.name) is room:
            del self._rooms[room.name]
            self._store.release(room.name)

    def drop(self, handle: H, reason: LeaveReason, ts: str, *, now: float) -> Delivery[H] | None:
        """`handle`'s connection ended without a goodbye: hold its seat for
        the grace period (nothing to deliver: None). Without a grace period,
        the same as `leave`."""
        if self._grace <= 0:
            return self.leave(handle, reason, ts)
        found = self._seat_of.pop(handle, None)
        if found is None:
            return None
        room, seat = found
        del room.connected[handle]
        self._hold(room, seat, reason, now + self._grace)
        return None

    def _hold(self, room: _Room[H], seat: _Seat[H], reason: LeaveReason, until: float) -> None:
        seat.handle = None
        seat.held_reason = reason
        seat.held_until = until
        seat.hold = next(self._holds)
        self._held_count += 1
        heapq.heappush(self._held, (until, seat.hold, room, seat))

    def next_expiry(self) -> float | None:
        """When the next held seat's grace ends, or None if none is held."""
        held = self._held
        while held and not self._still_held(held[0]):
            heapq.heappop(held)
        return held[0][0] if held else None

    @staticmethod
    def _still_held(entry: tuple[float, int, _Room[H], _Seat[H]]) -> bool:
        _, hold, room, seat = entry
        return seat.handle is None and seat.hold == hold and room.seats.get(seat.name) is seat

    def expire(self, now: float, ts: str) -> list[Delivery[H]]:
        """Seats held past their grace: their members leave, each with the
        reason its connection dropped for."""
        seats: list[tuple[_Room[H], _Seat[H], LeaveReason]] = []
        held = self._held
        while held and held[0][0] <= now:
            entry = heapq.heappop(held)
            if self._still_held(entry):
                _, _, room, seat = entry
                self._held_count -= 1
                seats.append((room, seat, seat.held_reason))
        return self._leave_seats(seats, ts, now)

    def hold_all(self, reason: LeaveReason, now: float) -> list[HeldSeat]:
        """Every connected member's seat held (the server is going down), and
        then every held seat, for the store to keep across a restart."""
        for handle in list(self._seat_of):
            self.drop(handle, reason, "", now=now)
        return [
            HeldSeat(
                room.name,
                seat.name,
                seat.secret,
                seat.held_reason,
                seat.held_until - now,
                seat.joined_id,
            )
            for room in self._rooms.values()
            for seat in room.seats.values()  # in join order, as the member lists show
            if seat.handle is None
        ]

    def restore(self, seats: Iterable[HeldSeat], now: float) -> None:
        """Hold the seats a previous run kept (`hold_all`), for what remains of
        their grace (at most this run's); a seat whose grace is over leaves at
        the next `expire`.
        Their rooms' histories must be in the store (`acquire`).

        Raises:
            RoomNotLoaded: a room's history is not in the store.
        """
        for held in seats:
            room = self._room(held.room, now)
            if room.clash(held.name) is not None:
                continue  # a duplicate in what was kept
            seat: _Seat[H] = _Seat(held.name, held.secret, None, held.joined_id)
            room.add(seat)
            # Never longer than this run's grace: with none, they leave at once.
            remaining = min(max(held.remaining, 0.0), self._grace)
            self._hold(room, seat, held.reason, now + remaining)

    def is_active(self, room: str) -> bool:
        """Whether `room` has members, connected or held (so its window is in use)."""
        return room in self._rooms

    def members(self, room: str) -> list[str]:
        """Names in `room`, held seats included, in join order (empty if nobody is there)."""
        found = self._rooms.get(room)
        return list(found.seats) if found else []

    def rooms(self) -> list[tuple[str, int]]:
        """Each room with members, and how many (held seats included)."""
        return [(name, len(room.seats)) for name, room in self._rooms.items()]

    def statistics(self) -> ChatStatistics:
        return ChatStatistics(
            rooms=len(self._rooms),
            members=len(self._seat_of),
            held=self._held_count,
            joins=self._joins,
            resumes=self._resumes,
            leaves={str(reason): count for reason, count in self._leaves.items()},
        )
