"""The shared hub's round trips to the backplane, each in a task of its own.

The hub task (shared_hub.py) never awaits the backplane: it hands work to
`BackplaneLink`, whose tasks run in the hub's nursery and post each answer
back into the hub's inbox (shared_state.py names the messages), so the order
in which the hub applies its inbox stays the one order of the process's
deliveries.

* Script calls leave through one queue, run by one task in the order
  queued (`serve_scripts`), a round trip at a time; the says and typing
  notices queued meanwhile go out together as one `say_many`. So a member's
  messages are stored in the order it sent them, after its join and before
  its leave.
* Subscriptions change through a second queue and task, in order
  (`serve_subscriptions`); a check of every room may be queued behind
  them, so that it reads the rooms' state once their subscriptions are back.
* Gap fills and catch-ups are one task each, retried every `READ_RETRY`
  until they work or the room is no longer this process's.
* The lease (`serve_lease`), the reaper (`serve_reaper`), and the resync of
  rooms whose events a full subscription channel dropped (`serve_resync`).

Every task keeps the backplane's health: a call that fails marks it failing
(`trouble()` says why, for `/readyz`), the next that succeeds marks it well
again and asks the hub to recover (`serve_recovery` posts `Recover`); a
lease renewal that finds the lease gone asks the same.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Final

import trio

from ..backplane.errors import BackplaneError
from ..backplane.redis import Backplane
from ..backplane.scripts import Admitted, NameTaken, Resend
from ..core import protocol
from ..core.feed import Fill
from ..core.protocol import LeaveReason
from .shared_state import (
    Call,
    CaughtUp,
    Checked,
    Filled,
    Heard,
    HoldCall,
    JoinCall,
    JoinReplied,
    LeaveCall,
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
    Subscribed,
    TypingCall,
    leave_call,
)

log = logging.getLogger(__name__)

RESYNC_PERIOD: Final = 0.5  # seconds between checks for events the subscription dropped
READ_RETRY: Final = 0.5  # seconds before a failed read is tried again
PROBE_PERIOD: Final = 0.5  # seconds between lease renewals while the backplane fails
REAP_WARN_EVERY: Final = 60.0  # seconds between warnings that reaping keeps failing

CheckRequest = tuple[dict[str, list[str]], dict[str, int]]


class BackplaneLink:
    """The shared hub's tasks that talk to the backplane; see the module docstring.

    The hub calls `call`, `subscribe`, `unsubscribe` and `check_rooms`
    (hand-offs, no await), sets `stopping` when it stops and `stopped` once
    its task has ended. `room_names` and `check_request` read the hub's
    state for the reaper and for checks; they run in this link's tasks,
    between awaits, while the hub task is parked.
    """

    def __init__(
        self,
        backplane: Backplane,
        replies: trio.MemorySendChannel[SharedHubMessage],
        *,
        replay_limit: int,
        burst: int,
        room_names: Callable[[], Iterable[str]],
        check_request: Callable[[], CheckRequest],
    ) -> None:
        self._backplane = backplane
        self._replies = replies
        self._replay_limit = replay_limit
        self._burst = burst
        self._room_names = room_names
        self._check_request = check_request
        self.stopping = False  # the hub is stopping: nobody waits for answers
        self.stopped = trio.Event()  # the hub task has ended
        # Hand-offs to the two ordered workers (the hub appends, each worker takes).
        self._calls: deque[Call] = deque()
        self._calls_wakeup = trio.Event()
        self._calls_done = trio.Event()  # the scripts task has run its last call
        # (subscribe?, room), or None: check the rooms once the changes before it are done
        self._subscriptions: deque[tuple[bool, Room] | None] = deque()
        self._subscriptions_wakeup = trio.Event()
        self._recovery_wanted = trio.Event()  # set when the backplane may have lost state
        # Counters, for statistics.
        self.events = 0  # numbered by this process's calls
        self.say_round_trips = 0  # say_many calls answered, and their total time
        self.say_seconds = 0.0
        self.gap_fills = 0
        self.lost_posts = 0  # refused by the backplane, their senders no longer members
        self.leaves = dict.fromkeys(map(str, LeaveReason), 0)  # this process's members' leaves
        # The backplane's health, kept by every task that calls it: since when
        # its calls have failed (None while the last one succeeded), and why.
        self._failing_since: float | None = None
        self._failure = ""
        self._started_failing = trio.Event()

    # -- health ----------------------------------------------------------------

    @property
    def reachable(self) -> bool:
        return self._failing_since is None

    def trouble(self) -> str | None:
        """Why new clients should go elsewhere: the last call to the backplane
        (of any task) failed, and none has succeeded since."""
        if self._failing_since is None:
            return None
        failing_for = trio.current_time() - self._failing_since
        return f"backplane unreachable for {failing_for:.0f} s: {self._failure}"

    def _backplane_ok(self) -> None:
        if self._failing_since is not None:
            # Events published meanwhile were lost to the subscription, and
            # the server may have come back empty: the hub checks every room.
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
            self._started_failing.set()  # the lease renewal starts probing
        self._failure = str(error)

    # -- hand-offs from the hub task -------------------------------------------

    @property
    def queued_calls(self) -> int:
        return len(self._calls)

    def call(self, call: Call) -> None:
        self._calls.append(call)
        self._calls_wakeup.set()

    def subscribe(self, room: Room) -> None:
        self._subscriptions.append((True, room))
        self._subscriptions_wakeup.set()

    def unsubscribe(self, room: Room) -> None:
        self._subscriptions.append((False, room))
        self._subscriptions_wakeup.set()

    def check_rooms(self) -> None:
        """Read every room's state (`Checked`) once the subscription changes
        asked for before are done."""
        self._subscriptions.append(None)
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
                    if self.stopped.is_set():
                        return
                    self._calls_wakeup = trio.Event()
                    await self._calls_wakeup.wait()  # set by `call`, and by `finish`
                    continue
                calls = list(self._calls)
                self._calls.clear()
                says: list[SayCall] = []
                notices: list[TypingCall] = []
                for call in calls:
                    if isinstance(call, SayCall):
                        says.append(call)
                        continue
                    if isinstance(call, TypingCall):
                        notices.append(call)
                        continue
                    await self._say_many(says, notices)
                    says, notices = [], []
                    if isinstance(call, JoinCall):
                        await self._run_join(call.member)
                    elif isinstance(call, HoldCall):
                        await self._run_hold(call)
                    else:
                        await self._run_leave(call)
                await self._say_many(says, notices)
        finally:
            self._calls_done.set()

    async def _say_many(self, says: list[SayCall], notices: list[TypingCall]) -> None:
        """Send `says` and typing `notices` as one `say_many`; if it fails,
        the hub task tells the senders of `says` (`SaysFailed`)."""
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
            if not self.stopping:  # else the hub task is gone, and so are the senders
                await self._post(SaysFailed(says))
            return
        self.say_round_trips += 1
        self.say_seconds += trio.current_time() - started
        self._backplane_ok()
        refused = [say for say, event_id in zip(says, ids, strict=True) if event_id is None]
        resent = [
            (say, event) for say, event in zip(says, ids, strict=True) if isinstance(event, Resend)
        ]
        self.events += len(says) - len(refused) - len(resent)
        if resent and not self.stopping:
            await self._post(SaysResent(resent))
        if refused:
            self.lost_posts += len(refused)
            log.warning(
                "%d messages refused: the backplane no longer holds their senders", len(refused)
            )
            if not self.stopping:
                await self._post(SaysRefused(refused))

    async def _run_join(self, member: Member) -> None:
        if member.left is not None and self.stopping:
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
                # Only where places are held: else a stale secret resumes nothing.
                resume=hello.resume if member.secret is not None else None,
                secret=member.secret,
            )
        except BackplaneError as error:
            self._backplane_failed(error)
            outcome = error
        else:
            self._backplane_ok()
        if isinstance(outcome, Admitted) and not outcome.resumed:
            self.events += 1
        if self.stopping:  # the hub task is gone: undo the join here (or hold it)
            if isinstance(outcome, Admitted) and member.secret is not None:
                await self._run_hold(HoldCall(room, member.token, LeaveReason.SHUTDOWN))
            elif not isinstance(outcome, NameTaken):
                await self._run_leave(leave_call(room, member, LeaveReason.SHUTDOWN, member.ts))
            return
        await self._post(JoinReplied(member, outcome))

    async def _run_hold(self, call: HoldCall) -> None:
        try:
            await self._backplane.hold(call.room, call.token, call.reason)
        except BackplaneError as error:
            self._backplane_failed(error)
            # Held or not, it leaves when its grace ends (or is reaped).
            log.warning("a dropped member of room %r could not be held: %s", call.room, error)
            return
        self._backplane_ok()

    async def _run_leave(self, call: LeaveCall) -> None:
        try:
            event_id = await self._backplane.leave(call.room, call.token, call.name, call.line)
        except BackplaneError as error:
            self._backplane_failed(error)
            # The member stays on the backplane until this node's lease lapses
            # and another process reaps it.
            log.warning("a leave from room %r failed: %s", call.room, error)
            return
        self._backplane_ok()
        if event_id is not None:  # else it had left already, or resumed elsewhere
            self.events += 1
            self.leaves[call.reason] += 1

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
                await self._post(Subscribed(room, error))
            else:
                self._backplane_ok()
                if subscribe:
                    await self._post(Subscribed(room, None))

    async def _check_rooms(self) -> None:
        """Read every room's state (`Checked`); retried until it works."""
        while True:
            tokens, delivered = self._check_request()  # the hub's rooms, read between awaits
            try:
                states = await self._backplane.room_states(tokens)
            except BackplaneError as error:
                self._backplane_failed(error)
                await trio.sleep(READ_RETRY)
                continue
            self._backplane_ok()
            await self._post(Checked(states, delivered))
            return

    async def serve_recovery(self) -> None:
        """Hand the hub `Recover` whenever a task found the backplane back, or
        the node's lease lost."""
        while True:
            await self._recovery_wanted.wait()
            self._recovery_wanted = trio.Event()
            await self._post(Recover())

    async def serve_lease(
        self,
        *,
        period: float,
        ttl: float,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Keep this node's lease: renew it now (raising `BackplaneError` if
        that fails), report started, then every `period` seconds (every
        `PROBE_PERIOD` while the backplane is failing). A lease
        found gone (it lapsed while the server was out of reach, or the
        server lost its data) means members may have been reaped or lost:
        recover."""
        await self._backplane.renew_lease(ttl)
        task_status.started()
        while True:
            # While failing, the renewal is also the probe that ends the
            # refusals (`trouble`): sooner than a full period.
            if self.reachable:
                self._started_failing = trio.Event()
                with trio.move_on_after(period):
                    await self._started_failing.wait()
            if not self.reachable:
                await trio.sleep(min(period, PROBE_PERIOD))
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
                await send.send(Heard(batch))

    async def serve_resync(self) -> None:
        """Every `RESYNC_PERIOD`, hand the hub the rooms whose events the
        subscription dropped (a full channel)."""
        while True:
            await trio.sleep(RESYNC_PERIOD)
            rooms = self._backplane.take_overflowed_rooms()
            if rooms:
                await self._post(Overflowed(rooms))

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
            rooms = sorted(self._room_names())
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

    async def fill(self, room: Room, fill: Fill) -> None:
        """Read a feed's gap from the log; retried until it works or the room
        is no longer this process's."""
        while not room.forgotten:
            try:
                up_to = fill.up_to_id
                if up_to is None:
                    up_to = await self._backplane.last_id(room.name)
                events = await self._backplane.read_range(room.name, fill.after_id, up_to)
                self.gap_fills += 1
            except BackplaneError as error:
                self._backplane_failed(error)
                log.warning("cannot read room %r's log: %s", room.name, error)
                await trio.sleep(READ_RETRY)
                continue
            self._backplane_ok()
            await self._post(Filled(room, events))
            return

    async def read_page(self, member: Member, request: protocol.HistoryRequest) -> None:
        """Read a page of a member's room's log for its `history` request;
        tried once (the member may ask again)."""
        try:
            events, more = await self._backplane.read_page(
                member.room.name, request.before, request.limit
            )
        except BackplaneError as error:
            self._backplane_failed(error)
            log.warning("cannot read room %r's log: %s", member.room.name, error)
            await self._post(PageRead(member, request, None))
            return
        self._backplane_ok()
        await self._post(PageRead(member, request, events, more))

    async def catch_up(self, member: Member, after_id: int, up_to_id: int) -> None:
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
            await self._post(CaughtUp(member, up_to_id, events))
            return

    # -- closing ---------------------------------------------------------------

    async def finish(self) -> None:
        """Wait for the hub task to end, then for the last script calls (the
        leaves it queued as it stopped)."""
        await self.stopped.wait()
        self._calls_wakeup.set()
        await self._calls_done.wait()
