"""The backplane's Trio shell: the Redis (or Valkey) server, through valkey-glide.

`open_backplane` connects two glide clients, one for commands and one for
subscriptions, and yields a `Backplane`. Each state change is one script
(`backplane.scripts`); `say_many` sends a burst as one pipeline of one
`SAY_MANY` per room, one round trip whatever its size, and `join` sends
its bookkeeping with its script. A burst costs glide
one command per room rather than one per say, which is most of the cost
(`benchmarks/backplane_say.py` measures it); several `say_many` may be in
flight at once. Typing notices ride along as plain PUBLISHes.

Subscriptions
-------------
glide 2.6 subscribes at run time (`subscribe`/`unsubscribe` on a client
created with a Pub/Sub callback and no channels), so a process subscribes
exactly to the channels of the rooms where it has members: no channel every
process must decode, no pattern subscription, and so no message delivered
twice (an exact and a matching pattern subscription would deliver it twice).
The subscriptions live on a client of their own, so that a burst of
published events never queues in front of a command's reply; glide
re-subscribes it by itself after a reconnection (events published meanwhile
are lost to it: the hub notices the id jump and reads the gap from the log).

Typing notices arrive on the same channel as the numbered events, and
pass through the same way: `scripts.event_id_of` tells them apart.

Messages are taken by the Pub/Sub callback, never by awaiting
`get_pubsub_message()` (cancelling that wait loses the next message). glide
calls the callback on the Trio thread, from its reader task, and only logs
what it raises; so the callback does one `send_nowait` into a bounded memory
channel of `(room, line)` and, when the channel is full, counts the event as
overflowed and remembers its room instead of raising. The hub repairs an
overflowed room from its log (`take_overflowed_rooms`, `read_range`).

Cancellation and errors
-----------------------
Clients are created inside the Trio run that uses them, and connect lazily:
glide's eager connect blocks the whole Trio thread until the server answers
(2 s when none does), while a lazy client connects on its first request, a
wait that can be cancelled (`open_backplane` makes that request).

Every method may be cancelled; timeouts are the caller's (a glide request
timeout of `REQUEST_TIMEOUT_MS` remains as a backstop against a server that
never answers). A cancelled script call may still run on the server: the
caller learns its effect from the room's channel or log. Every glide error
comes out as `BackplaneError`, with a one-line reason and never the password.
"""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import trio
from glide import (
    BackoffStrategy,
    Batch,
    GlideClient,
    GlideClientConfiguration,
    GlideError,
    Logger,
    LogLevel,
    NodeAddress,
    PubSubMsg,
    ServerCredentials,
)

from ..core import protocol
from ..core.history import StoredEvent
from . import keys, scripts
from .errors import BackplaneError
from .scripts import Admitted, Arg, Call, NameTaken, Post, Resend
from .url import BackplaneUrl, parse_backplane_url

log = logging.getLogger(__name__)

CHANNEL_SIZE: Final = 4096  # subscribed events waiting for the hub
HISTORY_LIMIT: Final = 1000  # events each room's log keeps (about: MAXLEN ~)
REPLAY_LIMIT: Final = 50
LEASE_PERIOD: Final = 3.0  # seconds between renewals of the node's lease
LEASE_TTL: Final = 10.0  # seconds a lease outlives its last renewal
REAPER_TTL_MS: Final = 30_000  # how long one process may take to reap a dead node
# glide's own bound on a request (its default is 250 ms). While the server is
# out of reach a request waits for glide's reconnection until then: this is
# how long an outage takes to be noticed, so short, but far above any script's
# run time on a healthy server (a burst of 256 says takes about 1 ms).
REQUEST_TIMEOUT_MS: Final = 2_000
RECONNECT_FIRST_MS: Final = 100  # glide's first wait before reconnecting
RECONNECT_STEPS: Final = 5  # doublings before the wait stops growing (3.2 s)
RECONNECT_JITTER_PERCENT: Final = 20
CLOSE_WAIT: Final = 2.0  # seconds to close a client while the caller is cancelled


@dataclass(frozen=True, slots=True)
class BackplaneStatistics:
    subscribed_rooms: int
    received: int  # subscribed events queued for the hub
    overflowed: int  # subscribed events dropped: the channel was full
    round_trips: int  # pipelines and commands sent
    scripts: int  # script calls sent
    script_loads: int  # times the scripts were (re)loaded
    lease_renewals: int
    lease_failures: int  # renewals that failed (the server could not be reached)
    leases_lost: int  # renewals that found the lease gone (expired, or a flushed server)


@dataclass(frozen=True, slots=True)
class RoomState:
    """A room's numbering on the server, and which of a process's members it holds."""

    epoch: str | None  # None: no numbering (no event yet, or the server lost it)
    last_id: int
    present: frozenset[str]  # the member tokens asked about that are members


class _Inbox:
    """The Pub/Sub callback: one `send_nowait`, overflow counted, never raising."""

    def __init__(self, size: int) -> None:
        self.send, self.receive = trio.open_memory_channel[tuple[str, bytes]](size)
        self.received = 0
        self.overflowed = 0
        self.overflowed_rooms: set[str] = set()

    def __call__(self, message: PubSubMsg, context: object) -> None:
        room = keys.room_of_channel(message.channel)
        if room is None:
            return
        line = message.message
        if isinstance(line, str):
            line = line.encode("utf-8")
        try:
            self.send.send_nowait((room, line))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self.overflowed += 1
            self.overflowed_rooms.add(room)
        else:
            self.received += 1


def _reason(error: BaseException, url: BackplaneUrl) -> str:
    """One line for a glide error, without the password even if glide quoted it."""
    text = " ".join(str(error).split()) or type(error).__name__
    if url.password:
        text = text.replace(url.password, "***")
    return f"{type(error).__name__}: {text[:300]}"


def _configuration(url: BackplaneUrl, node: str, inbox: _Inbox | None) -> GlideClientConfiguration:
    credentials = None
    if url.password is not None:
        credentials = ServerCredentials(password=url.password, username=url.username)
    pubsub = None
    if inbox is not None:
        pubsub = GlideClientConfiguration.PubSubSubscriptions(
            channels_and_patterns={}, callback=inbox, context=None
        )
    return GlideClientConfiguration(
        [NodeAddress(url.host, url.port)],
        use_tls=url.tls,
        credentials=credentials,
        database_id=url.db,
        client_name=f"trio-chat-{node}" + ("-sub" if inbox else ""),
        request_timeout=REQUEST_TIMEOUT_MS,
        pubsub_subscriptions=pubsub,
        # After a lost connection glide reconnects by itself, waiting 0.1 s,
        # 0.2 s, ... up to 3.2 s between attempts (x2 each time, capped after
        # five), with 20 % jitter so that many processes do not retry in step.
        reconnect_strategy=BackoffStrategy(
            num_of_retries=RECONNECT_STEPS,
            factor=RECONNECT_FIRST_MS,
            exponent_base=2,
            jitter_percent=RECONNECT_JITTER_PERCENT,
        ),
        # glide 2.6 connects inside `create` by a blocking call on the Trio
        # thread (up to 2 s when no server answers, deaf to cancellation);
        # lazily, the first request connects, and that wait is cancellable.
        lazy_connect=True,
    )


async def _connect(config: GlideClientConfiguration, url: BackplaneUrl) -> GlideClient:
    """A client that has connected (glide's lazy connect, forced by a PING)."""
    try:
        client = await GlideClient.create(config)
    except GlideError as error:
        raise BackplaneError(f"cannot connect to {url}: {_reason(error, url)}") from None
    try:
        await client.custom_command(["PING"])
    except GlideError as error:
        await _close(client)
        raise BackplaneError(f"cannot connect to {url}: {_reason(error, url)}") from None
    except BaseException:
        await _close(client)
        raise
    return client


async def _close(client: GlideClient) -> None:
    # Also on the way out of a cancelled scope: shielded, and bounded.
    with trio.move_on_after(CLOSE_WAIT, shield=True):
        # A client whose connection is gone has nothing left to release.
        with contextlib.suppress(GlideError):
            await client.close()


@asynccontextmanager
async def open_backplane(
    url: BackplaneUrl | str,
    node: str,
    *,
    history_limit: int = HISTORY_LIMIT,
    channel_size: int = CHANNEL_SIZE,
) -> AsyncIterator[Backplane]:
    """Connect to the backplane's server as process `node`.

    `node` names this process in keys and member tokens, and must be unique
    among the processes sharing the server for as long as its members may be
    remembered (a random suffix per run does it). Closes both clients, and
    the events channel, on exit.

    Raises:
        BackplaneUrlError: `url` is a malformed string.
        BackplaneError: the server cannot be reached or refuses the scripts.
    """
    if isinstance(url, str):
        url = parse_backplane_url(url)
    keys.validate_node(node)
    # glide's core writes its own colored lines to the console (a refused
    # connection, each retry): our errors already say what failed, once, in
    # our log format. At debug level its warnings are worth seeing too.
    Logger.set_logger_config(LogLevel.WARN if log.isEnabledFor(logging.DEBUG) else LogLevel.OFF)
    inbox = _Inbox(channel_size)
    with inbox.send, inbox.receive:
        commands = await _connect(_configuration(url, node, None), url)
        try:
            subscriber = await _connect(_configuration(url, node, inbox), url)
            try:
                backplane = Backplane(
                    url,
                    node,
                    commands=commands,
                    subscriber=subscriber,
                    inbox=inbox,
                    history_limit=history_limit,
                )
                await backplane.load_scripts()
                yield backplane
            finally:
                await _close(subscriber)
        finally:
            await _close(commands)


class Backplane:
    """One process's view of the shared rooms; made by `open_backplane`.

    Member tokens (`keys.member_token(node, n)`) name members on the server;
    lines are events encoded with the placeholder id 0 (for example
    `protocol.message_event(0, room, name, text, ts, ref=ref)`): the scripts
    put each event's id in.
    """

    def __init__(
        self,
        url: BackplaneUrl,
        node: str,
        *,
        commands: GlideClient,
        subscriber: GlideClient,
        inbox: _Inbox,
        history_limit: int,
    ) -> None:
        self.url = url
        self.node = node
        self.history_limit = history_limit
        self._commands = commands
        self._subscriber = subscriber
        self._inbox = inbox
        self._shas = {name: scripts.sha1(source) for name, source in scripts.SCRIPTS.items()}
        self._rooms: set[str] = set()
        self._round_trips = 0
        self._scripts = 0
        self._script_loads = 0
        self._lease_renewals = 0
        self._lease_failures = 0
        self._leases_lost = 0

    @property
    def events(self) -> trio.MemoryReceiveChannel[tuple[str, bytes]]:
        """`(room, line)` of every event published in a subscribed room, in the
        server's order. It may still hold events of a room just unsubscribed."""
        return self._inbox.receive

    # -- requests ----------------------------------------------------------

    async def _exec(self, batch: Batch) -> list[Any]:
        self._round_trips += 1
        try:
            results = await self._commands.exec(batch, raise_on_error=False)
        except GlideError as error:
            raise BackplaneError(_reason(error, self.url)) from None
        assert results is not None  # only a WATCHed transaction returns None
        return results

    async def _command(self, *args: str | bytes) -> Any:
        self._round_trips += 1
        try:
            return await self._commands.custom_command(list(args))
        except GlideError as error:
            raise BackplaneError(_reason(error, self.url)) from None

    async def load_scripts(self) -> None:
        """Load the scripts into the server's cache (again after a restart)."""
        batch = Batch(is_atomic=False)
        for source in scripts.SCRIPTS.values():
            batch.custom_command(["SCRIPT", "LOAD", source])
        self._script_loads += 1
        for result in await self._exec(batch):
            if isinstance(result, GlideError):
                raise BackplaneError(f"cannot load the scripts: {_reason(result, self.url)}")

    def _batch(self, calls: Sequence[Call], before: Sequence[list[Arg]] = ()) -> Batch:
        batch = Batch(is_atomic=False)
        for command in before:
            batch.custom_command(command)
        for call in calls:
            batch.custom_command(
                ["EVALSHA", self._shas[call.script], str(len(call.keys)), *call.keys, *call.args]
            )
        self._scripts += len(calls)
        return batch

    async def _run(self, calls: Sequence[Call], before: Sequence[list[Arg]] = ()) -> list[Any]:
        """The replies of `calls`, sent as one pipeline after the commands `before`.

        A server that lost its script cache (a restart) answers NOSCRIPT: the
        scripts are loaded again and those calls sent once more, in order.
        """
        replies = await self._exec(self._batch(calls, before))
        for reply in replies[: len(before)]:
            if isinstance(reply, GlideError):
                raise BackplaneError(_reason(reply, self.url))
        results = replies[len(before) :]
        missing = [i for i, result in enumerate(results) if _is_noscript(result)]
        if missing:
            await self.load_scripts()
            again = await self._exec(self._batch([calls[i] for i in missing]))
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        for result in results:
            if isinstance(result, GlideError):
                raise BackplaneError(_reason(result, self.url))
        return results

    # -- state changes -------------------------------------------------------

    async def join(
        self,
        room: str,
        token: str,
        name: str,
        line: bytes,
        *,
        since: int | None = None,
        client_epoch: str | None = None,
        replay_limit: int = REPLAY_LIMIT,
        resume: str | None = None,
        secret: str | None = None,
    ) -> Admitted | NameTaken:
        """Admit member `token` to `room` as `name`, unless a look-alike name is
        held; or, if `resume` is the secret of the member named `name`, give
        that member's place to `token` (`Admitted.resumed`).

        `line` is the member's `join` event with id 0. On success the join is
        numbered, stored and published, and the reply holds the welcome's
        snapshot: id, epoch, members and replay (`RoomHistory.replay_for_join`
        rules with `since` and the client's `epoch`; `replay_for_resume` on a
        resume, which makes no event). `secret` is what a later resume of this
        member must give (None: it cannot resume). The room is recorded as
        one of this node's, for a reaper, in the same round trip.
        """
        call = scripts.join_call(
            room,
            token,
            name,
            line,
            name_keys=protocol.name_keys(name),
            candidate=_candidate(),
            history_limit=self.history_limit,
            replay_limit=replay_limit,
            since=since,
            client_epoch=client_epoch,
            resume=resume,
            secret=secret,
        )
        (reply,) = await self._run([call], before=[["SADD", keys.node_rooms(self.node), room]])
        return scripts.parse_join_reply(reply)

    async def say_many(
        self, posts: Sequence[Post], notices: Sequence[tuple[str, bytes]] = ()
    ) -> list[int | Resend | None]:
        """Number, store and publish `posts`, in order, in one round trip.

        `notices` go out first in the same round trip: `(room, line)` of
        unnumbered events (`protocol.typing_event`), published as they are on
        the room's channel: no id, not stored, lost to whoever is not
        subscribed. Subscribers get them on `events` like any line
        (`scripts.event_id_of` tells them apart).

        One `SAY_MANY` per room (per `scripts.MAX_POSTS_PER_CALL` posts of a
        room), all in one pipeline: a room's accepted posts take consecutive
        ids in the order given. Returns each post's event id, or None for a
        post whose token is not a member of its room (reaped while this
        process was cut off, or lost with a flushed server): its session
        should end, for its client to join again; or `Resend` for a post whose
        `ref` its member used within `DEDUPE_WINDOW` for an event still in the
        log: stored once, that event goes back to its sender alone.
        Several calls may be in flight
        at once (from several tasks); each room's ids then follow the order
        in which the server ran them.

        Raises:
            BadTemplate: a notice is a numbered event (it would look like a gap).
        """
        for _room, line in notices:
            if scripts.event_id_of(line) is not None:
                raise scripts.BadTemplate("a notice carries no id")
        publishes: list[list[Arg]] = [
            ["PUBLISH", keys.channel(room), line] for room, line in notices
        ]
        if not posts:
            if publishes:
                await self._run([], before=publishes)
            return []
        candidate = _candidate()
        groups = scripts.group_posts(posts)
        calls = [
            scripts.say_many_call(
                posts[group[0]].room,
                [posts[i] for i in group],
                candidate=candidate,
                history_limit=self.history_limit,
            )
            for group in groups
        ]
        ids: list[int | Resend | None] = [None] * len(posts)
        for group, reply in zip(groups, await self._run(calls, before=publishes), strict=True):
            for i, event_id in zip(
                group, scripts.parse_say_many_reply(reply, len(group)), strict=True
            ):
                ids[i] = event_id
        return ids

    async def hold(self, room: str, token: str, reason: protocol.LeaveReason) -> bool:
        """Keep member `token` in `room` after its connection dropped for
        `reason`, until it resumes or leaves (with that reason); False if it
        is no longer a member there."""
        (reply,) = await self._run([scripts.hold_call(room, token, reason.value)])
        return bool(reply)

    async def leave(self, room: str, token: str, name: str, line: bytes) -> int | None:
        """Remove member `token` (named `name`) from `room`, announcing it with
        `line` (its `leave` event with id 0). Returns the event's id, or None if
        it was not a member: a leave happens once, whoever races to do it."""
        call = scripts.leave_call(
            room,
            token,
            line,
            name_keys=protocol.name_keys(name),
            candidate=_candidate(),
            history_limit=self.history_limit,
        )
        (reply,) = await self._run([call])
        return scripts.parse_leave_reply(reply)

    # -- reads ---------------------------------------------------------------

    async def read_range(self, room: str, after_id: int, up_to_id: int) -> list[StoredEvent]:
        """The retained events of `room` with `after_id < id <= up_to_id`, oldest
        first: a gap fill. Fewer than asked when the log no longer holds them."""
        if up_to_id <= after_id:
            return []
        reply = await self._command("XRANGE", keys.log(room), f"{after_id + 1}-0", f"{up_to_id}-0")
        return scripts.parse_range(reply)

    async def read_page(
        self, room: str, before: int | None, limit: int
    ) -> tuple[list[StoredEvent], bool]:
        """The newest `limit` retained events of `room` with ids below `before`
        (None: below none), oldest first; and whether older ones are retained.
        One `XREVRANGE` of `limit + 1` entries: the extra one tells `more`."""
        if before is not None and before <= 1:
            return [], False
        newest = "+" if before is None else f"{before - 1}-0"
        reply = await self._command(
            "XREVRANGE", keys.log(room), newest, "-", "COUNT", str(limit + 1)
        )
        events = scripts.parse_range(reply)  # oldest first
        more = len(events) > limit
        return (events[1:] if more else events), more

    async def room_states(self, tokens: Mapping[str, Sequence[str]]) -> dict[str, RoomState]:
        """Where each room's numbering stands, and which of the member `tokens`
        given for it the server still holds: one round trip for all rooms.
        What a process checks after the server may have lost its state."""
        rooms = sorted(tokens)
        if not rooms:
            return {}
        batch = Batch(is_atomic=False)
        for room in rooms:
            batch.custom_command(["GET", keys.epoch(room)])
            batch.custom_command(["GET", keys.seq(room)])
            batch.custom_command(["HMGET", keys.members(room), "", *tokens[room]])
        replies = await self._exec(batch)
        for reply in replies:
            if isinstance(reply, GlideError):
                raise BackplaneError(_reason(reply, self.url))
        states: dict[str, RoomState] = {}
        for i, room in enumerate(rooms):
            epoch, seq, held = replies[3 * i : 3 * i + 3]
            present = frozenset(
                token for token, record in zip(tokens[room], held[1:], strict=True) if record
            )
            states[room] = RoomState(
                None if epoch is None else bytes(epoch).decode("utf-8"),
                0 if seq is None else int(seq),
                present,
            )
        return states

    async def epoch(self, room: str) -> str | None:
        """The name of `room`'s numbering; None before its first event."""
        reply = await self._command("GET", keys.epoch(room))
        return None if reply is None else bytes(reply).decode("utf-8")

    async def last_id(self, room: str) -> int:
        """The id of `room`'s last event (0 before its first)."""
        reply = await self._command("GET", keys.seq(room))
        return 0 if reply is None else int(reply)

    # -- subscriptions -------------------------------------------------------

    async def subscribe(self, room: str) -> None:
        """Receive `room`'s events on `events` from now on (once the server confirms)."""
        try:
            await self._subscriber.subscribe({keys.channel(room)}, timeout_ms=0)
        except GlideError as error:
            raise BackplaneError(_reason(error, self.url)) from None
        self._rooms.add(room)

    async def unsubscribe(self, room: str) -> None:
        """Stop receiving `room`'s events (some may still be queued on `events`)."""
        self._rooms.discard(room)
        try:
            await self._subscriber.unsubscribe({keys.channel(room)}, timeout_ms=0)
        except GlideError as error:
            raise BackplaneError(_reason(error, self.url)) from None

    def take_overflowed_rooms(self) -> set[str]:
        """The rooms that lost events to a full `events` channel since the last
        call: read their gaps from the log (`read_range`)."""
        rooms, self._inbox.overflowed_rooms = self._inbox.overflowed_rooms, set()
        return rooms

    # -- leases and reaping --------------------------------------------------

    async def renew_lease(self, ttl: float = LEASE_TTL) -> bool:
        """Set this node's lease to expire `ttl` seconds from now; False if it
        had expired (or the server lost it) since the last renewal."""
        try:
            previous = await self._command(
                "SET", keys.lease(self.node), self.node, "PX", str(math.ceil(ttl * 1000)), "GET"
            )
        except BackplaneError:
            self._lease_failures += 1
            raise
        self._lease_renewals += 1
        lost = previous is None and self._lease_renewals > 1
        self._leases_lost += lost
        return not lost

    async def dead_nodes(self, rooms: Iterable[str]) -> set[str]:
        """The other nodes holding members in `rooms` whose lease is gone."""
        rooms = list(rooms)
        if not rooms:
            return set()
        batch = Batch(is_atomic=False)
        for room in rooms:
            batch.custom_command(["HKEYS", keys.members(room)])
        nodes: set[str] = set()
        for tokens in await self._exec(batch):
            if isinstance(tokens, GlideError):
                raise BackplaneError(_reason(tokens, self.url))
            nodes.update(keys.node_of_token(bytes(token).decode()) for token in tokens)
        nodes.discard(self.node)
        ordered = sorted(nodes)
        if not ordered:
            return set()
        batch = Batch(is_atomic=False)
        for node in ordered:
            batch.custom_command(["EXISTS", keys.lease(node)])
        found = await self._exec(batch)
        return {node for node, alive in zip(ordered, found, strict=True) if alive == 0}

    async def reap(self, node: str, ts: str) -> list[int]:
        """Make the members of dead `node` leave, each once: reason `timeout`,
        or for a held member, the reason its connection dropped for.

        Does nothing if `node`'s lease is alive, or if another process was
        elected to reap it (`SET NX` on its reaper key). Returns the ids of the
        leave events this call published.
        """
        if node == self.node or await self._command("EXISTS", keys.lease(node)):
            return []
        elected = await self._command(
            "SET", keys.reaper(node), self.node, "NX", "PX", str(REAPER_TTL_MS)
        )
        if elected is None:
            return []
        rooms = sorted(
            bytes(room).decode() for room in await self._command("SMEMBERS", keys.node_rooms(node))
        )
        calls: list[Call] = []
        if rooms:
            batch = Batch(is_atomic=False)
            for room in rooms:
                batch.custom_command(["HGETALL", keys.members(room)])
                batch.custom_command(["HGETALL", keys.held(room)])
            replies = await self._exec(batch)
            for reply in replies:
                if isinstance(reply, GlideError):
                    raise BackplaneError(_reason(reply, self.url))
            for i, room in enumerate(rooms):
                members, held = replies[2 * i], dict(_pairs(replies[2 * i + 1]))
                for token, record in sorted(_pairs(members)):
                    if keys.node_of_token(token) != node:
                        continue
                    # A held member leaves for the reason its connection
                    # dropped; the others went with their process.
                    reason = _leave_reason(held.get(token))
                    name = scripts.member_name(record)
                    line = protocol.leave_event(0, room, name, ts, reason)
                    calls.append(
                        scripts.leave_call(
                            room,
                            token,
                            line,
                            name_keys=protocol.name_keys(name),
                            candidate=_candidate(),
                            history_limit=self.history_limit,
                        )
                    )
        replies = await self._run(calls) if calls else []
        await self._command("DEL", keys.node_rooms(node))
        ids = (scripts.parse_leave_reply(reply) for reply in replies)
        return [event_id for event_id in ids if event_id is not None]

    def statistics(self) -> BackplaneStatistics:
        return BackplaneStatistics(
            subscribed_rooms=len(self._rooms),
            received=self._inbox.received,
            overflowed=self._inbox.overflowed,
            round_trips=self._round_trips,
            scripts=self._scripts,
            script_loads=self._script_loads,
            lease_renewals=self._lease_renewals,
            lease_failures=self._lease_failures,
            leases_lost=self._leases_lost,
        )


def _candidate() -> str:
    """A new epoch, used only if this call starts a room's numbering."""
    return secrets.token_hex(8)


def _leave_reason(held: bytes | None) -> protocol.LeaveReason:
    """The leave reason a `held` hash value names; `timeout` if none (or unknown)."""
    try:
        return protocol.LeaveReason(held.decode("ascii")) if held else protocol.LeaveReason.TIMEOUT
    except ValueError:
        return protocol.LeaveReason.TIMEOUT


def _is_noscript(result: object) -> bool:
    # The server says NOSCRIPT; glide 2.6 words it as its own `NoScriptError`.
    text = str(result)
    return isinstance(result, GlideError) and ("NOSCRIPT" in text or "NoScriptError" in text)


def _pairs(reply: object) -> list[tuple[str, bytes]]:
    """An `HGETALL` reply (a map under RESP3) as (field, value) pairs."""
    if isinstance(reply, dict):
        return [(bytes(k).decode(), bytes(v)) for k, v in reply.items()]
    assert isinstance(reply, list)
    return [(bytes(reply[i]).decode(), bytes(reply[i + 1])) for i in range(0, len(reply), 2)]
