"""The shared hub: the hub for rooms that several processes share through a backplane.

It offers sessions what `hub.Hub` offers (`join`, `leave`, `say`,
`statistics`), but the room's order is made elsewhere: the backplane's
scripts number, store and publish every event (backplane/scripts.py), and
every process, the sender's included, delivers a room's events as it hears
them on the room's subscription.

Theory of operation
-------------------
One hub task owns all the state and applies one FIFO inbox, as in hub.py. It
never awaits the backplane itself: round trips run in tasks of the hub's own
nursery and post their answers back into the inbox, so the order in which
the hub applies its inbox stays the one order of this process's deliveries.

* Script calls (`JOIN`, `SAY`, `LEAVE`) leave the hub through one queue, run
  by one task in the order queued, a round trip at a time; the posts queued
  meanwhile go out together as one `say_many`. So a member's messages are
  stored in the order it sent them, after its join and before its leave.
* Subscriptions change through a second queue and task, in order: a room
  left empty and joined again is unsubscribed before it is subscribed anew.
* A room is subscribed before its first local member's `JOIN` runs, so every
  event after that join is heard. Heard events go through the room's
  `RoomFeed` (core/feed.py): once each, in id order, gaps read from the log.
  Rooms whose events the subscription dropped are resynced on a timer.
* A member receives live every event whose id is above its own join id (its
  join and what came before arrive in its welcome's replay). A join's reply
  can come back after the feed has let through later events; those come from
  a small window of the room's recent events, or from the log, and reach the
  member right behind its replay, before it receives anything live.
* A member leaves locally at once (no more deliveries), and its `LEAVE` is
  queued; the room is unsubscribed when no local member is left or joining.
* A full outbox drops the member (close 1013, leave reason `slow`) as hub.py
  does; its leave goes through the backplane like any other, and comes back
  to the others from the subscription, so a drop never cascades locally.
* Losing the backplane closes nobody. A `say_many` that fails comes back to
  the hub task as `_SaysFailed`, which answers each sender still here with
  an `error` event `unavailable` (its post's `ref`); hellos are refused
  (`Unavailable`, close 1013); `trouble()` says so until a call succeeds.

Recovery
--------
When a call succeeds after failures, or the lease renewal finds the node's
lease gone (it lapsed while the server was out of reach, or the server lost
its data), the hub recovers (`_Recover`): it subscribes every room again,
and, behind those subscriptions in the same queue, reads every room's state
(`Backplane.room_states`: epoch, last id, which of its member tokens the
server still holds). Then, per room (`_checked`):

* another epoch, or a last id below one already delivered here: the room's
  numbering restarted, and the ids its members saw mean nothing now. Its
  members here are closed with 1012; their clients join again with `since`
  and `epoch`, and get `recovered: false` and the new numbering;
* else the members the server no longer holds (reaped meanwhile: the others
  saw them leave) are closed with 1012, to join again and be announced
  again; the others stay, and the feed reads what the subscription missed.

A post refused because its sender is no longer a member there is answered
`unavailable` and its sender closed with 1012 the same way (`_SaysRefused`).
So a member is never silently kept that the other processes think gone.

Typing notices are not numbered or stored: they go out with the says (one
PUBLISH each in the same round trip) and come back on the room's channel to
every process, which hands them to its members of the room but the sender.

Leases and the reaper
---------------------
`open_shared_hub` owns the node's lease: it runs `Backplane.serve_lease` in
the hub's nursery, started before the hub takes its first hello, so no other
process sees this node's members without a live lease. Nothing else may run
it for the same backplane. A process that dies (SIGKILL, a cancelled hub)
sends no leaves and stops renewing; once its lease has lapsed, the reaper of
any process sharing one of its rooms makes its members leave (reason
`timeout`): every `reap_period`, `dead_nodes` of this process's rooms, then
`reap` of each, which one process wins per dead node (`SET NX`), so each
leave is published once. The leaves come back on the rooms' subscriptions
like any event, in the rooms' order. With the defaults a dead process's
members leave within `LEASE_TTL + REAP_PERIOD` (13 s) of its last renewal.

An exception in the hub task is a bug: it is logged and re-raised, ending the
server, as in hub.py.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final

import trio

from ..backplane import keys
from ..backplane.errors import BackplaneError
from ..backplane.redis import LEASE_PERIOD, LEASE_TTL, Backplane, RoomState
from ..backplane.scripts import Admitted, NameTaken, Post, event_id_of
from ..core import protocol
from ..core.feed import FeedStep, Fill, RoomFeed, catch_up, recipients_of
from ..core.history import StoredEvent
from ..core.protocol import CloseCode, ErrorCode, LeaveReason, ProtocolError, Say
from ..core.rooms import Delivery, Joined, name_taken
from .hub import (
    BackplaneCounters,
    Broadcast,
    HubFront,
    HubStatistics,
    Peer,
    Registration,
    Unavailable,
    Unregistration,
)

log = logging.getLogger(__name__)

INBOX_SIZE: Final = 1024
JOIN_WINDOW: Final = 256  # recent events kept per room for joins answered late
RESYNC_PERIOD: Final = 0.5  # seconds between checks for events the subscription dropped
READ_RETRY: Final = 0.5  # seconds before a failed log read is tried again
MAX_QUEUED_CALLS: Final = 10_000  # script calls waiting; over it, posts and hellos are refused
STOP_WAIT: Final = 5.0  # seconds the last leaves may take to reach the backplane at exit
REAP_PERIOD: Final = LEASE_PERIOD  # seconds between looks for dead processes' members
REAP_WARN_EVERY: Final = 60.0  # seconds between warnings that reaping keeps failing
UNAVAILABLE_MESSAGE: Final = "not sent: the backplane is unavailable; send it again later"

# --------------------------------------------------------------------------
# State, owned by the hub task


class _Room:
    """A room with local members, or members on their way in."""

    __slots__ = (
        "early",
        "epoch",
        "feed",
        "forgotten",
        "members",
        "name",
        "pending",
        "resync",
        "subscribed",
        "waiting",
        "window",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.subscribed = False
        self.forgotten = False  # no longer this process's: late answers are ignored
        self.waiting: list[_Member] = []  # hellos waiting for the subscription
        self.pending: set[_Member] = set()  # joins in flight, or catching up
        self.members: dict[Peer, int] = {}  # local members -> join id
        self.feed: RoomFeed | None = None  # made by the first join's reply
        self.epoch: str | None = None  # the numbering the feed follows
        self.early: list[StoredEvent] = []  # heard before there was a feed
        self.window: deque[StoredEvent] = deque(maxlen=JOIN_WINDOW)
        self.resync = False  # lost events to resync once the feed can ask

    @property
    def idle(self) -> bool:
        return not (self.members or self.pending or self.waiting)


@dataclass(slots=True, eq=False)
class _Member:
    peer: Peer
    hello: protocol.Hello
    room: _Room
    token: str
    ts: str  # when its hello was applied: its join event's time
    waiter: Registration | None  # the session's hello, until it is answered
    left: LeaveReason | None = None  # the session ended before its join was answered
    welcome: list[bytes] = field(default_factory=list)  # built once admitted
    join_id: int = 0

    @property
    def name(self) -> str:
        return self.hello.name

    def answer(self, outcome: Joined[Peer] | Exception) -> None:
        """Tell the session how its hello ended; keep nothing of it here."""
        if self.waiter is not None:
            self.waiter.outcome = outcome
            self.waiter.done.set()
            self.waiter = None
        self.welcome = []


# Script calls, run in order by the scripts task.


@dataclass(frozen=True, slots=True)
class _JoinCall:
    member: _Member


@dataclass(frozen=True, slots=True)
class _LeaveCall:
    room: str
    token: str
    name: str
    line: bytes


@dataclass(frozen=True, slots=True)
class _SayCall:
    """A member's `say`, with what its sender is told if it cannot be sent."""

    member: _Member
    ref: str | None
    post: Post


@dataclass(frozen=True, slots=True)
class _TypingCall:
    room: str
    line: bytes


_Call = _JoinCall | _LeaveCall | _SayCall | _TypingCall


# What tasks post back into the inbox.


@dataclass(frozen=True, slots=True)
class _Subscribed:
    room: _Room
    error: BackplaneError | None


@dataclass(frozen=True, slots=True)
class _JoinReplied:
    member: _Member
    outcome: Admitted | NameTaken | BackplaneError


@dataclass(frozen=True, slots=True)
class _Heard:
    events: list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class _Filled:
    room: _Room
    events: list[StoredEvent]


@dataclass(frozen=True, slots=True)
class _CaughtUp:
    member: _Member
    up_to_id: int
    events: list[StoredEvent]


@dataclass(frozen=True, slots=True)
class _Overflowed:
    rooms: set[str]


@dataclass(frozen=True, slots=True)
class _SaysFailed:
    """A `say_many` that failed: none of its posts was stored or published."""

    says: list[_SayCall]


@dataclass(frozen=True, slots=True)
class _SaysRefused:
    """Posts the backplane refused: their senders are no longer members there."""

    says: list[_SayCall]


@dataclass(frozen=True, slots=True)
class _Recover:
    """The backplane may have lost events or state: resubscribe, then check."""


@dataclass(frozen=True, slots=True)
class _Checked:
    states: dict[str, RoomState]
    delivered: dict[str, int]  # each room's last id delivered here when asked


@dataclass(frozen=True, slots=True)
class _Stop:
    pass


SharedHubMessage = (
    Registration
    | Unregistration
    | Broadcast
    | _Subscribed
    | _JoinReplied
    | _Heard
    | _Filled
    | _CaughtUp
    | _Overflowed
    | _SaysFailed
    | _SaysRefused
    | _Recover
    | _Checked
    | _Stop
)


class SharedHub(HubFront):
    """Delivers shared rooms' events to local members; see the module docstring.

    Sessions call it as they call `Hub` (`HubFront`). A hello it cannot admit
    for want of the backplane raises `Unavailable` (close 1013); a message
    the backplane cannot take reaches nobody, and its sender gets an `error`
    event `unavailable` with the message's `ref` (it may send it again). A
    message the backplane refuses because its sender is no longer a member
    there (reaped while this process was cut off) reaches nobody, and the
    sender is not told. `trouble` says why new clients should go elsewhere
    while the backplane is failing. Create with `open_shared_hub`.
    """

    def __init__(
        self,
        backplane: Backplane,
        inbox: trio.MemorySendChannel[SharedHubMessage],
        tasks: trio.Nursery,
        *,
        replay_limit: int,
        burst: int,
    ) -> None:
        self._backplane = backplane
        self._tasks = tasks
        self._replay_limit = replay_limit
        self._burst = burst
        super().__init__(inbox)
        self._replies = inbox.clone()  # what the hub's own tasks post back
        self._rooms: dict[str, _Room] = {}
        self._members: dict[Peer, _Member] = {}  # every member, admitted or on its way
        self._active = 0  # members admitted and not gone
        self._tokens = itertools.count(1)
        self._touched: set[Peer] = set()  # peers given events in this burst
        self._queue: deque[tuple[_Room, StoredEvent]] = deque()  # let through, not delivered
        self._stopping = False
        self._stopped = trio.Event()  # the hub task has ended
        # Hand-offs to the two ordered workers (the hub appends, each worker takes).
        self._calls: deque[_Call] = deque()
        self._calls_wakeup = trio.Event()
        self._calls_done = trio.Event()  # the scripts task has run its last call
        # (subscribe?, room), or None: check the rooms once the changes before it are done
        self._subscriptions: deque[tuple[bool, _Room] | None] = deque()
        self._subscriptions_wakeup = trio.Event()
        self._recovery_wanted = trio.Event()  # set when the backplane may have lost state
        # Counters. `_events` is kept by the scripts task (statistics only).
        self._events = 0
        self._deliveries = 0
        self._slow_drops = 0
        self._refused_posts = 0  # answered `unavailable`: the sender may send them again
        self._lost_posts = 0  # refused by the backplane, their senders no longer members
        self._say_round_trips = 0  # say_many calls answered, and their total time
        self._say_seconds = 0.0
        self._gap_fills = 0
        self._recoveries = 0  # checks of every room after a failure or a lost lease
        self._resubscriptions = 0
        self._restarted_rooms = 0  # rooms whose numbering restarted under local members
        self._lost_members = 0  # closed with 1012: the backplane no longer held them
        # The backplane's health, kept by every task that calls it: since when
        # its calls have failed (None while the last one succeeded), and why.
        self._failing_since: float | None = None
        self._failure = ""

    # -- statistics ------------------------------------------------------------

    def statistics(self) -> HubStatistics:
        return HubStatistics(
            rooms=len(self._rooms),
            members=self._active,
            events=self._events,
            deliveries=self._deliveries,
            slow_drops=self._slow_drops,
            inbox=self.broadcast.statistics().current_buffer_used,
        )

    def backplane_counters(self) -> BackplaneCounters:
        backplane = self._backplane.statistics()
        return BackplaneCounters(
            reachable=self._failing_since is None,
            publish_round_trips=self._say_round_trips,
            publish_seconds=self._say_seconds,
            gap_fills=self._gap_fills,
            resubscriptions=self._resubscriptions,
            recoveries=self._recoveries,
            refused_posts=self._refused_posts,
            lost_posts=self._lost_posts,
            lost_members=self._lost_members,
            restarted_rooms=self._restarted_rooms,
            overflowed=backplane.overflowed,
            lease_failures=backplane.lease_failures,
            leases_lost=backplane.leases_lost,
        )

    def trouble(self) -> str | None:
        """Why this hub cannot serve new clients now: the last call to the
        backplane (of any task) failed, and none has succeeded since."""
        if self._failing_since is None:
            return None
        failing_for = trio.current_time() - self._failing_since
        return f"backplane unreachable for {failing_for:.0f} s: {self._failure}"

    def _backplane_ok(self) -> None:
        if self._failing_since is not None:
            # Events published meanwhile were lost to the subscription, and
            # the server may have come back empty: check every room.
            log.info(
                "the backplane answers again after %.1f s",
                trio.current_time() - self._failing_since,
            )
            self._recovery_wanted.set()
        self._failing_since = None

    def _backplane_failed(self, error: BackplaneError) -> None:
        if self._failing_since is None:
            self._failing_since = trio.current_time()
            log.warning("the backplane is failing: %s", error)
        self._failure = str(error)

    # -- the hub task --------------------------------------------------------

    async def serve(self, inbox: trio.MemoryReceiveChannel[SharedHubMessage]) -> None:
        """Apply the inbox until `_Stop`; then ask every local member to leave.

        Raises:
            Exception: whatever a bug raised while applying a message, after
                logging it: the caller must stop the server.
        """
        try:
            async with inbox:
                async for first in inbox:
                    if await self._apply_burst(first, inbox):
                        break
                while True:  # what tasks posted before they saw `_stopping`
                    try:
                        self._stopped_reply(inbox.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
        except Exception:
            log.critical("internal error in the shared hub: stopping the server", exc_info=True)
            raise
        finally:
            self._stopped.set()

    async def _apply_burst(
        self, first: SharedHubMessage, inbox: trio.MemoryReceiveChannel[SharedHubMessage]
    ) -> bool:
        """Apply `first` and what else is queued, up to a burst of deliveries,
        then flush; True once `_Stop` has been applied. As in hub.py, what the
        feeds let through is delivered before the next message is applied, a
        burst at a time."""
        ts = protocol.format_timestamp(time.time())
        message = first
        budget = self._burst
        for applied in range(self._burst):
            if applied:
                try:
                    message = inbox.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            if isinstance(message, _Stop):
                self._stop(ts)
                self._flush()
                return True
            self._apply(message, ts)
            while self._queue:
                if budget <= 0:
                    self._flush()
                    await trio.sleep(0)  # noqa: ASYNC115 (trio.lowlevel: debug module only)
                    budget = self._burst
                room, event = self._queue.popleft()
                self._deliver(room, event)
                budget -= 1
            if budget <= 0:
                break
        self._flush()
        return False

    def _flush(self) -> None:
        for peer in self._touched:
            peer.flush_nowait()
        self._touched.clear()

    def _apply(self, message: SharedHubMessage, ts: str) -> None:
        if isinstance(message, _Heard):
            self._heard(message)
        elif isinstance(message, Broadcast):
            self._broadcast(message, ts)
        elif isinstance(message, Registration):
            self._register(message, ts)
        elif isinstance(message, Unregistration):
            self._unregister(message.peer, message.reason, ts)
        elif isinstance(message, _JoinReplied):
            self._join_replied(message)
        elif isinstance(message, _Subscribed):
            self._subscribed(message)
        elif isinstance(message, _Filled):
            if not message.room.forgotten:
                self._filled(message.room, message.events)
        elif isinstance(message, _CaughtUp):
            self._caught_up(message)
        elif isinstance(message, _SaysFailed):
            for say in message.says:
                self._refuse_say(say.member, say.ref, ts)
        elif isinstance(message, _SaysRefused):
            for say in message.says:
                self._refuse_say(say.member, say.ref, ts)
                self._lose(say.member, ts)
        elif isinstance(message, _Recover):
            self._recover()
        elif isinstance(message, _Checked):
            self._checked(message, ts)
        else:
            assert isinstance(message, _Overflowed)
            for name in message.rooms:
                room = self._rooms.get(name)
                if room is not None:
                    self._resync(room)

    # -- joining -------------------------------------------------------------

    def _register(self, registration: Registration, ts: str) -> None:
        peer, hello = registration.peer, registration.hello
        if peer in self._members:
            registration.outcome = ProtocolError(
                ErrorCode.ALREADY_JOINED, "this connection already joined"
            )
            registration.done.set()
            return
        if len(self._calls) >= MAX_QUEUED_CALLS:
            registration.outcome = Unavailable("the backplane is not keeping up")
            registration.done.set()
            return
        room = self._rooms.get(hello.room)
        if room is None:
            room = self._rooms[hello.room] = _Room(hello.room)
            self._subscribe(room)
        token = keys.member_token(self._backplane.node, next(self._tokens))
        member = _Member(peer, hello, room, token, ts, registration)
        self._members[peer] = member
        if room.subscribed:
            room.pending.add(member)
            self._call(_JoinCall(member))
        else:
            room.waiting.append(member)

    def _subscribed(self, message: _Subscribed) -> None:
        room = message.room
        if room.forgotten:
            return
        waiting, room.waiting = room.waiting, []
        if message.error is not None:
            log.warning("cannot subscribe to room %r: %s", room.name, message.error)
            for member in waiting:
                self._refuse(member, Unavailable(str(message.error)))
            self._forget_if_idle(room)
            return
        room.subscribed = True
        for member in waiting:
            room.pending.add(member)
            self._call(_JoinCall(member))

    def _refuse(self, member: _Member, error: Exception) -> None:
        """End a hello that did not make it (the session learns from `error`)."""
        if self._members.get(member.peer) is member:
            del self._members[member.peer]
        member.answer(error)

    def _join_replied(self, message: _JoinReplied) -> None:
        member, outcome = message.member, message.outcome
        room = member.room
        if isinstance(outcome, Admitted) and room.feed is not None and room.epoch != outcome.epoch:
            # The backplane restarted the room's numbering since the feed began
            # (flushed, or back empty): those here follow the old one.
            self._restart(room, member.ts)
        room.pending.discard(member)
        if member.left is not None:  # its session ended meanwhile
            if isinstance(outcome, Admitted):
                self._call(self._leave_call(room.name, member, member.left, member.ts))
        elif isinstance(outcome, NameTaken):
            self._refuse(member, name_taken(member.name, room.name, outcome.holder))
        elif isinstance(outcome, BackplaneError):
            log.warning("a join in room %r failed: %s", room.name, outcome)
            # The script may have run all the same: take the member out again.
            self._call(self._leave_call(room.name, member, LeaveReason.ERROR, member.ts))
            self._refuse(member, Unavailable(str(outcome)))
        else:
            member.join_id = outcome.join_id
            member.welcome = [
                protocol.welcome_event(
                    room.name,
                    member.name,
                    outcome.members,
                    outcome.join_id,
                    epoch=outcome.epoch,
                    recovered=outcome.recovered,
                ),
                *(event.line for event in outcome.replay),
            ]
            if room.feed is None:
                # The first reply: the feed starts at this join, and what was
                # heard before it goes through the feed now.
                room.feed = RoomFeed(outcome.join_id)
                room.epoch = outcome.epoch
                room.window.extend(outcome.replay)
                self._admit(member, outcome.join_id)
                early, room.early = room.early, []
                for event in early:
                    self._feed_step(room, room.feed.receive(event))
                if room.resync:
                    self._resync(room)
                return
            self._admit(member, outcome.join_id)
            return
        self._forget_if_idle(room)

    def _admit(self, member: _Member, after_id: int) -> None:
        """Make an admitted member live once it has every event its room has
        delivered here after `after_id`; read the rest from the log if the
        room's window no longer holds them."""
        room = member.room
        assert room.feed is not None
        events = catch_up(room.window, after_id, room.feed.last_id)
        if events is None:
            room.pending.add(member)
            self._tasks.start_soon(self._catch_up, member, after_id, room.feed.last_id)
            return
        member.welcome.extend(event.line for event in events)
        peer = member.peer
        peer.deliver_welcome(member.welcome)
        self._touched.add(peer)
        room.members[peer] = member.join_id
        self._active += 1
        member.answer(
            Joined(
                room=room.name,
                name=member.name,
                welcome=member.welcome,
                announce=Delivery(b"", ()),  # the others hear the join from the backplane
                join_id=member.join_id,
            )
        )

    def _caught_up(self, message: _CaughtUp) -> None:
        member = message.member
        room = member.room
        room.pending.discard(member)
        if member.left is not None:  # its leave is already queued
            self._forget_if_idle(room)
            return
        # Ids the log no longer holds are skipped, as the feed skips them.
        member.welcome.extend(event.line for event in message.events)
        self._admit(member, message.up_to_id)

    # -- leaving -------------------------------------------------------------

    def _unregister(self, peer: Peer, reason: LeaveReason, ts: str) -> None:
        member = self._members.pop(peer, None)
        if member is None:
            return
        room = member.room
        if peer in room.members:
            del room.members[peer]
            self._active -= 1
            self._call(self._leave_call(room.name, member, reason, ts))
        elif member in room.waiting:
            room.waiting.remove(member)
        else:  # its join or its catch-up is in flight
            member.left = reason
            if member.join_id:  # admitted, catching up: it leaves now
                self._call(self._leave_call(room.name, member, reason, ts))
        self._forget_if_idle(room)

    def _leave_call(self, room: str, member: _Member, reason: LeaveReason, ts: str) -> _LeaveCall:
        line = protocol.leave_event(0, room, member.name, ts, reason)
        return _LeaveCall(room, member.token, member.name, line)

    def _forget_if_idle(self, room: _Room) -> None:
        """Unsubscribe a room with no local member left or joining."""
        if not room.idle or room.forgotten:
            return
        room.forgotten = True
        if self._rooms.get(room.name) is room:
            del self._rooms[room.name]
        self._unsubscribe(room)

    def _drop_slow(self, peer: Peer, ts: str) -> None:
        self._slow_drops += 1
        self._unregister(peer, LeaveReason.SLOW, ts)
        peer.drop(CloseCode.TRY_AGAIN_LATER, LeaveReason.SLOW)

    def _lose(self, member: _Member, ts: str) -> None:
        """Close an admitted member the backplane no longer holds (reaped while
        this process was cut off, or lost with the server's data) with 1012:
        its client joins again, with `since` and `epoch`, and so is announced
        to everyone again and learns whether the room's numbering restarted."""
        peer = member.peer
        if self._members.get(peer) is not member or peer not in member.room.members:
            return
        self._lost_members += 1
        self._unregister(peer, LeaveReason.SHUTDOWN, ts)
        peer.drop(CloseCode.SERVICE_RESTART, LeaveReason.SHUTDOWN)

    def _restart(self, room: _Room, ts: str) -> None:
        """`room`'s numbering restarted on the backplane: close its members
        here (1012), and let the next join's reply start the feed anew."""
        self._restarted_rooms += 1
        log.warning(
            "room %r: its history restarted on the backplane; closing its %d members "
            "here (1012) so that they join again",
            room.name,
            len(room.members),
        )
        for peer in list(room.members):
            self._lose(self._members[peer], ts)
        room.feed = None
        room.epoch = None
        room.window.clear()
        room.early = []
        room.resync = False

    def _recover(self) -> None:
        """The backplane answers again, or lost this node's lease: subscribe
        every room again, then check them (`_checked`)."""
        self._recoveries += 1
        for room in self._rooms.values():
            if room.subscribed:
                self._resubscriptions += 1
                self._subscribe(room)
        self._subscriptions.append(None)
        self._subscriptions_wakeup.set()

    def _check_request(self) -> tuple[dict[str, list[str]], dict[str, int]]:
        """The member tokens of every room with a feed, for `room_states`,
        and the last id each has delivered here."""
        rooms = [room for room in self._rooms.values() if room.feed is not None]
        tokens = {room.name: [self._members[p].token for p in room.members] for room in rooms}
        return tokens, {room.name: room.feed.last_id for room in rooms if room.feed is not None}

    def _checked(self, message: _Checked, ts: str) -> None:
        """Close what the backplane lost, and read what the subscription missed."""
        for name, state in message.states.items():
            room = self._rooms.get(name)
            if room is None or room.feed is None:
                continue
            # A room whose last id is below one delivered before the check was
            # asked for lost its newest events (a server restored from an older
            # snapshot): it is numbering ids that its members have seen.
            if state.epoch != room.epoch or state.last_id < message.delivered[name]:
                self._restart(room, ts)
                continue
            lost = [
                self._members[peer]
                for peer in room.members
                if self._members[peer].token not in state.present
            ]
            if lost:
                log.warning(
                    "room %r: the backplane lost %d members of this process; closing "
                    "them (1012) so that they join again",
                    name,
                    len(lost),
                )
            for member in lost:
                self._lose(member, ts)
            if not room.forgotten:
                self._resync(room)

    def _stop(self, ts: str) -> None:
        """The hub is closing: every local member leaves (reason `shutdown`)."""
        self._stopping = True
        for member in list(self._members.values()):
            admitted = member.peer in member.room.members
            self._unregister(member.peer, LeaveReason.SHUTDOWN, ts)
            if not admitted:
                self._refuse(member, trio.ClosedResourceError("the hub has shut down"))

    def _stopped_reply(self, message: SharedHubMessage) -> None:
        """A join answered just as the hub stopped: take the member out again."""
        if isinstance(message, _JoinReplied) and isinstance(message.outcome, Admitted):
            member = message.member
            self._call(self._leave_call(member.room.name, member, LeaveReason.SHUTDOWN, member.ts))

    # -- saying --------------------------------------------------------------

    def _broadcast(self, message: Broadcast, ts: str) -> None:
        member = self._members.get(message.peer)
        if member is None or message.peer not in member.room.members:
            return  # not a member (or not yet): nothing to say
        room = member.room
        command = message.command
        if isinstance(command, Say):
            if len(self._calls) >= MAX_QUEUED_CALLS:
                self._refuse_say(member, command.ref, ts)
                return
            line = protocol.message_event(
                0, room.name, member.name, command.text, ts, ref=command.ref
            )
            self._call(_SayCall(member, command.ref, Post(room.name, member.token, line)))
            return
        # A typing notice reaches every process, this one included, through
        # the room's channel, with the says queued around it.
        self._call(_TypingCall(room.name, protocol.typing_event(room.name, member.name)))

    def _refuse_say(self, member: _Member, ref: str | None, ts: str) -> None:
        """Tell a member its `say` was neither stored nor delivered (it may
        send it again); nothing if it has left meanwhile."""
        self._refused_posts += 1
        peer = member.peer
        if self._members.get(peer) is not member or peer not in member.room.members:
            return
        line = protocol.error_event(ErrorCode.UNAVAILABLE, UNAVAILABLE_MESSAGE, ref)
        self._touched.add(peer)
        if not peer.deliver_nowait(line):
            self._drop_slow(peer, ts)

    # -- hearing -------------------------------------------------------------

    def _heard(self, message: _Heard) -> None:
        for name, line in message.events:
            room = self._rooms.get(name)
            if room is None:
                continue  # no longer ours: an event still queued at unsubscription
            event_id = event_id_of(line)
            if event_id is None:
                self._typing(room, line)
                continue
            event = StoredEvent(event_id, line)
            if room.feed is None:
                room.early.append(event)
            else:
                self._feed_step(room, room.feed.receive(event))

    def _typing(self, room: _Room, line: bytes) -> None:
        """A typing notice, to the room's members here but its sender: not
        numbered, so not ordered; dropped for a member whose queue is full."""
        try:
            sender = protocol.typing_sender(line)
        except ValueError:
            log.warning("room %r: ignoring a published line with no id", room.name)
            return
        for peer in room.members:
            if self._members[peer].name != sender and peer.deliver_nowait(line):
                self._touched.add(peer)

    def _feed_step(self, room: _Room, step: FeedStep) -> None:
        self._queue.extend((room, event) for event in step.events)
        if step.fill is not None:
            self._tasks.start_soon(self._fill, room, step.fill)
        elif room.resync and room.feed is not None and not room.feed.filling:
            self._resync(room)

    def _filled(self, room: _Room, events: list[StoredEvent]) -> None:
        assert room.feed is not None
        self._feed_step(room, room.feed.filled(events))

    def _resync(self, room: _Room) -> None:
        """The subscription dropped some of `room`'s events: read what follows."""
        feed = room.feed
        if feed is None or feed.filling:
            room.resync = True  # asked for once the feed can
            return
        room.resync = False
        self._feed_step(room, feed.resync())

    def _deliver(self, room: _Room, event: StoredEvent) -> None:
        """One event to the local members who joined before it; drop the full."""
        room.window.append(event)
        recipients = recipients_of(room.members, event.id)
        self._touched.update(recipients)
        slow = [peer for peer in recipients if not peer.deliver_nowait(event.line)]
        self._deliveries += len(recipients) - len(slow)
        if slow:
            ts = protocol.format_timestamp(time.time())
            for peer in slow:
                self._drop_slow(peer, ts)

    # -- hand-offs to the workers --------------------------------------------

    def _call(self, call: _Call) -> None:
        self._calls.append(call)
        self._calls_wakeup.set()

    def _subscribe(self, room: _Room) -> None:
        self._subscriptions.append((True, room))
        self._subscriptions_wakeup.set()

    def _unsubscribe(self, room: _Room) -> None:
        self._subscriptions.append((False, room))
        self._subscriptions_wakeup.set()

    # -- tasks in the hub's nursery ------------------------------------------

    async def _post(self, message: SharedHubMessage) -> None:
        """Hand a task's result to the hub task; dropped once it has stopped."""
        with contextlib.suppress(trio.BrokenResourceError):
            await self._replies.send(message)

    async def serve_scripts(self) -> None:
        """Run the queued script calls in order, a round trip at a time; the
        posts queued together go out as one `say_many`. Ends once the hub
        task has stopped and the queue is empty."""
        try:
            while True:
                if not self._calls:
                    if self._stopped.is_set():
                        return
                    self._calls_wakeup = trio.Event()
                    await self._calls_wakeup.wait()  # set by `_call`, and by `_finish`
                    continue
                calls = list(self._calls)
                self._calls.clear()
                says: list[_SayCall] = []
                notices: list[_TypingCall] = []
                for call in calls:
                    if isinstance(call, _SayCall):
                        says.append(call)
                        continue
                    if isinstance(call, _TypingCall):
                        notices.append(call)
                        continue
                    await self._say_many(says, notices)
                    says, notices = [], []
                    if isinstance(call, _JoinCall):
                        await self._run_join(call.member)
                    else:
                        await self._run_leave(call)
                await self._say_many(says, notices)
        finally:
            self._calls_done.set()

    async def _say_many(self, says: list[_SayCall], notices: list[_TypingCall]) -> None:
        """Send `says` and typing `notices` as one `say_many`; if it fails,
        the hub task tells the senders of `says` (`_SaysFailed`)."""
        if not says and not notices:
            return
        started = trio.current_time()
        try:
            ids = await self._backplane.say_many(
                [say.post for say in says], [(call.room, call.line) for call in notices]
            )
        except BackplaneError as error:
            self._backplane_failed(error)
            log.warning("%d messages were not sent: %s", len(says), error)
            if not self._stopping:  # else the hub task is gone, and so are the senders
                await self._post(_SaysFailed(says))
            return
        self._say_round_trips += 1
        self._say_seconds += trio.current_time() - started
        self._backplane_ok()
        refused = [say for say, event_id in zip(says, ids, strict=True) if event_id is None]
        self._events += len(says) - len(refused)
        if refused:
            self._lost_posts += len(refused)
            log.warning(
                "%d messages refused: the backplane no longer holds their senders", len(refused)
            )
            if not self._stopping:
                await self._post(_SaysRefused(refused))

    async def _run_join(self, member: _Member) -> None:
        if member.left is not None and self._stopping:
            return  # never sent; nobody waits for it
        hello = member.hello
        room = member.room.name
        outcome: Admitted | NameTaken | BackplaneError
        try:
            outcome = await self._backplane.join(
                room,
                member.token,
                hello.name,
                protocol.join_event(0, room, hello.name, member.ts),
                since=hello.since,
                client_epoch=hello.epoch,
                replay_limit=self._replay_limit,
            )
        except BackplaneError as error:
            self._backplane_failed(error)
            outcome = error
        else:
            self._backplane_ok()
        if isinstance(outcome, Admitted):
            self._events += 1
        if self._stopping:  # the hub task is gone: undo the join here
            if not isinstance(outcome, NameTaken):
                await self._run_leave(
                    self._leave_call(room, member, LeaveReason.SHUTDOWN, member.ts)
                )
            return
        await self._post(_JoinReplied(member, outcome))

    async def _run_leave(self, call: _LeaveCall) -> None:
        try:
            event_id = await self._backplane.leave(call.room, call.token, call.name, call.line)
        except BackplaneError as error:
            self._backplane_failed(error)
            # The member stays on the backplane until this node's lease lapses
            # and another process reaps it.
            log.warning("a leave from room %r failed: %s", call.room, error)
            return
        self._backplane_ok()
        self._events += event_id is not None

    async def serve_subscriptions(self) -> None:
        """Subscribe and unsubscribe rooms in the order the hub asked."""
        while True:
            while not self._subscriptions:
                self._subscriptions_wakeup = trio.Event()
                await self._subscriptions_wakeup.wait()
            change = self._subscriptions.popleft()
            if change is None:
                await self._check_rooms()
                continue
            subscribe, room = change
            try:
                if subscribe:
                    await self._backplane.subscribe(room.name)
                else:
                    await self._backplane.unsubscribe(room.name)
            except BackplaneError as error:
                self._backplane_failed(error)
                if not subscribe:
                    log.warning("cannot unsubscribe from room %r: %s", room.name, error)
                    continue
                await self._post(_Subscribed(room, error))
            else:
                self._backplane_ok()
                if subscribe:
                    await self._post(_Subscribed(room, None))

    async def _check_rooms(self) -> None:
        """Read every room's state (`_Checked`); retried until it works."""
        while True:
            tokens, delivered = self._check_request()
            try:
                states = await self._backplane.room_states(tokens)
            except BackplaneError as error:
                self._backplane_failed(error)
                await trio.sleep(READ_RETRY)
                continue
            self._backplane_ok()
            await self._post(_Checked(states, delivered))
            return

    async def serve_recovery(self) -> None:
        """Hand the hub `_Recover` whenever a task found the backplane back, or
        the node's lease lost."""
        while True:
            await self._recovery_wanted.wait()
            self._recovery_wanted = trio.Event()
            await self._post(_Recover())

    async def serve_lease(
        self,
        *,
        period: float,
        ttl: float,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Keep this node's lease: renew it now (raising `BackplaneError` if
        that fails), report started, then every `period` seconds. A lease
        found gone (it lapsed while the server was out of reach, or the
        server lost its data) means members may have been reaped or lost:
        recover."""
        await self._backplane.renew_lease(ttl)
        task_status.started()
        while True:
            await trio.sleep(period)
            try:
                kept = await self._backplane.renew_lease(ttl)
            except BackplaneError as error:
                self._backplane_failed(error)
                continue
            self._backplane_ok()
            if not kept:
                log.warning("this process's lease on the backplane was lost: checking its rooms")
                self._recovery_wanted.set()

    async def serve_heard(self, send: trio.MemorySendChannel[SharedHubMessage]) -> None:
        """Pass the subscription's events to the hub task, a burst per message."""
        events = self._backplane.events
        with contextlib.suppress(trio.BrokenResourceError):  # the hub task has stopped
            await self._pass_heard(events, send)

    async def _pass_heard(
        self,
        events: trio.MemoryReceiveChannel[tuple[str, bytes]],
        send: trio.MemorySendChannel[SharedHubMessage],
    ) -> None:
        async with send:
            async for first in events:
                batch = [first]
                while len(batch) < self._burst:
                    try:
                        batch.append(events.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                await send.send(_Heard(batch))

    async def serve_resync(self) -> None:
        """Every `RESYNC_PERIOD`, hand the hub the rooms whose events the
        subscription dropped (a full channel)."""
        while True:
            await trio.sleep(RESYNC_PERIOD)
            rooms = self._backplane.take_overflowed_rooms()
            if rooms:
                await self._post(_Overflowed(rooms))

    async def serve_reaper(self, period: float) -> None:
        """Every `period`, make the members of dead processes that share a room
        with this one leave (reason `timeout`); see the module docstring.

        It only reads the names of this process's rooms (members there or on
        their way in), with no await in between: the hub task still owns
        them. A failed round trip is retried at the next period, and logged
        at WARNING at most once every `REAP_WARN_EVERY` seconds.
        """
        warned_at = -math.inf
        while True:
            await trio.sleep(period)
            rooms = sorted(self._rooms)
            if not rooms:
                continue
            try:
                for node in sorted(await self._backplane.dead_nodes(rooms)):
                    ts = protocol.format_timestamp(time.time())
                    reaped = await self._backplane.reap(node, ts)
                    if reaped:
                        log.info("node %r is gone: %d members left", node, len(reaped))
            except BackplaneError as error:
                self._backplane_failed(error)
                now = trio.current_time()
                if now - warned_at >= REAP_WARN_EVERY:
                    warned_at = now
                    log.warning("cannot reap the members of dead processes: %s", error)
                else:
                    log.debug("cannot reap the members of dead processes: %s", error)
            else:
                self._backplane_ok()

    async def _fill(self, room: _Room, fill: Fill) -> None:
        """Read a feed's gap from the log; retried until it works or the room
        is no longer this process's."""
        while not room.forgotten:
            try:
                up_to = fill.up_to_id
                if up_to is None:
                    up_to = await self._backplane.last_id(room.name)
                events = await self._backplane.read_range(room.name, fill.after_id, up_to)
                self._gap_fills += 1
            except BackplaneError as error:
                self._backplane_failed(error)
                log.warning("cannot read room %r's log: %s", room.name, error)
                await trio.sleep(READ_RETRY)
                continue
            self._backplane_ok()
            await self._post(_Filled(room, events))
            return

    async def _catch_up(self, member: _Member, after_id: int, up_to_id: int) -> None:
        """Read what a late-answered join missed, beyond the room's window."""
        while True:
            try:
                events = await self._backplane.read_range(member.room.name, after_id, up_to_id)
            except BackplaneError as error:
                self._backplane_failed(error)
                log.warning("cannot read room %r's log: %s", member.room.name, error)
                await trio.sleep(READ_RETRY)
                continue
            self._backplane_ok()
            await self._post(_CaughtUp(member, up_to_id, events))
            return

    # -- closing ---------------------------------------------------------------

    async def _finish(self) -> None:
        """Stop the hub task, then wait for the last script calls (the leaves)."""
        with contextlib.suppress(trio.BrokenResourceError):  # the hub task died
            await self._replies.send(_Stop())
        await self._stopped.wait()
        self._calls_wakeup.set()
        await self._calls_done.wait()


@asynccontextmanager
async def open_shared_hub(
    backplane: Backplane,
    *,
    replay_limit: int,
    send_queue_size: int,
    lease_period: float = LEASE_PERIOD,
    lease_ttl: float = LEASE_TTL,
    reap_period: float = REAP_PERIOD,
) -> AsyncIterator[SharedHub]:
    """Run a shared hub on `backplane` for the duration of the `async with` block.

    The member tokens carry `backplane.node`, and the room logs keep about
    `backplane.history_limit` events (both set by `open_backplane`). The hub
    reads the backplane's `events` channel: nothing else may.

    `send_queue_size` is the clients' outbox limit: at most a quarter of it
    is delivered in one go before writers may run.

    The hub owns the node's lease (`Backplane.serve_lease`, renewed every
    `lease_period` seconds to last `lease_ttl`): do not run it elsewhere. It
    is held before the block starts. Every `reap_period` seconds the hub
    reaps the members of processes whose lease has lapsed (module docstring).
    Every process sharing the server should use the same `lease_ttl`.

    On exit the session channels are closed, every member still here leaves
    through the backplane (bounded by `STOP_WAIT`), and the hub's tasks end.
    If the block is left because an enclosing scope was cancelled, the hub
    ends at once, as a killed process would: no leaves are sent, the lease
    stops, and the other processes reap the members once it has lapsed.

    Raises:
        ValueError: `lease_ttl` is not longer than `lease_period`.
        BackplaneError: the first lease renewal failed.
    """
    if not lease_ttl > lease_period > 0 or reap_period <= 0:
        raise ValueError("need 0 < lease_period < lease_ttl and 0 < reap_period")
    send, receive = trio.open_memory_channel[SharedHubMessage](INBOX_SIZE)
    async with trio.open_nursery() as nursery:
        hub = SharedHub(
            backplane,
            send,
            nursery,
            replay_limit=replay_limit,
            burst=max(send_queue_size // 4, 1),
        )
        await nursery.start(functools.partial(hub.serve_lease, period=lease_period, ttl=lease_ttl))
        nursery.start_soon(hub.serve_recovery)
        nursery.start_soon(hub.serve, receive)
        nursery.start_soon(hub.serve_scripts)
        nursery.start_soon(hub.serve_subscriptions)
        nursery.start_soon(hub.serve_heard, send.clone())
        nursery.start_soon(hub.serve_resync)
        nursery.start_soon(hub.serve_reaper, reap_period)
        send.close()
        try:
            yield hub
        finally:
            hub._close_channels()
            with trio.move_on_after(STOP_WAIT):
                await hub._finish()
            nursery.cancel_scope.cancel()
