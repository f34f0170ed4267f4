"""One client connection after the upgrade: its reader and writer tasks.

Each session runs in a nursery of its own: the reader as its body, the writer
as its one child task.

* the reader turns bytes into WebSocket events (wsproto) and client frames
  into commands (core/protocol.py), answers errors, enforces the size and rate
  limits, and forwards commands to the hub; its read timeout also keeps the
  session's time: the hello deadline, the pong deadline, and when to ping;
* the writer sends whatever the outbox holds (pings, pongs, then the events
  as one frame) whenever the hub could not write it straight away (see
  `flush_nowait`; that and the 101 written as the session starts are the
  only other writes, made only while the writer task is parked or not yet
  started), and sends the close frame when the session ends.

Every byte goes through the session's `SocketWriter` (socket_writer.py),
which checks in code that a direct write never overlaps the writer's
`send_all` and reports a broken connection as Trio's stream errors: a reset
found by the hub's direct write ends the session (leave reason `quit`).

Whoever decides the session is over (either task, the hub dropping a slow
client, the server shutting down) calls `_end` once: the first reason wins.
With a close code, the reader stops and the writer sends the close frame,
then waits briefly for the client's answer so that closing the socket does
not reset the connection under an unread close frame. Without one (the peer
is gone, or unresponsive), both tasks are cancelled at once. Afterwards the
socket is closed and the hub is told, shielded and bounded, so the member's
`leave` is emitted exactly once whatever ended the session.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time

import trio
from wsproto.connection import Connection, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage
from wsproto.utilities import LocalProtocolError

from ..config import Settings
from ..core import auth, protocol
from ..core.limits import ErrorBudget, Throttle, TokenBucket
from ..core.protocol import (
    CloseCode,
    ErrorCode,
    Hello,
    HistoryRequest,
    LeaveReason,
    ProtocolError,
    RefusalReason,
    Say,
    Typing,
    Unauthorized,
)
from .hub import HubFront, Unavailable
from .outbox import Outbox
from .socket_writer import SocketWriter
from .traffic import Flow, Traffic

log = logging.getLogger(__name__)

# Reads are at least this large whatever READ_BUFFER_SIZE says: fewer,
# larger reads cost less per byte, and a read never waits to fill up.
_MIN_READ = 16384
_TYPING_INTERVAL = 1.0
# Every fragment of a message but the last counts this many bytes toward the
# maximum message size on top of its payload: a message cut into tiny or empty
# fragments costs the server a Python object and a parse per fragment, so
# without it a peer could hold megabytes and CPU under a 64 KiB limit. At the
# defaults a message may have up to 256 fragments.
FRAME_COST = 256
# Frames parsed from one read before the reader lets other tasks run.
_EVENTS_PER_TURN = 64
# How long a closing session waits for the client's answering close frame,
# so that the socket is not reset under an unread close frame: a client that
# answers at all answers in milliseconds.
_CLOSE_ANSWER_WAIT = 2.0
# Closes after which the peer's frames cannot be parsed any more, so there
# is no answering close frame to wait for (RFC 6455 7.1.7).
_FAILED: frozenset[int] = frozenset({CloseCode.PROTOCOL_ERROR, CloseCode.INVALID_PAYLOAD})
_CLOSE_REASONS: dict[int, str] = {
    CloseCode.GOING_AWAY: "server shutting down",
    CloseCode.UNSUPPORTED_DATA: "binary frames are not supported",
    CloseCode.POLICY_VIOLATION: "policy violation",
    CloseCode.MESSAGE_TOO_BIG: "message too big",
    CloseCode.INTERNAL_ERROR: "internal server error",
    CloseCode.SERVICE_RESTART: "service restart: join again",
    CloseCode.TRY_AGAIN_LATER: "too slow: send queue overflowed",
}


# Client close codes that mean "gone for now", not "leaving": a page being
# unloaded or reloaded (1001). Any other close from the client is a goodbye.
_AWAY: frozenset[int | None] = frozenset({None, CloseCode.GOING_AWAY})


def _dropped(code: int | None, reason: LeaveReason) -> bool:
    """Whether a session that ended with close `code` (None: no close frame)
    and leave `reason` dropped rather than left: its member's seat is then
    held for the presence grace period, for it to resume.

    A connection that vanished or timed out dropped, as did every member at
    a server shutdown; a client that closed with a goodbye (1000, or no
    status) left, as did one dropped for an error or for being slow.
    """
    if reason in (LeaveReason.TIMEOUT, LeaveReason.SHUTDOWN):
        return True
    return reason is LeaveReason.QUIT and code in _AWAY


# The close reason of a connection whose token expired (and the `error` before it).
TOKEN_EXPIRED = "token expired: reconnect with a new token"  # noqa: S105 (no password)


class Session:
    """A connected WebSocket client, from upgrade to close."""

    # Thousands of these live at once: slots keep each one small.
    __slots__ = (
        "_bytes_in",
        "_close_text",
        "_ending",
        "_errors",
        "_frames_in",
        "_hello_deadline",
        "_hub",
        "_in_hub",
        "_joined",
        "_label",
        "_message",
        "_message_size",
        "_next_ping",
        "_outbox",
        "_peer",
        "_pong_deadline",
        "_rate",
        "_reader_done",
        "_reader_finished",
        "_reader_scope",
        "_settings",
        "_started",
        "_stream",
        "_tasks",
        "_token_deadline",
        "_token_expired",
        "_traffic",
        "_typing",
        "_writes",
        "_ws",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        ws: Connection,
        hub: HubFront,
        settings: Settings,
        *,
        hello_deadline: float,
        label: str,
        preface: bytes = b"",
        traffic: Traffic | None = None,
    ) -> None:
        self._stream = stream
        self._peer = label  # the client's address; `_label` gains its name and room
        self._traffic = Traffic() if traffic is None else traffic
        self._frames_in = 0
        self._bytes_in = 0
        # Raw writes are only for plain TCP (never, say, a TLS stream).
        self._writes = SocketWriter(stream)
        self._ws = ws
        self._hub = hub
        self._settings = settings
        self._label = label
        self._outbox = Outbox(settings.send_queue_size)
        now = trio.current_time()
        self._started = now
        self._hello_deadline = hello_deadline
        self._pong_deadline = now + settings.pong_wait
        self._next_ping = now + settings.ping_period
        # Token mode: when the token stops admitting this member (Trio time,
        # set at the hello from the token's `exp` and the wall clock then).
        self._token_deadline = math.inf
        self._token_expired = False  # its seat is then held, for a resume
        self._rate = TokenBucket(settings.rate_limit, settings.rate_burst, now)
        self._typing = Throttle(_TYPING_INTERVAL)
        self._errors: ErrorBudget | None = None  # most clients never need one
        self._joined: protocol.Hello | None = None
        self._in_hub = False  # a leave must be sent when the session ends
        self._message: list[str] = []
        self._message_size = 0
        self._ending: tuple[int | None, LeaveReason] | None = None
        self._close_text = ""
        self._reader_scope = trio.CancelScope()
        self._tasks: trio.CancelScope | None = None  # the session nursery's scope
        self._reader_finished = False
        self._reader_done: trio.Event | None = None  # made only if the writer waits
        if preface:  # the upgrade's 101: before any frame
            self._outbox.put_raw(preface)

    # -- what the server reads (metrics, logs, /debug/tasks) ------------------

    def flow(self) -> Flow:
        """Frames and bytes each way so far (upgrade response included in bytes)."""
        return Flow(self._frames_in, self._bytes_in, self._outbox.frames, self._writes.written)

    @property
    def queued(self) -> int:
        """Live events waiting in the send queue."""
        return len(self._outbox)

    def describe(self) -> str:
        """Who this session serves, for people: address, then name and room once joined."""
        joined = self._joined
        where = f" {joined.name!r} in {joined.room!r}" if joined is not None else " (no hello yet)"
        ending = f", ending ({self._ending[1]})" if self._ending is not None else ""
        return f"client {self._peer}{where}, {len(self._outbox)} queued{ending}"

    # -- Peer: what the hub calls -------------------------------------------

    def deliver_nowait(self, line: bytes) -> bool:
        return self._outbox.put_nowait(line)

    def deliver_welcome(self, lines: list[bytes]) -> None:
        self._outbox.put_front(lines)

    def flush_nowait(self) -> None:
        """Write what the outbox holds now, without a task switch if possible.

        The hub calls this once per burst. While the writer task is parked it
        is not in the middle of a write, so the batch can go straight to the
        socket (which trio keeps non-blocking); whatever the kernel does not
        take is handed to the writer task, which waits for the socket. Any
        other case (a write in progress, closing, a non-socket stream) simply
        wakes the writer. A broken connection ends the session at once.
        """
        outbox = self._outbox
        if not outbox.parked or self._ending is not None or not self._writes.direct:
            outbox.wake()
            return
        if not self._write_now():
            self._end(None, LeaveReason.QUIT)

    def _write_now(self) -> bool:
        """Write what is queued straight to the socket and hand the rest to
        the writer task; False if the connection is broken. Only while that
        task is not writing (parked, or not yet started): `SocketWriter`
        raises otherwise."""
        outbox = self._outbox
        data = outbox.take_wire()
        if not data:
            return True
        try:
            written = self._writes.send_nowait(data)
        except trio.BrokenResourceError:
            return False
        if written < len(data):
            outbox.put_raw(data[written:])
        return True

    def drop(self, code: CloseCode, reason: LeaveReason, text: str = "") -> None:
        """End the session with close `code` (also used for shutdown)."""
        if code is CloseCode.TRY_AGAIN_LATER and self._ending is None:
            log.info("%s: send queue full, dropping", self._label)
        self._end(code, reason, text)

    # -- lifecycle -----------------------------------------------------------

    async def run(self) -> None:
        """Serve the client until the session ends; never raises (but Cancelled)."""
        try:
            # The 101, before the writer starts: no task switch.
            if self._writes.direct and not self._write_now():
                self._ending = (None, LeaveReason.QUIT)  # gone before it started
                return
            async with trio.open_nursery() as nursery:
                self._tasks = nursery.cancel_scope
                nursery.start_soon(self._writer, name=f"session writer {self._peer}")
                # The reader runs as the nursery's body, in the task that
                # accepted the connection: one task fewer per client, and
                # still cancelled together with the writer.
                await self._reader()
        finally:
            with trio.CancelScope(shield=True):
                # Before the descriptor is closed, and so before the kernel
                # can reuse its number for another client: no raw write
                # (`flush_nowait`) may use it after this.
                self._writes.close_nowait()
                await trio.aclose_forcefully(self._stream)
                code, reason = self._ending or (CloseCode.GOING_AWAY, LeaveReason.SHUTDOWN)
                if self._in_hub:
                    # If the hub has already stopped, there is nobody left to tell.
                    with (
                        trio.move_on_after(self._settings.write_wait),
                        contextlib.suppress(trio.ClosedResourceError),
                    ):
                        # A member whose token expired is held like a dropped
                        # one: a new token and its resume secret take it back.
                        hold = self._token_expired or _dropped(code, reason)
                        await self._hub.leave(self, reason, hold=hold)
                self._log_end(code, reason)

    def _log_end(self, code: int | None, reason: LeaveReason) -> None:
        """One INFO line per connection as it ends (never any message text),
        and its counts added to the server's."""
        flow = self.flow()
        self._traffic.ended.add(flow)
        self._traffic.sessions_ended += 1
        duration = trio.current_time() - self._started
        joined = self._joined
        log.info(
            "%s: connection ended (%s, close %s) after %.3fs; "
            "in %d frames, %d bytes; out %d frames, %d bytes",
            self._label,
            reason,
            "none" if code is None else code,
            duration,
            flow.frames_in,
            flow.bytes_in,
            flow.frames_out,
            flow.bytes_out,
            extra={
                "event": "connection_end",
                "client": self._peer,
                "member": None if joined is None else joined.name,
                "room": None if joined is None else joined.room,
                "duration_s": round(duration, 3),
                "frames_in": flow.frames_in,
                "bytes_in": flow.bytes_in,
                "frames_out": flow.frames_out,
                "bytes_out": flow.bytes_out,
                "reason": str(reason),
                "close_code": code,
            },
        )

    def _end(self, code: int | None, reason: LeaveReason, text: str = "") -> None:
        """Decide how the session ends; only the first decision counts."""
        if self._ending is not None:
            return
        self._ending = (code, reason)
        if code is not None:
            self._close_text = text or _CLOSE_REASONS.get(code, "")
        if code is None:
            assert self._tasks is not None  # only the reader and writer end this way
            self._tasks.cancel()
        else:
            self._reader_scope.cancel()
            self._outbox.kick()

    # -- reader --------------------------------------------------------------

    async def _reader(self) -> None:
        try:
            with self._reader_scope:
                await self._read_frames()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._end(None, LeaveReason.QUIT)
        except Exception:
            log.exception("%s: unexpected error while reading", self._label)
            self._end(CloseCode.INTERNAL_ERROR, LeaveReason.ERROR)
        finally:
            self._reader_finished = True
            if self._reader_done is not None:
                self._reader_done.set()

    def _next_timer(self) -> float:
        """The reader also keeps the session's time: pings and deadlines."""
        due = min(self._next_ping, self._pong_deadline)
        return min(due, self._token_deadline) if self._joined else min(due, self._hello_deadline)

    async def _read_frames(self) -> None:
        read_size = max(self._settings.read_buffer_size, _MIN_READ)
        while True:
            # Events first: frames that came in the same packet as the
            # upgrade request (a `hello` right behind it) are already parsed.
            for count, event in enumerate(self._ws.events(), 1):
                await self._on_event(event)
                if self._ending is not None:
                    return
                if count % _EVENTS_PER_TURN == 0:
                    # A read full of tiny frames is a lot of parsing: let
                    # other clients run between slices of it.
                    await trio.sleep(0)  # noqa: ASYNC115 (trio.lowlevel: debug module only)
            with trio.move_on_at(self._next_timer()) as timer:
                data = await self._stream.receive_some(read_size)
            if timer.cancelled_caught:
                if self._on_timer():
                    return
                continue
            if not data:
                self._end(None, LeaveReason.QUIT)
                return
            self._bytes_in += len(data)
            self._ws.receive_data(bytes(data))  # a no-op for bytes; trio types bytearray too

    def _on_timer(self) -> bool:
        """Ping, or end the session on a deadline; True if it ended."""
        now = trio.current_time()
        if now >= self._pong_deadline:
            log.info("%s: no pong within the pong wait, dropping", self._label)
            self._traffic.ping_timeouts += 1
            self._end(None, LeaveReason.TIMEOUT)
            return True
        if not self._joined and now >= self._hello_deadline:
            log.info("%s: no hello within the handshake timeout", self._label)
            self._end(CloseCode.POLICY_VIOLATION, LeaveReason.ERROR, "no hello in time")
            return True
        if self._joined and now >= self._token_deadline:
            log.info("%s: token expired, closing", self._label)
            self._traffic.token_expiries += 1
            self._token_expired = True
            # Said as an event too, for clients that read events, not close reasons.
            self._outbox.put_nowait(protocol.error_event(ErrorCode.UNAUTHORIZED, TOKEN_EXPIRED))
            self._end(CloseCode.POLICY_VIOLATION, LeaveReason.ERROR, TOKEN_EXPIRED)
            return True
        if now >= self._next_ping:
            self._outbox.put_ping(self._ws.send(Ping(b"")))
            self._next_ping = now + self._settings.ping_period
        return False

    async def _on_event(self, event: Event) -> None:
        if isinstance(event, TextMessage):
            # wsproto may hand a frame over in parts (as its bytes arrive):
            # a frame counts once, with its last part.
            self._frames_in += event.frame_finished
            self._message_size += (
                len(event.data) if event.data.isascii() else len(event.data.encode("utf-8"))
            )
            if event.frame_finished and not event.message_finished:
                self._message_size += FRAME_COST
            if self._message_size > self._settings.max_message_size:
                log.info("%s: message over %d bytes", self._label, self._message_size)
                self._end(CloseCode.MESSAGE_TOO_BIG, LeaveReason.ERROR)
                return
            self._message.append(event.data)
            if event.message_finished:
                text = "".join(self._message)
                self._message.clear()
                self._message_size = 0
                await self._on_message(text)
            return
        self._frames_in += 1  # a control frame, or a binary one (which ends the session)
        if isinstance(event, BytesMessage):
            log.info("%s: binary frame", self._label)
            self._end(CloseCode.UNSUPPORTED_DATA, LeaveReason.ERROR)
        elif isinstance(event, Ping):
            self._outbox.put_pong(self._ws.send(event.response()))
        elif isinstance(event, Pong):
            self._pong_deadline = trio.current_time() + self._settings.pong_wait
        elif isinstance(event, CloseConnection):
            if self._ws.state is ConnectionState.REMOTE_CLOSING:
                # Echo the client's code, as RFC 6455 5.5.1 suggests.
                self._end(event.code, LeaveReason.QUIT, event.reason or "")
            else:
                # wsproto could not parse the stream (bad framing, bad UTF-8).
                log.info("%s: protocol error: %s", self._label, event.reason)
                self._end(event.code, LeaveReason.ERROR, event.reason or "")

    async def _on_message(self, text: str) -> None:
        try:
            command = protocol.parse_command(
                text, joined=self._joined is not None, token_mode=self._settings.auth is not None
            )
        except Unauthorized as refusal:
            self._unauthorized(refusal)
            return
        except ProtocolError as error:
            self._refuse(error)
            return
        now = trio.current_time()
        if isinstance(command, Hello):
            await self._join(command)
        elif isinstance(command, Say | HistoryRequest):  # a page costs what a message does
            if self._rate.take(now):
                await self._hub.say(self, command)
            else:
                self._refuse(ProtocolError(ErrorCode.RATE_LIMITED, "slow down", command.ref))
        elif isinstance(command, Typing) and self._typing.allow(now):
            await self._hub.say(self, command)

    def _admit(self, hello: Hello) -> tuple[Hello, float]:
        """The hello as the rooms should see it, and until when (Trio time)
        it may stay: token mode's checks, or open mode's reserved names.

        Raises:
            Unauthorized: token mode refuses the hello.
            ProtocolError: `name_taken`, for a reserved name in open mode.
        """
        verifier = self._settings.auth
        if verifier is None:
            if self._settings.reserved_names.holds(hello.name):
                self._traffic.refused_hellos[RefusalReason.RESERVED_NAME] += 1
                raise ProtocolError(
                    ErrorCode.NAME_TAKEN, f"the name {hello.name!r} is reserved", hello.ref
                )
            return hello, math.inf
        assert hello.token is not None  # the parser makes sure in token mode
        wall = time.time()  # once: the token's times are wall-clock times
        grant = verifier.verify(hello.token, wall, hello.ref)
        if hello.name and hello.name != grant.name:
            raise Unauthorized(
                RefusalReason.NAME_MISMATCH,
                f"the token is for {grant.name!r}: leave 'name' out, or send that",
                hello.ref,
            )
        if not auth.room_granted(grant.rooms, hello.room):
            raise Unauthorized(
                RefusalReason.ROOM_NOT_GRANTED,
                f"the token does not grant the room {hello.room!r}",
                hello.ref,
            )
        # The token itself stays here: nothing after this needs or keeps it.
        admitted = dataclasses.replace(hello, name=grant.name, token=None)
        return admitted, trio.current_time() + grant.closes_in(wall)

    def _unauthorized(self, refusal: Unauthorized) -> None:
        """Token mode's refusal: `unauthorized`, then close with 1008."""
        log.info("%s: hello refused (%s): %s", self._label, refusal.reason, refusal.message)
        self._traffic.refused_hellos[refusal.reason] += 1
        self._traffic.errors[refusal.code] += 1
        self._outbox.put_nowait(protocol.error_event(refusal.code, refusal.message, refusal.ref))
        self._end(CloseCode.POLICY_VIOLATION, LeaveReason.ERROR, "unauthorized")

    async def _join(self, hello: Hello) -> None:
        try:
            hello, token_deadline = self._admit(hello)
        except Unauthorized as refusal:
            self._unauthorized(refusal)
            return
        except ProtocolError as refusal:
            self._refuse(refusal)
            return
        self._in_hub = True
        try:
            joined = await self._hub.join(self, hello)
        except ProtocolError as refusal:
            self._in_hub = False
            if refusal.ref is None:  # the room refused it, without the frame at hand
                refusal.ref = hello.ref
            self._refuse(refusal)
            return
        except Unavailable as refusal:
            self._in_hub = False
            log.info("%s: cannot join now: %s", self._label, refusal)
            self._end(refusal.close_code, LeaveReason.ERROR, "try again later")
            return
        self._joined = hello
        self._token_deadline = token_deadline
        self._label = f"{self._label} {joined.name!r}@{joined.room}"
        log.debug("%s joined (id %d)", self._label, joined.join_id)

    def _refuse(self, error: ProtocolError) -> None:
        if self._errors is None:
            self._errors = ErrorBudget()
        if not self._errors.spend(trio.current_time()):
            log.info("%s: too many errors, closing", self._label)
            self._end(CloseCode.POLICY_VIOLATION, LeaveReason.ERROR, "too many errors")
            return
        log.debug("%s: error %s: %s", self._label, error.code, error.message)
        self._traffic.errors[error.code] += 1
        if self._outbox.put_nowait(protocol.error_event(error.code, error.message, error.ref)):
            self._outbox.wake()
        else:
            self._end(CloseCode.TRY_AGAIN_LATER, LeaveReason.SLOW)

    # -- writer --------------------------------------------------------------

    async def _writer(self) -> None:
        try:
            await self._write_frames()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._end(None, LeaveReason.QUIT)
        except Exception:
            log.exception("%s: unexpected error while writing", self._label)
            self._end(None, LeaveReason.ERROR)
        finally:
            assert self._tasks is not None
            self._tasks.cancel()

    async def _write_frames(self) -> None:
        write_wait = self._settings.write_wait
        while True:
            await self._outbox.wait()
            if self._ending is not None:
                break
            data = self._outbox.take_wire()
            # A scope only while writing, so an idle client holds none; most
            # batches do not come this way anyway (see `flush_nowait`).
            with trio.move_on_after(write_wait) as timer:
                await self._writes.send_all(data)
            if timer.cancelled_caught:
                log.info("%s: write took over the write wait, dropping", self._label)
                self._end(None, LeaveReason.SLOW)
                return
        # Woken to close; but if the peer is gone (no close code), the tasks
        # are being cancelled and there is nobody to send a close frame to.
        if self._ending is not None and self._ending[0] is not None:
            await self._close()

    async def _close(self) -> None:
        """Send what is queued and the close frame, then await the client's.

        Bounded by `WRITE_WAIT` as a whole, and the wait for the client's
        answer by `_CLOSE_ANSWER_WAIT`. Events queued for a client dropped
        as too slow are discarded: it resumes with `since` anyway, and its
        close frame should not wait behind them.
        """
        assert self._ending is not None
        code = self._ending[0]
        assert code is not None
        with trio.move_on_after(self._settings.write_wait):
            try:
                frame = self._ws.send(CloseConnection(code, self._close_text or None))
            except LocalProtocolError:
                return  # the close handshake already completed
            # Pending bytes may end a frame already partly written: first.
            if code == CloseCode.TRY_AGAIN_LATER:
                frame = self._outbox.take()[0] + frame
            else:
                frame = self._outbox.take_wire() + frame
            self._outbox.frames += 1  # the close frame
            await self._writes.send_all(frame)
            if not self._reader_finished:
                self._reader_done = trio.Event()
                await self._reader_done.wait()
            await self._await_close_answer(failed=code in _FAILED)

    async def _await_close_answer(self, *, failed: bool) -> None:
        """Read until the client's close frame, so that closing the socket
        does not reset the connection under our own unread close frame.

        After a framing error the client's frames cannot be parsed any more:
        then end our side at once (a FIN right behind the close frame, which
        tells the client the connection is over) and discard what it still
        sends until it closes too.
        """
        with trio.move_on_after(min(self._settings.write_wait, _CLOSE_ANSWER_WAIT)):
            read_size = max(self._settings.read_buffer_size, _MIN_READ)
            if failed:
                if isinstance(self._stream, trio.abc.HalfCloseableStream):
                    await self._stream.send_eof()
                while await self._stream.receive_some(read_size):
                    pass
                return
            # Unless that answered the client's close, its answer is to come.
            while self._ws.state is not ConnectionState.CLOSED:
                data = await self._stream.receive_some(read_size)
                if not data:
                    return
                self._bytes_in += len(data)
                self._ws.receive_data(bytes(data))
                for _ in self._ws.events():
                    pass  # only the close frame matters now; the state tracks it
