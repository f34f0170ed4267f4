"""The hub: one Trio task that applies every client command to the chat state.

Sessions reach the hub through three memory channels, `register`,
`unregister` and `broadcast`, as in the Go chat it re-imagines (README). Trio
has no `select`, so the three are send channels onto one FIFO inbox read by
one task: a client's commands are applied in the order it sent them whatever
their kind, which is what keeps a `say` sent right after `hello` from
overtaking its own `join`, and a last `say` from arriving after its sender's
`leave`.

The hub task never blocks on a client. It asks the pure `Chat` (core/rooms.py)
what an event is and who receives it, then appends the event's bytes, encoded
once, to each recipient's bounded outbox. A recipient whose outbox is full is
dropped at once (leave reason `slow`, close code 1013).

Dropping a member is itself an event (its `leave`), which may overflow the
next member's outbox, and so on: a whole room that stops reading at once is a
cascade as long as the room. Deliveries therefore go through one FIFO work
queue, never a recursive call: ids are assigned in the order deliveries are
queued, so the queue preserves id order, and it is emptied before the next
command is applied. A cascade longer than one burst is delivered a burst at a
time, with a flush and a yield in between, so that members who do read are
never overflowed by leaves alone.

An exception in the hub task is a bug with no safe way to continue (the chat
state may be half-updated): it is logged and re-raised, which ends the server
with a non-zero exit status rather than leaving it wedged.

Presence: a session that ends without a goodbye (core/rooms.py) asks for its
seat to be held (`leave(..., hold=True)`); the expiry task posts `GraceOver`
into the same inbox when a held seat's grace ends, so that the member's leave
is ordered with everything else. `open_hub` restores the seats a previous run
kept, and `Hub.hold_all` gives them at exit.

With a backplane, `shared_hub.SharedHub` takes this hub's place (the same
`HubFront` for sessions): ids come from the backplane's scripts and events
from the rooms' subscriptions.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import trio

from ..core import protocol
from ..core.errors import TrioChatError
from ..core.histogram import LATENCY_BUCKETS, Histogram
from ..core.history import HistoryStore, RoomHistory
from ..core.protocol import (
    CloseCode,
    Hello,
    HistoryRequest,
    LeaveReason,
    ProtocolError,
    Say,
    Typing,
)
from ..core.rooms import Chat, Delivery, HeldSeat, Joined, Resent, RoomNotLoaded

log = logging.getLogger(__name__)

INBOX_SIZE = 1024
STOP_WAIT = 5.0  # seconds for the hub task to apply the last leaves at exit


class Unavailable(TrioChatError):
    """The hub cannot admit a hello now (the shared hub's backplane did not
    answer): the session closes with `close_code`, and the client may try
    again later."""

    close_code = CloseCode.TRY_AGAIN_LATER


class Peer(Protocol):
    """What the hub needs of a connected client (the session implements it)."""

    def __hash__(self) -> int: ...

    def deliver_nowait(self, line: bytes) -> bool:
        """Queue a live event; False if the client's send queue is full."""
        ...

    def deliver_welcome(self, lines: list[bytes]) -> None:
        """Queue the welcome and history replay, ahead of live events."""
        ...

    def flush_nowait(self) -> None:
        """Send what was queued (the hub calls this once per burst)."""
        ...

    def drop(self, code: CloseCode, reason: LeaveReason, text: str = "") -> None:
        """Close the client with `code` (and `text`, or the code's usual
        reason); it has already left with `reason`."""
        ...


@dataclass(slots=True, eq=False)
class Registration:
    """A hello on its way through the hub; `done` is set once applied."""

    peer: Peer
    hello: Hello
    done: trio.Event = field(default_factory=trio.Event)
    outcome: Joined[Peer] | Exception | None = None


@dataclass(frozen=True, slots=True)
class Unregistration:
    peer: Peer
    reason: LeaveReason
    hold: bool = False  # the connection dropped: keep the member's seat for a while


@dataclass(frozen=True, slots=True)
class Broadcast:
    peer: Peer
    command: Say | Typing | HistoryRequest


@dataclass(frozen=True, slots=True)
class RoomLoaded:
    """A room's history, read from storage for the registrations waiting on it."""

    room: str
    history: RoomHistory | Exception


@dataclass(frozen=True, slots=True)
class GraceOver:
    """Held seats' grace may have ended: their members leave."""


HubMessage = Registration | Unregistration | Broadcast | RoomLoaded | GraceOver
# Reads a room's window from durable storage (off the hub task):
RoomLoader = Callable[[str], Awaitable[RoomHistory]]


@dataclass(frozen=True, slots=True)
class HubStatistics:
    rooms: int
    members: int
    events: int  # stored events numbered since start
    deliveries: int  # live events put into outboxes
    slow_drops: int  # members dropped as too slow: a full outbox, or a write timed out
    inbox: int  # commands waiting for the hub task
    held: int = 0  # seats kept for members whose connection dropped
    joins: int = 0  # members that joined (a `join` event) since start
    resumes: int = 0  # members that took their held seat back (no `join`)
    leaves: Mapping[str, int] = field(default_factory=dict)  # `leave` events by reason


@dataclass(frozen=True, slots=True)
class BackplaneCounters:
    """A shared hub's dealings with its backplane, for `/metrics`."""

    reachable: bool  # the last call succeeded
    publish_round_trips: int  # say_many calls answered
    publish_seconds: float  # their total round-trip time
    gap_fills: int  # reads of events the subscription did not bring
    resubscriptions: int  # rooms subscribed again on recovery
    recoveries: int  # checks of every room, after a failure or a lost lease
    refused_posts: int  # answered `unavailable`
    lost_posts: int  # refused: their senders were no longer members there
    lost_members: int  # closed with 1012: the backplane no longer held them
    restarted_rooms: int  # rooms whose numbering restarted under members here
    overflowed: int  # subscribed events dropped by a full channel, then read back
    lease_failures: int  # renewals that could not reach the server
    leases_lost: int  # renewals that found the lease gone


FrontMessage = Registration | Unregistration | Broadcast


class HubFront:
    """What a session calls, whichever hub serves it: `join`, `leave`, `say`.

    Each call becomes a message in the hub's one FIFO inbox (`register`,
    `unregister` and `broadcast` are clones of its sending end). The hub of
    one process (`Hub`) and the hub of rooms shared through a backplane
    (`shared_hub.SharedHub`) both build on it.
    """

    def __init__(self, inbox: trio.MemorySendChannel[FrontMessage]) -> None:
        self.register = inbox.clone()
        self.unregister = inbox.clone()
        self.broadcast = inbox.clone()

    async def join(self, peer: Peer, hello: Hello) -> Joined[Peer]:
        """Make `peer` a member of the room `hello` names.

        On success the welcome and replay are already in the peer's outbox,
        ahead of any live event of the room.

        Raises:
            ProtocolError: the hello was refused (e.g. `name_taken`).
            Unavailable: the hub cannot admit it now (close 1013).
            Exception: whatever the store's `load` raised: the room's
                history could not be read.
            trio.ClosedResourceError: the hub has shut down.
        """
        registration = Registration(peer, hello)
        await self.register.send(registration)
        await registration.done.wait()
        outcome = registration.outcome
        if isinstance(outcome, Exception):
            raise outcome
        assert outcome is not None
        return outcome

    async def leave(self, peer: Peer, reason: LeaveReason, *, hold: bool = False) -> None:
        """Remove `peer` from its room, if it is (still) a member or joining.

        `hold`: its connection dropped rather than said goodbye, so its seat
        is kept for the presence grace period (a hub that keeps none treats
        it as a leave).
        """
        await self.unregister.send(Unregistration(peer, reason, hold))

    async def say(self, peer: Peer, command: Say | Typing | HistoryRequest) -> None:
        """Broadcast a message or typing notice from `peer` to its room, or
        ask for a page of its history (answered to `peer` alone).

        Unlike a plain channel send this does not yield while the inbox has
        room, so a session hands over every command of one network read
        before the hub runs, and the hub's deliveries batch into one write
        per recipient. It waits (and so yields) only when the inbox is full.
        """
        message = Broadcast(peer, command)
        try:
            self.broadcast.send_nowait(message)
        except trio.WouldBlock:
            await self.broadcast.send(message)

    def statistics(self) -> HubStatistics:
        raise NotImplementedError  # each hub counts its own

    def delivery_latency(self) -> Histogram | None:
        """Seconds from an event's numbering to its bytes reaching the
        recipients' sockets, one value per burst (see `Hub._flush`); None
        for a hub that does not measure it."""
        return None

    def backplane_counters(self) -> BackplaneCounters | None:
        """How the backplane is doing; None for a hub without one."""
        return None

    def trouble(self) -> str | None:
        """Why this hub cannot serve new clients now (a one-line reason), or
        None. The hub of one process has none; the shared hub has one while
        its backplane is failing."""
        return None

    def rooms(self) -> list[tuple[str, int]]:
        """The rooms with members and how many, as this hub knows them."""
        raise NotImplementedError

    def _close_channels(self) -> None:
        self.register.close()
        self.unregister.close()
        self.broadcast.close()


class Hub(HubFront):
    """Owns the chat state; see the module docstring. Create with `open_hub`."""

    def __init__(
        self,
        store: HistoryStore,
        chat: Chat[Peer],
        inbox: trio.MemorySendChannel[HubMessage],
        loaders: trio.Nursery,
        *,
        load: RoomLoader | None,
        burst: int,
    ) -> None:
        self._store = store
        self._load_room = load
        self._chat = chat
        self._loaders = loaders
        self._loading: dict[str, list[Registration]] = {}  # room -> hellos waiting for it
        self._touched: set[Peer] = set()  # peers given events in this burst
        self._queue: deque[Delivery[Peer]] = deque()  # numbered, not yet delivered
        self._gone: set[Peer] = set()  # dropped while the queue was being emptied
        self._burst = burst
        super().__init__(inbox)
        self._loaded = inbox.clone()  # rooms read off the hub task come back here
        self._grace_over = inbox.clone()  # the expiry task's wake-up calls
        self._holding = trio.Event()  # set when a seat is held: the expiry task wakes
        self._expired = trio.Event()  # set when a GraceOver has been applied
        self.stopped = trio.Event()  # the hub task has applied its last command
        self._events = 0
        self._deliveries = 0
        self._slow_drops = 0
        self._latency = Histogram(LATENCY_BUCKETS)
        self._burst_started = 0.0  # perf_counter() when the current burst began

    def _close_channels(self) -> None:
        super()._close_channels()
        self._loaded.close()
        self._grace_over.close()

    def statistics(self) -> HubStatistics:
        chat = self._chat.statistics()
        return HubStatistics(
            rooms=chat.rooms,
            members=chat.members,
            held=chat.held,
            events=self._events,
            deliveries=self._deliveries,
            slow_drops=self._slow_drops,
            inbox=self.broadcast.statistics().current_buffer_used,
            joins=chat.joins,
            resumes=chat.resumes,
            leaves=chat.leaves,
        )

    def delivery_latency(self) -> Histogram:
        return self._latency

    async def serve(self, inbox: trio.MemoryReceiveChannel[HubMessage]) -> None:
        """Apply commands until every send channel is closed.

        Raises:
            Exception: whatever a bug raised while applying a command, after
                logging it: the caller must stop the server (see the module
                docstring).
        """
        try:
            async with inbox:
                async for first in inbox:
                    await self._apply_burst(first, inbox)
        except Exception:
            log.critical("internal error in the hub: stopping the server", exc_info=True)
            raise
        finally:
            self.stopped.set()

    async def serve_expiry(self) -> None:
        """Post `GraceOver` whenever a held seat's grace ends, in order with
        the rest of the inbox (the hub task applies it)."""
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            while True:
                until = self._chat.next_expiry()  # the hub task's state, read between its turns
                if until is None:
                    await self._holding.wait()
                    self._holding = trio.Event()
                    continue
                await trio.sleep_until(until)
                self._expired = trio.Event()
                await self._grace_over.send(GraceOver())
                await self._expired.wait()

    def rooms(self) -> list[tuple[str, int]]:
        return self._chat.rooms()

    def hold_all(self) -> list[HeldSeat]:
        """Once the hub task has stopped: every member's seat, held, for a
        restart to restore."""
        return self._chat.hold_all(LeaveReason.SHUTDOWN, trio.current_time())

    async def _apply_burst(
        self, first: HubMessage, inbox: trio.MemoryReceiveChannel[HubMessage]
    ) -> None:
        """Apply `first` and what else is queued, up to a burst, then flush.

        Applying more of what is queued before yielding means writers wake
        once for a burst rather than once per event; a burst stays well below
        what could fill a healthy client's send queue (`burst` deliveries at
        most between two flushes).
        """
        # One timestamp per burst, taken as it starts: a burst lasts a few
        # milliseconds at most, and formatting the time for every event
        # showed in profiles.
        ts = protocol.format_timestamp(time.time())
        self._burst_started = time.perf_counter()
        message: HubMessage = first
        budget = self._burst
        for applied in range(self._burst):
            if applied:  # take the next command only when it will be applied
                try:
                    message = inbox.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break  # on EndOfChannel, the `async for` ends next
            self._apply(message, ts)
            while self._queue:
                if budget <= 0:
                    # A cascade: let every writer drain this burst first.
                    self._flush()
                    await trio.sleep(0)  # noqa: ASYNC115 (trio.lowlevel: debug module only)
                    ts = protocol.format_timestamp(time.time())
                    self._burst_started = time.perf_counter()
                    budget = self._burst
                self._deliver(self._queue.popleft(), ts)
                budget -= 1
            self._gone.clear()
            if budget <= 0:
                break
        self._flush()

    def _flush(self) -> None:
        """One flush per recipient of this burst: a batch per write.

        Delivery latency is measured here, once per burst rather than per
        event or recipient (the hot path gains one clock read and one
        bisect per burst): from the burst's start, just before its first
        event is numbered, to the end of this loop, when every idle
        recipient's socket has taken the bytes (a direct write) and every
        busy writer task has been handed them. So each value is the burst's
        slowest event, and what a busy writer then waits for its socket is
        not included.
        """
        touched = self._touched
        if not touched:
            return
        for peer in touched:
            peer.flush_nowait()
        touched.clear()
        self._latency.observe(time.perf_counter() - self._burst_started)

    def _apply(self, message: HubMessage, ts: str) -> None:
        if isinstance(message, Broadcast):
            if isinstance(message.command, Say):
                now = trio.current_time()
                delivery = self._chat.say(message.peer, message.command, ts, now=now)
                self._events += delivery is not None and not isinstance(delivery, Resent)
            elif isinstance(message.command, HistoryRequest):
                # Read from the room's window in memory: the same events the
                # store retains, a slice of at most MAX_HISTORY_PAGE lines.
                delivery = self._chat.history(message.peer, message.command)
            else:
                delivery = self._chat.typing(message.peer)
            if delivery is not None:
                self._queue.append(delivery)
        elif isinstance(message, Registration):
            self._register(message, ts)
        elif isinstance(message, Unregistration):
            self._unregister(message, ts)
        elif isinstance(message, GraceOver):
            leaves = self._chat.expire(trio.current_time(), ts)
            self._events += len(leaves)
            self._queue.extend(leaves)
            self._expired.set()
        else:
            self._room_loaded(message, ts)

    def _unregister(self, message: Unregistration, ts: str) -> None:
        peer, reason = message.peer, message.reason
        if message.hold:
            delivery = self._chat.drop(peer, reason, ts, now=trio.current_time())
            self._holding.set()
        else:
            delivery = self._chat.leave(peer, reason, ts)
        if delivery is not None:
            self._events += 1
            self._slow_drops += reason is LeaveReason.SLOW  # a write timed out
            self._queue.append(delivery)
        else:
            self._forget_waiting(peer)

    def _register(self, registration: Registration, ts: str) -> None:
        room = registration.hello.room
        waiting = self._loading.get(room)
        if waiting is not None:  # keep hello order while the room loads
            waiting.append(registration)
            return
        try:
            joined = self._chat.join(
                registration.peer,
                registration.hello,
                ts,
                now=trio.current_time(),
                secret=secrets.token_urlsafe(18),  # the seat's resume secret
            )
        except RoomNotLoaded:
            self._loading[room] = [registration]
            self._loaders.start_soon(self._load, room)
            return
        except ProtocolError as refusal:
            registration.outcome = refusal
        else:
            registration.outcome = joined
            registration.peer.deliver_welcome(joined.welcome)
            self._touched.add(registration.peer)
            if joined.resumed:
                if joined.displaced is not None:
                    joined.displaced.drop(
                        CloseCode.NORMAL, LeaveReason.QUIT, "replaced by a newer connection"
                    )
            else:
                self._events += 1
                self._queue.append(joined.announce)
        registration.done.set()

    async def _load(self, room: str) -> None:
        """Read a room's history off the hub task, then hand it back in order."""
        history: RoomHistory | Exception
        if self._load_room is None:  # a bug: the store needs a loader it was not given
            log.error("the store has no window for room %r and no way to load one", room)
            history = RuntimeError(f"no history loader for room {room!r}")
        else:
            try:
                history = await self._load_room(room)
            except Exception as exc:  # reported to each waiting session, which closes 1011
                log.exception("cannot load the history of room %r", room)
                history = exc
        with contextlib.suppress(trio.ClosedResourceError):
            await self._loaded.send(RoomLoaded(room, history))

    def _room_loaded(self, loaded: RoomLoaded, ts: str) -> None:
        waiting = self._loading.pop(loaded.room, [])
        if isinstance(loaded.history, Exception):
            for registration in waiting:
                registration.outcome = loaded.history
                registration.done.set()
            return
        self._store.install(loaded.room, loaded.history)
        for registration in waiting:
            self._register(registration, ts)
        if not self._chat.is_active(loaded.room):  # every hello was refused
            self._store.release(loaded.room)

    def _forget_waiting(self, peer: Peer) -> None:
        """Drop a hello still waiting for its room: its session has ended."""
        for waiting in self._loading.values():
            waiting[:] = [r for r in waiting if r.peer is not peer]

    def _deliver(self, delivery: Delivery[Peer], ts: str) -> None:
        """Put one event into its recipients' outboxes; drop those that are full.

        The leaves of dropped members join the end of the work queue: they
        are numbered after every event already queued, so the queue stays in
        id order, and no call here ever recurses.
        """
        line = delivery.line
        recipients = delivery.recipients
        if self._gone:  # dropped since this delivery was addressed
            recipients = tuple(peer for peer in recipients if peer not in self._gone)
        self._touched.update(recipients)
        slow = [peer for peer in recipients if not peer.deliver_nowait(line)]
        self._deliveries += len(recipients) - len(slow)
        if not slow:
            return
        # Leave first, all of them, so that no dropped member is offered
        # another's leave; then the leaves go to those who remain.
        self._gone.update(slow)
        leaves = self._chat.leave_all(slow, LeaveReason.SLOW, ts)
        self._queue.extend(leaves)
        self._events += len(leaves)
        self._slow_drops += len(leaves)  # members dropped, each counted once
        for peer in slow:
            peer.drop(CloseCode.TRY_AGAIN_LATER, LeaveReason.SLOW)


@asynccontextmanager
async def open_hub(
    store: HistoryStore,
    *,
    load: RoomLoader | None = None,
    replay_limit: int,
    send_queue_size: int,
    grace: float = 0.0,
    held: Sequence[HeldSeat] = (),
) -> AsyncIterator[Hub]:
    """Run a hub for the duration of the `async with` block.

    `load` reads a room's window when `store.acquire` has none in memory (a
    durable store's `load`); it runs in a task of its own, off the hub task.

    `send_queue_size` is the clients' outbox limit: the hub applies at most a
    quarter of it in one go before letting writers run.

    `grace` is the presence grace period (core/rooms.py): seats of members
    whose connection dropped are held that long. `held` are the seats a
    previous run kept (`Hub.hold_all`), restored before the first hello;
    their rooms are loaded first.

    On exit the channels are closed and the hub task applies what is still
    queued (the last sessions' leaves) before it ends; then `hold_all`
    gives the seats to keep.
    """
    send, receive = trio.open_memory_channel[HubMessage](INBOX_SIZE)
    chat: Chat[Peer] = Chat(store, replay_limit, grace=grace)
    for room in sorted({seat.room for seat in held}):
        if store.acquire(room) is None:
            assert load is not None, "a store that loads rooms needs `load`"
            store.install(room, await load(room))
    chat.restore(held, trio.current_time())
    async with trio.open_nursery() as nursery:
        hub = Hub(store, chat, send, nursery, load=load, burst=max(send_queue_size // 4, 1))
        send.close()  # only the clones stay open
        nursery.start_soon(hub.serve, receive)
        nursery.start_soon(hub.serve_expiry)
        try:
            yield hub
        finally:
            hub._close_channels()
            with trio.move_on_after(STOP_WAIT):
                await hub.stopped.wait()
            nursery.cancel_scope.cancel()  # the expiry task
