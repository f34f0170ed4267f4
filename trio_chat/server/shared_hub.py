"""The shared hub: the hub for rooms that several processes share through a backplane.

It offers sessions what `hub.Hub` offers (`join`, `leave`, `say`,
`statistics`), but the room's order is made elsewhere: the backplane's
scripts number, store and publish every event (backplane/scripts.py), and
every process, the sender's included, delivers a room's events as it hears
them on the room's subscription.

Theory of operation
-------------------
One hub task owns all the state (shared_state.py) and applies one FIFO
inbox, as in hub.py. It never awaits the backplane itself: it hands script
calls and subscription changes to its `BackplaneLink` (backplane_link.py),
whose tasks run the round trips in the hub's own nursery and post their
answers back into the inbox, so the order in which the hub applies its
inbox stays the one order of this process's deliveries.

* Script calls (`JOIN`, `SAY_MANY`, `LEAVE`) run one at a time in the order
  the hub queued them, a burst of says as one call. So a member's messages
  are stored in the order it sent them, after its join and before its leave.
* Subscriptions change in order too: a room left empty and joined again is
  unsubscribed before it is subscribed anew.
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
  the hub task as `SaysFailed`, which answers each sender still here with
  an `error` event `unavailable` (its post's `ref`). Until a call succeeds
  again (the lease renewal probes every half second meanwhile), `trouble()`
  says why, and new says and hellos are refused at once: `unavailable`, and
  `Unavailable` (close 1013).

Recovery
--------
When a call succeeds after failures, or the lease renewal finds the node's
lease gone (it lapsed while the server was out of reach, or the server lost
its data), the hub recovers (`Recover`): it subscribes every room again,
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
`unavailable` and its sender closed with 1012 the same way (`SaysRefused`).
So a member is never silently kept that the other processes think gone.

Typing notices are not numbered or stored: they go out with the says (one
PUBLISH each in the same round trip) and come back on the room's channel to
every process, which hands them to its members of the room but the sender.

Presence
--------
With a grace period (`grace` > 0), every member gets a resume secret, kept
on the backplane with its record. A member whose connection dropped is held
there (`HOLD`): it stays a member, so its name stays taken everywhere, and
this process makes it leave, with the reason it dropped for, when its grace
ends (`serve_expiry` posts `GraceOver`). A hello carrying the secret takes
the place back in whatever process it reaches, under that process's token
and with no event; the `moved` notice the script publishes tells the
process that held the old token to close the connection it replaces (1000),
if it still had one, with no leave. Its grace timer then finds the old
token gone, and the `LEAVE` does nothing. At a graceful exit every member
here is held (reason `shutdown`) and the node's lease is set to last the
grace period: members who come back resume anywhere; the others are reaped
by another process once the lease has lapsed, with the reason they were
held for.

A `say` whose `ref` its member already used (module docstring of
backplane/scripts.py, "exactly once") is not stored again: the script
answers with the original event, which goes back to the sender alone
(`SaysResent`), whatever process the original went through.

Leases and the reaper
---------------------
`open_shared_hub` owns the node's lease: it runs `BackplaneLink.serve_lease` in
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
import heapq
import itertools
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import trio

from ..backplane import keys
from ..backplane.errors import BackplaneError
from ..backplane.redis import LEASE_PERIOD, LEASE_TTL, Backplane
from ..backplane.scripts import Admitted, NameTaken, Post, event_id_of, moved_token
from ..core import protocol
from ..core.feed import FeedStep, RoomFeed, catch_up, recipients_of
from ..core.histogram import LATENCY_BUCKETS, Histogram
from ..core.history import StoredEvent
from ..core.protocol import CloseCode, ErrorCode, HistoryRequest, LeaveReason, ProtocolError, Say
from ..core.rooms import Delivery, Joined, name_taken
from .backplane_link import BackplaneLink
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
from .shared_state import (
    CaughtUp,
    Checked,
    Filled,
    GraceOver,
    Heard,
    HoldCall,
    JoinCall,
    JoinReplied,
    Member,
    Overflowed,
    PageRead,
    Recover,
    Room,
    SayCall,
    SaysFailed,
    SaysRefused,
    SaysResent,
    SharedHubMessage,
    Stop,
    Subscribed,
    TypingCall,
    leave_call,
)

log = logging.getLogger(__name__)

INBOX_SIZE: Final = 1024
MAX_QUEUED_CALLS: Final = 10_000  # script calls waiting; over it, posts and hellos are refused
STOP_WAIT: Final = 5.0  # seconds the last leaves may take to reach the backplane at exit
REAP_PERIOD: Final = LEASE_PERIOD  # seconds between looks for dead processes' members
UNAVAILABLE_MESSAGE: Final = "not sent: the backplane is unavailable; send it again later"
UNREADABLE_MESSAGE: Final = "history cannot be read now: the backplane is unavailable"


class SharedHub(HubFront):
    """Delivers shared rooms' events to local members; see the module docstring.

    Sessions call it as they call `Hub` (`HubFront`). A hello it cannot admit
    for want of the backplane raises `Unavailable` (close 1013); a message
    the backplane cannot take reaches nobody, and its sender gets an `error`
    event `unavailable` with the message's `ref` (it may send it again). A
    message the backplane refuses because its sender is no longer a member
    there (reaped while this process was cut off) reaches nobody either, and
    its sender is then closed with 1012 (module docstring, "Recovery").
    `trouble` says why new clients should go elsewhere while the backplane
    is failing. Create with `open_shared_hub`.
    """

    def __init__(
        self,
        backplane: Backplane,
        inbox: trio.MemorySendChannel[SharedHubMessage],
        tasks: trio.Nursery,
        *,
        replay_limit: int,
        burst: int,
        grace: float = 0.0,
    ) -> None:
        self._backplane = backplane
        self._tasks = tasks
        self._burst = burst
        self.grace = grace
        super().__init__(inbox)
        self._replies = inbox.clone()  # for `_finish`: the Stop, behind what is queued
        self._grace_over = inbox.clone()  # the expiry task's wake-up calls
        # (until, order, member, reason) of the members held here, soonest first.
        self._held: list[tuple[float, int, Member, LeaveReason]] = []
        self._held_order = itertools.count()
        self._holding = trio.Event()  # set when a member is held: the expiry task wakes
        self._expired = trio.Event()  # set when a GraceOver has been applied
        self._link = BackplaneLink(
            backplane,
            inbox.clone(),
            replay_limit=replay_limit,
            burst=burst,
            room_names=self._rooms_view,
            check_request=self._check_request,
        )
        self._rooms: dict[str, Room] = {}
        self._members: dict[Peer, Member] = {}  # every member, admitted or on its way
        self._active = 0  # members admitted and not gone
        self._tokens = itertools.count(1)
        self._touched: set[Peer] = set()  # peers given events in this burst
        self._queue: deque[tuple[Room, StoredEvent]] = deque()  # let through, not delivered
        self._deliveries = 0
        self._slow_drops = 0
        self._refused_posts = 0  # answered `unavailable`: the sender may send them again
        self._recoveries = 0  # checks of every room after a failure or a lost lease
        self._resubscriptions = 0
        self._restarted_rooms = 0  # rooms whose numbering restarted under local members
        self._lost_members = 0  # closed with 1012: the backplane no longer held them
        self._resent = 0  # says answered with the event their ref made before
        self._joins = 0  # local members admitted with a `join` event
        self._resumes = 0  # local members admitted by taking a held place back
        self._latency = Histogram(LATENCY_BUCKETS)
        self._burst_started = 0.0  # perf_counter() when the current burst began

    # -- statistics ------------------------------------------------------------

    def statistics(self) -> HubStatistics:
        return HubStatistics(
            rooms=len(self._rooms),
            members=self._active,
            events=self._link.events,
            deliveries=self._deliveries,
            slow_drops=self._slow_drops,
            inbox=self.broadcast.statistics().current_buffer_used,
            # Held here until their grace ends; one that resumed meanwhile
            # (through another process, unheard here) still counts till then.
            held=len(self._held),
            joins=self._joins,
            resumes=self._resumes,
            leaves=dict(self._link.leaves),
        )

    def delivery_latency(self) -> Histogram:
        return self._latency

    def backplane_counters(self) -> BackplaneCounters:
        backplane = self._backplane.statistics()
        return BackplaneCounters(
            reachable=self._link.reachable,
            publish_round_trips=self._link.say_round_trips,
            publish_seconds=self._link.say_seconds,
            gap_fills=self._link.gap_fills,
            resubscriptions=self._resubscriptions,
            recoveries=self._recoveries,
            refused_posts=self._refused_posts,
            lost_posts=self._link.lost_posts,
            lost_members=self._lost_members,
            restarted_rooms=self._restarted_rooms,
            overflowed=backplane.overflowed,
            lease_failures=backplane.lease_failures,
            leases_lost=backplane.leases_lost,
        )

    def rooms(self) -> list[tuple[str, int]]:
        """This process's rooms and its own members there (the other
        processes' members are not counted)."""
        return [(room.name, len(room.members)) for room in self._rooms.values() if room.members]

    def trouble(self) -> str | None:
        """Why this hub cannot serve new clients now: the last call to the
        backplane (of any task) failed, and none has succeeded since."""
        return self._link.trouble()

    # -- the hub task --------------------------------------------------------

    async def serve(self, inbox: trio.MemoryReceiveChannel[SharedHubMessage]) -> None:
        """Apply the inbox until `Stop`; then ask every local member to leave.

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
            self._link.stopped.set()

    async def _apply_burst(
        self, first: SharedHubMessage, inbox: trio.MemoryReceiveChannel[SharedHubMessage]
    ) -> bool:
        """Apply `first` and what else is queued, up to a burst of deliveries,
        then flush; True once `Stop` has been applied. As in hub.py, what the
        feeds let through is delivered before the next message is applied, a
        burst at a time."""
        ts = protocol.format_timestamp(time.time())
        self._burst_started = time.perf_counter()
        message = first
        budget = self._burst
        for applied in range(self._burst):
            if applied:
                try:
                    message = inbox.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            if isinstance(message, Stop):
                self._stop(ts)
                self._flush()
                return True
            self._apply(message, ts)
            while self._queue:
                if budget <= 0:
                    self._flush()
                    await trio.sleep(0)  # noqa: ASYNC115 (trio.lowlevel: debug module only)
                    self._burst_started = time.perf_counter()
                    budget = self._burst
                room, event = self._queue.popleft()
                self._deliver(room, event)
                budget -= 1
            if budget <= 0:
                break
        self._flush()
        return False

    def _flush(self) -> None:
        """One flush per recipient of this burst; the delivery latency is
        measured once per burst, as in hub.py's `Hub._flush` (here from the
        burst's start, when the backplane's numbered events are applied)."""
        touched = self._touched
        if not touched:
            return
        for peer in touched:
            peer.flush_nowait()
        touched.clear()
        self._latency.observe(time.perf_counter() - self._burst_started)

    def _apply(self, message: SharedHubMessage, ts: str) -> None:
        if isinstance(message, Heard):
            self._heard(message)
        elif isinstance(message, Broadcast):
            self._broadcast(message, ts)
        elif isinstance(message, Registration):
            self._register(message, ts)
        elif isinstance(message, Unregistration):
            self._unregister(message.peer, message.reason, ts, hold=message.hold)
        elif isinstance(message, JoinReplied):
            self._join_replied(message)
        elif isinstance(message, Subscribed):
            self._subscribed(message)
        elif isinstance(message, Filled):
            if not message.room.forgotten:
                self._filled(message.room, message.events)
        elif isinstance(message, CaughtUp):
            self._caught_up(message)
        elif isinstance(message, SaysFailed):
            for say in message.says:
                self._refuse_say(say.member, say.ref, ts)
        elif isinstance(message, SaysRefused):
            for say in message.says:
                self._refuse_say(say.member, say.ref, ts)
                self._lose(say.member, ts)
        elif isinstance(message, SaysResent):
            for say, event in message.says:
                self._resend(say.member, event.line, ts)
        elif isinstance(message, GraceOver):
            self._expire(ts)
        elif isinstance(message, PageRead):
            self._page_read(message, ts)
        elif isinstance(message, Recover):
            self._recover()
        elif isinstance(message, Checked):
            self._checked(message, ts)
        else:
            assert isinstance(message, Overflowed)
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
        # Refused at once while the backplane is known to fail: the client
        # learns it now (1013), not after a round trip that times out.
        trouble = self._link.trouble()
        if trouble is not None or self._link.queued_calls >= MAX_QUEUED_CALLS:
            registration.outcome = Unavailable(trouble or "the backplane is not keeping up")
            registration.done.set()
            return
        room = self._rooms.get(hello.room)
        if room is None:
            room = self._rooms[hello.room] = Room(hello.room)
            self._link.subscribe(room)
        token = keys.member_token(self._backplane.node, next(self._tokens))
        member = Member(peer, hello, room, token, ts, registration)
        if self.grace > 0:
            member.secret = secrets.token_urlsafe(18)
        self._members[peer] = member
        if room.subscribed:
            room.pending.add(member)
            self._link.call(JoinCall(member))
        else:
            room.waiting.append(member)

    def _subscribed(self, message: Subscribed) -> None:
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
            self._link.call(JoinCall(member))

    def _refuse(self, member: Member, error: Exception) -> None:
        """End a hello that did not make it (the session learns from `error`)."""
        if self._members.get(member.peer) is member:
            del self._members[member.peer]
        member.answer(error)

    def _join_replied(self, message: JoinReplied) -> None:
        member, outcome = message.member, message.outcome
        room = member.room
        if isinstance(outcome, Admitted) and room.feed is not None and room.epoch != outcome.epoch:
            # The backplane restarted the room's numbering since the feed began
            # (flushed, or back empty): those here follow the old one.
            self._restart(room, member.ts)
        room.pending.discard(member)
        if member.left is not None:  # its session ended meanwhile
            if isinstance(outcome, Admitted):
                self._link.call(leave_call(room.name, member, member.left, member.ts))
        elif isinstance(outcome, NameTaken):
            self._refuse(member, name_taken(member.name, room.name, outcome.holder))
        elif isinstance(outcome, BackplaneError):
            log.warning("a join in room %r failed: %s", room.name, outcome)
            # The script may have run all the same: take the member out again.
            self._link.call(leave_call(room.name, member, LeaveReason.ERROR, member.ts))
            self._refuse(member, Unavailable(str(outcome)))
        else:
            member.join_id = outcome.join_id
            member.resumed = outcome.resumed
            if outcome.resumed:  # the secret stays the one the client gave
                member.secret = member.hello.resume
            member.welcome = [
                protocol.welcome_event(
                    room.name,
                    member.name,
                    outcome.members,
                    outcome.join_id,
                    epoch=outcome.epoch,
                    recovered=outcome.recovered,
                    resume=member.secret,
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

    def _admit(self, member: Member, after_id: int) -> None:
        """Make an admitted member live once it has every event its room has
        delivered here after `after_id`; read the rest from the log if the
        room's window no longer holds them."""
        room = member.room
        assert room.feed is not None
        events = catch_up(room.window, after_id, room.feed.last_id)
        if events is None:
            room.pending.add(member)
            self._tasks.start_soon(self._link.catch_up, member, after_id, room.feed.last_id)
            return
        member.welcome.extend(event.line for event in events)
        peer = member.peer
        peer.deliver_welcome(member.welcome)
        self._touched.add(peer)
        room.members[peer] = member.join_id
        self._active += 1
        if member.resumed:
            self._resumes += 1
        else:
            self._joins += 1
        member.answer(
            Joined(
                room=room.name,
                name=member.name,
                welcome=member.welcome,
                announce=Delivery(b"", ()),  # the others hear the join from the backplane
                join_id=member.join_id,
            )
        )

    def _caught_up(self, message: CaughtUp) -> None:
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

    def _unregister(self, peer: Peer, reason: LeaveReason, ts: str, *, hold: bool = False) -> None:
        member = self._members.pop(peer, None)
        if member is None:
            return
        room = member.room
        if peer in room.members:
            del room.members[peer]
            self._active -= 1
            if hold and self.grace > 0:
                self._hold(member, reason)
            else:
                self._link.call(leave_call(room.name, member, reason, ts))
        elif member in room.waiting:
            room.waiting.remove(member)
        else:  # its join or its catch-up is in flight
            member.left = reason
            if member.join_id:  # admitted, catching up: it leaves now
                self._link.call(leave_call(room.name, member, reason, ts))
        self._forget_if_idle(room)

    def _hold(self, member: Member, reason: LeaveReason) -> None:
        """Keep a dropped member's place for the grace period (module
        docstring, "Presence")."""
        self._link.call(HoldCall(member.room.name, member.token, reason))
        until = trio.current_time() + self.grace
        heapq.heappush(self._held, (until, next(self._held_order), member, reason))
        self._holding.set()

    def _expire(self, ts: str) -> None:
        """Make the members whose grace has ended leave, with the reason they
        dropped for; a member that resumed meanwhile (here or elsewhere) is
        no longer under its old token, and its `LEAVE` does nothing."""
        now = trio.current_time()
        while self._held and self._held[0][0] <= now:
            _, _, member, reason = heapq.heappop(self._held)
            self._link.call(leave_call(member.room.name, member, reason, ts))
        self._expired.set()

    async def serve_expiry(self) -> None:
        """Post `GraceOver` whenever a held member's grace ends, in order
        with the rest of the inbox (the hub task applies it)."""
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            while True:
                if not self._held:  # the hub task's state, read between its turns
                    await self._holding.wait()
                    self._holding = trio.Event()
                    continue
                await trio.sleep_until(self._held[0][0])
                self._expired = trio.Event()
                await self._grace_over.send(GraceOver())
                await self._expired.wait()

    def _moved(self, room: Room, token: str) -> None:
        """A member took its place back under another token: close the
        connection that held the old one here, if any (1000, no leave)."""
        for peer in room.members:
            member = self._members[peer]
            if member.token == token:
                break
        else:
            return
        del self._members[peer]
        del room.members[peer]
        self._active -= 1
        peer.drop(CloseCode.NORMAL, LeaveReason.QUIT, "replaced by a newer connection")
        self._forget_if_idle(room)

    def _forget_if_idle(self, room: Room) -> None:
        """Unsubscribe a room with no local member left or joining."""
        if not room.idle or room.forgotten:
            return
        room.forgotten = True
        if self._rooms.get(room.name) is room:
            del self._rooms[room.name]
        self._link.unsubscribe(room)

    def _drop_slow(self, peer: Peer, ts: str) -> None:
        self._slow_drops += 1
        self._unregister(peer, LeaveReason.SLOW, ts)
        peer.drop(CloseCode.TRY_AGAIN_LATER, LeaveReason.SLOW)

    def _lose(self, member: Member, ts: str) -> None:
        """Close an admitted member the backplane no longer holds (reaped while
        this process was cut off, or lost with the server's data) with 1012:
        its client joins again, with `since` and `epoch`, and so is announced
        to everyone again and learns whether the room's numbering restarted."""
        if not self._is_admitted(member):
            return
        peer = member.peer
        self._lost_members += 1
        self._unregister(peer, LeaveReason.SHUTDOWN, ts)
        peer.drop(CloseCode.SERVICE_RESTART, LeaveReason.SHUTDOWN)

    def _restart(self, room: Room, ts: str) -> None:
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
                self._link.subscribe(room)
        self._link.check_rooms()

    def _rooms_view(self) -> list[str]:
        """The names of this process's rooms (members there or on their way in)."""
        return list(self._rooms)

    def _check_request(self) -> tuple[dict[str, list[str]], dict[str, int]]:
        """The member tokens of every room with a feed, for `room_states`,
        and the last id each has delivered here."""
        rooms = [room for room in self._rooms.values() if room.feed is not None]
        tokens = {room.name: [self._members[p].token for p in room.members] for room in rooms}
        return tokens, {room.name: room.feed.last_id for room in rooms if room.feed is not None}

    def _checked(self, message: Checked, ts: str) -> None:
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
        """The hub is closing: every local member leaves (reason `shutdown`),
        or with a grace period is held, to resume in the next process."""
        self._link.stopping = True
        for member in list(self._members.values()):
            admitted = member.peer in member.room.members
            self._unregister(member.peer, LeaveReason.SHUTDOWN, ts, hold=True)
            if not admitted:
                self._refuse(member, trio.ClosedResourceError("the hub has shut down"))

    def _stopped_reply(self, message: SharedHubMessage) -> None:
        """A join answered just as the hub stopped: take the member out again
        (or hold it, with a grace period)."""
        if isinstance(message, JoinReplied) and isinstance(message.outcome, Admitted):
            member = message.member
            if self.grace > 0:
                self._link.call(HoldCall(member.room.name, member.token, LeaveReason.SHUTDOWN))
            else:
                reason = LeaveReason.SHUTDOWN
                self._link.call(leave_call(member.room.name, member, reason, member.ts))

    # -- saying --------------------------------------------------------------

    def _broadcast(self, message: Broadcast, ts: str) -> None:
        member = self._members.get(message.peer)
        if member is None or message.peer not in member.room.members:
            return  # not a member (or not yet): nothing to say
        room = member.room
        command = message.command
        if isinstance(command, Say):
            if not self._link.reachable or self._link.queued_calls >= MAX_QUEUED_CALLS:
                self._refuse_say(member, command.ref, ts)
                return
            line = protocol.message_event(
                0, room.name, member.name, command.text, ts, ref=command.ref
            )
            post = Post(room.name, member.token, line, command.ref)
            self._link.call(SayCall(member, command.ref, post))
            return
        if isinstance(command, HistoryRequest):  # read off the hub task, answered here
            self._tasks.start_soon(self._link.read_page, member, command)
            return
        # A typing notice reaches every process, this one included, through
        # the room's channel, with the says queued around it.
        self._link.call(TypingCall(room.name, protocol.typing_event(room.name, member.name)))

    def _refuse_say(self, member: Member, ref: str | None, ts: str) -> None:
        """Tell a member its `say` was neither stored nor delivered (it may
        send it again)."""
        self._refused_posts += 1
        line = protocol.error_event(ErrorCode.UNAVAILABLE, UNAVAILABLE_MESSAGE, ref)
        self._answer(member, line, ts)

    def _page_read(self, message: PageRead, ts: str) -> None:
        """Answer a member's `history` request with the page read (or
        `unavailable`)."""
        member, request = message.member, message.request
        if message.events is None:
            line = protocol.error_event(ErrorCode.UNAVAILABLE, UNREADABLE_MESSAGE, request.ref)
        else:
            lines = [event.line for event in message.events]
            line = protocol.history_event(
                member.room.name, lines, more=message.more, ref=request.ref
            )
        self._answer(member, line, ts)

    def _resend(self, member: Member, line: bytes, ts: str) -> None:
        """A say its member sent before (the same ref): the original event,
        to the sender alone."""
        self._resent += 1
        self._answer(member, line, ts)

    def _answer(self, member: Member, line: bytes, ts: str) -> None:
        """`line` to `member` alone, unless it has left meanwhile; drop it if
        its outbox is full."""
        if not self._is_admitted(member):
            return
        peer = member.peer
        self._touched.add(peer)
        if not peer.deliver_nowait(line):
            self._drop_slow(peer, ts)

    def _is_admitted(self, member: Member) -> bool:
        """Whether `member` is still here and live in its room."""
        peer = member.peer
        return self._members.get(peer) is member and peer in member.room.members

    # -- hearing -------------------------------------------------------------

    def _heard(self, message: Heard) -> None:
        for name, line in message.events:
            room = self._rooms.get(name)
            if room is None:
                continue  # no longer ours: an event still queued at unsubscription
            event_id = event_id_of(line)
            if event_id is None:
                token = moved_token(line)
                if token is None:
                    self._typing(room, line)
                else:
                    self._moved(room, token)
                continue
            event = StoredEvent(event_id, line)
            if room.feed is None:
                room.early.append(event)
            else:
                self._feed_step(room, room.feed.receive(event))

    def _typing(self, room: Room, line: bytes) -> None:
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

    def _feed_step(self, room: Room, step: FeedStep) -> None:
        self._queue.extend((room, event) for event in step.events)
        if step.fill is not None:
            self._tasks.start_soon(self._link.fill, room, step.fill)
        elif room.resync and room.feed is not None and not room.feed.filling:
            self._resync(room)

    def _filled(self, room: Room, events: list[StoredEvent]) -> None:
        assert room.feed is not None
        self._feed_step(room, room.feed.filled(events))

    def _resync(self, room: Room) -> None:
        """The subscription dropped some of `room`'s events: read what follows."""
        feed = room.feed
        if feed is None or feed.filling:
            room.resync = True  # asked for once the feed can
            return
        room.resync = False
        self._feed_step(room, feed.resync())

    def _deliver(self, room: Room, event: StoredEvent) -> None:
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

    # -- closing ---------------------------------------------------------------

    async def _finish(self) -> None:
        """Stop the hub task, then wait for the last script calls (the leaves)."""
        with contextlib.suppress(trio.BrokenResourceError):  # the hub task died
            await self._replies.send(Stop())
        await self._link.finish()


@asynccontextmanager
async def open_shared_hub(
    backplane: Backplane,
    *,
    replay_limit: int,
    send_queue_size: int,
    lease_period: float = LEASE_PERIOD,
    lease_ttl: float = LEASE_TTL,
    reap_period: float = REAP_PERIOD,
    grace: float = 0.0,
) -> AsyncIterator[SharedHub]:
    """Run a shared hub on `backplane` for the duration of the `async with` block.

    The member tokens carry `backplane.node`, and the room logs keep about
    `backplane.history_limit` events (both set by `open_backplane`). The hub
    reads the backplane's `events` channel: nothing else may.

    `send_queue_size` is the clients' outbox limit: at most a quarter of it
    is delivered in one go before writers may run.

    The hub owns the node's lease (`BackplaneLink.serve_lease`, renewed every
    `lease_period` seconds to last `lease_ttl`): do not run it elsewhere. It
    is held before the block starts. Every `reap_period` seconds the hub
    reaps the members of processes whose lease has lapsed (module docstring).
    Every process sharing the server should use the same `lease_ttl`.

    `grace`: how long a member whose connection dropped keeps its place
    (module docstring, "Presence"); 0 holds nothing.

    On exit the session channels are closed, every member still here leaves
    through the backplane (bounded by `STOP_WAIT`), and the hub's tasks end.
    With a grace period the members are held instead, and the node's lease
    is set to last `grace` more seconds: then other processes reap them.
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
            grace=grace,
        )
        link = hub._link
        lease = functools.partial(link.serve_lease, period=lease_period, ttl=lease_ttl)
        await nursery.start(lease)
        nursery.start_soon(link.serve_recovery)
        nursery.start_soon(hub.serve, receive)
        nursery.start_soon(link.serve_scripts)
        nursery.start_soon(link.serve_subscriptions)
        nursery.start_soon(link.serve_heard, send.clone())
        nursery.start_soon(link.serve_resync)
        nursery.start_soon(link.serve_reaper, reap_period)
        nursery.start_soon(hub.serve_expiry)
        send.close()
        try:
            yield hub
        finally:
            hub._close_channels()
            with trio.move_on_after(STOP_WAIT):
                await hub._finish()
            nursery.cancel_scope.cancel()
    if grace > 0:
        # After the lease task has stopped, so that it cannot renew it again.
        with trio.move_on_after(STOP_WAIT), contextlib.suppress(BackplaneError):
            await backplane.renew_lease(grace)
