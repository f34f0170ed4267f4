"""`trio-chat connect`: the terminal client.

Theory of operation: one `_Client` per run holds everything that outlives a
connection: the highest event id shown (a `Transcript`), the message being
delivered (`_Outgoing`) and the queue of lines still to send. Each connection
says `hello` (with `since` = the highest id seen, once there is one, and the
`epoch` it belongs to), prints
the replay up to its own `join`, then runs two tasks in a nursery of its own:
the reader prints events, the writer sends lines. When either ends, the other
is cancelled, the WebSocket is closed, and the loop decides: done, give up, or
reconnect after an exponential backoff with jitter.

Invariants:

* Events are printed in arrival order, each numbered id at most once: an id
  at or below the highest shown is a repeat (replays overlap). A `welcome`
  with a new `epoch`, or whose own `join` id is not above the highest shown,
  means the room was renumbered (a restarted server lost its history), so
  counting restarts.
* Stop-and-wait: one `say` is in flight at a time, matched to its echo by a
  `ref` unique to this run. So lines arrive in the order typed even when one
  is rate limited and sent again, and after a reconnect the only message that
  can be in doubt is the one in flight: if the replay did not echo it, it is
  sent again (once the server has lost history, that may duplicate it).
* Nothing from the server reaches the terminal raw: control characters in
  names and texts are shown escaped.

This module keeps to the house style: the formatting and numbering helpers at
the top are plain Python; tasks live in nurseries opened here; the caller owns
stdin, stdout and stderr and none of them is closed.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import itertools
import json
import math
import os
import re
import secrets
import signal
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO, Final, Protocol, TextIO, TypeVar

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from .client.events import split_frame
from .client.transcript import Transcript
from .client.url import ServerUrlError, parse_server_url
from .core.protocol import DEFAULT_ROOM, MAX_TEXT_LENGTH

_T = TypeVar("_T")

JOIN_WAIT: Final = 10.0  # seconds for the TCP + HTTP upgrade, and again for the welcome
DRAIN_WAIT: Final = 10.0  # after end of input: seconds allowed between two confirmations
CLOSE_WAIT: Final = 3.0  # seconds for the server to answer our close frame
RECONNECT_BASE: Final = 0.5  # first reconnect delay (before jitter), doubled per failure
RECONNECT_CAP: Final = 30.0
NAME_TAKEN_PATIENCE: Final = 90.0  # seconds: PONG_WAIT (60 s) clears a dead ghost, plus margin
RATE_RETRY_BASE: Final = 0.25  # first delay before resending a rate-limited message
RATE_RETRY_CAP: Final = 5.0
# A replay after `since` may be large; trio-websocket's default limit is 1 MiB.
MAX_FRAME: Final = 64 * 2**20
_LINE_QUEUE: Final = 16  # lines read ahead of the writer (then stdin waits)
_MAX_LINE: Final = 65536  # longer input lines are refused without being kept in memory
_SHOWN_MEMBERS: Final = 20

# Close codes after which reconnecting would only repeat the failure: the
# server judged *this client's* frames wrong (RFC 6455 section 7.4.1).
_FATAL_CLOSE_CODES: Final = frozenset({1002, 1003, 1007, 1008, 1009, 1010})
_CLOSE_NAMES: Final = {
    1000: "normal close",
    1001: "server shutting down",
    1002: "protocol error",
    1003: "unsupported data",
    1006: "connection lost",
    1007: "invalid data",
    1008: "policy violation",
    1009: "message too big",
    1011: "server error",
    1012: "server restarting",
    1013: "try again later",
}
# C0 controls but tab and newline, DEL, C1 controls: escape sequences and
# carriage returns that would let a message redraw someone's terminal.
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


# --------------------------------------------------------------------------
# Arguments


def add_connect_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of `trio-chat connect` to `parser`.

    The URL is normalised by argparse itself (`args.url` is always a `ws://`
    or `wss://` URL), so a bad one is a usage error like any other.
    """
    parser.add_argument(
        "url",
        metavar="URL",
        type=_websocket_url,
        help=(
            "the server's WebSocket URL, e.g. ws://127.0.0.1:8080/ws; also accepted: "
            "http://HOST:PORT (the page's address), HOST:PORT or HOST (port 8080)"
        ),
    )
    parser.add_argument("--name", required=True, help="your display name in the room")
    parser.add_argument(
        "--room", default=DEFAULT_ROOM, help=f"the room to join (default: {DEFAULT_ROOM})"
    )
    parser.add_argument(
        "--since",
        metavar="ID",
        type=_event_id,
        default=None,
        help="print only the room's events after this id (resume where you left off)",
    )


def _websocket_url(text: str) -> str:
    """The WebSocket URL of what a user typed for the server
    (`trio_chat.client.url` has the rules).

    Raises:
        argparse.ArgumentTypeError: for anything that names no server.
    """
    try:
        return parse_server_url(text).url
    except ServerUrlError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _event_id(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not an event id (an integer >= 0)")
    return int(text)


# --------------------------------------------------------------------------
# Pure helpers: what an event looks like on a terminal, which ids were shown


def _format_event(event: dict[str, Any]) -> str | None:
    """The lines a numbered event is shown as, or None if it is not shown.

    `HH:MM:SS name: text` (local time) for a message, continuation lines
    indented under the text; `-- name joined` and `-- name left (reason)`
    (no reason for a plain `quit`) for the rest.
    """
    kind = event.get("type")
    name = _clean(str(event.get("name", "?")))
    if kind == "message":
        prefix = f"{_local_time(event.get('ts'))} {name}: "
        lines = _clean(str(event.get("text", "")).replace("\r\n", "\n")).split("\n")
        return ("\n" + " " * len(prefix)).join([prefix + lines[0], *lines[1:]])
    if kind == "join":
        return f"-- {name} joined"
    if kind == "leave":
        reason = event.get("reason")
        if reason in (None, "quit"):
            return f"-- {name} left"
        return f"-- {name} left ({_clean(str(reason))})"
    return None


def _clean(text: str) -> str:
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def _local_time(ts: object) -> str:
    if not isinstance(ts, str):
        return "--:--:--"
    try:
        moment = datetime.fromisoformat(ts)
    except ValueError:
        return "--:--:--"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone().strftime("%H:%M:%S")


def _backoff(failures: int, uniform: Callable[[float, float], float]) -> float:
    """Seconds before reconnect attempt number `failures` (1, 2, ...): half
    of the doubled delay is fixed, the other half random, so that clients
    dropped together do not come back together."""
    ceiling = min(RECONNECT_CAP, RECONNECT_BASE * 2.0 ** min(failures - 1, 16))
    return ceiling / 2 + uniform(0.0, ceiling / 2)


# --------------------------------------------------------------------------
# Outcomes of one connection


@dataclass(frozen=True, slots=True)
class _Finished:
    """The input ended and every line sent was confirmed."""


@dataclass(frozen=True, slots=True)
class _Interrupted:
    """Ctrl-C."""


@dataclass(frozen=True, slots=True)
class _Lost:
    """The connection ended (`code` 1006 when it simply broke)."""

    code: int
    detail: str

    def describe(self) -> str:
        return f"{self.code} {self.detail}" if self.detail else str(self.code)


@dataclass(frozen=True, slots=True)
class _Refused:
    """The server answered our hello with an error."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class _Unreachable:
    """No WebSocket: the TCP connection or the HTTP upgrade failed."""

    detail: str
    status: int | None = None  # the HTTP status of a refused upgrade

    @property
    def retryable(self) -> bool:
        status = self.status
        return status is None or status >= 500 or status in (408, 429)


_Outcome = _Finished | _Interrupted | _Lost | _Refused | _Unreachable


def _lost(closed: ConnectionClosed) -> _Lost:
    reason = closed.reason
    if reason is None:
        return _Lost(1006, _CLOSE_NAMES[1006])
    return _Lost(reason.code, reason.reason or _CLOSE_NAMES.get(reason.code, ""))


@dataclass(slots=True)
class _Outgoing:
    """The line being delivered, until its echo (or a refusal) arrives."""

    text: str
    ref: str
    sent: bool = False
    not_before: float = -math.inf
    rate_limited: int = 0


# --------------------------------------------------------------------------
# Input


class _ByteSource(Protocol):
    """What the client reads its input from: a Trio `ReceiveStream` will do."""

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray: ...


class _ThreadedFile:
    """A binary file read by a worker thread, for standard input.

    The thread is abandoned on cancellation (it stays blocked in `read` until
    the process exits), which is what lets Ctrl-C end a client waiting for
    terminal input. The file itself is never closed: it belongs to the caller.
    """

    def __init__(self, file: BinaryIO) -> None:
        self._fd = file.fileno()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await trio.to_thread.run_sync(
            os.read, self._fd, max_bytes or 65536, abandon_on_cancel=True
        )


class _EventReader:
    """Splits the server's frames into events (one JSON object per line)."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws
        self._pending: deque[dict[str, Any]] = deque()

    async def next(self) -> dict[str, Any]:
        """The next event; raises ConnectionClosed once the connection is over."""
        while not self._pending:
            frame = await self._ws.get_message()
            if isinstance(frame, bytes):
                continue  # the protocol has none; nothing to show
            self._pending.extend(split_frame(frame)[0])
        return self._pending.popleft()


async def _close_transport(ws: WebSocketConnection) -> None:
    """Close the TCP (or TLS) stream under a finished `ws`.

    trio-websocket 0.12 closes it only when *we* start the closing handshake:
    after the server's close frame, or a broken connection, it leaves the
    socket open until garbage collection (a ResourceWarning, and one file
    descriptor per reconnect meanwhile). It has no public handle on the
    stream, hence the private attribute, looked up defensively.
    """
    stream = getattr(ws, "_stream", None)
    if isinstance(stream, trio.abc.AsyncResource):
        await trio.aclose_forcefully(stream)


async def _first_of(*tasks: Callable[[], Awaitable[_T]]) -> _T:
    """Run `tasks` side by side; the first to return wins, the rest are cancelled."""
    results: list[_T] = []
    async with trio.open_nursery() as nursery:
        for task in tasks:
            nursery.start_soon(_run_and_cancel, task, results, nursery.cancel_scope)
    return results[0]


async def _run_and_cancel(
    task: Callable[[], Awaitable[_T]], results: list[_T], scope: trio.CancelScope
) -> None:
    results.append(await task())
    scope.cancel()


# --------------------------------------------------------------------------
# The client


class _Client:
    def __init__(self, args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> None:
        self._url: str = args.url
        self._name: str = args.name
        self._room: str = args.room
        self._stdout = stdout
        self._stderr = stderr
        self._transcript = Transcript(args.since)
        self._me: str | None = None  # our name as the server spells it
        self._lines_in, self._lines_out = trio.open_memory_channel[str](_LINE_QUEUE)
        self._current: _Outgoing | None = None
        self._changed = trio.Event()  # set (and replaced) when `_current` moves on
        self._refs = itertools.count(1)
        self._ref_prefix = secrets.token_hex(4)
        self._uniform = secrets.SystemRandom().uniform
        self._input_ended = False
        self._undelivered = 0  # lines refused, locally or by the server
        self._joins = 0
        self._interrupted = False
        self._output_closed = False  # whoever read our stdout went away (`| head`)
        # `_scope` holds the whole conversation with the server: its deadline
        # is the drain bound once the input ended; Ctrl-C cancels `_talk_scope`
        # when a connection is up (so the WebSocket closes politely), else this.
        self._scope = trio.CancelScope()
        self._talk_scope: trio.CancelScope | None = None

    # -- top level -----------------------------------------------------------

    async def run(self, stdin: _ByteSource) -> int:
        async with trio.open_nursery() as nursery:
            if threading.current_thread() is threading.main_thread():
                await nursery.start(self._watch_interrupts)
            nursery.start_soon(self._read_input, stdin)
            status = await self._run_until_done()
            nursery.cancel_scope.cancel()
        return status

    async def _run_until_done(self) -> int:
        with self._scope:
            return await self._connect_loop()
        if self._interrupted or self._output_closed:
            return 0
        waiting = self._lines_out.statistics().current_buffer_used
        waiting += self._current is not None
        self._fatal(
            f"gave up: {waiting} message(s) not confirmed within {DRAIN_WAIT:g} s "
            "after the end of input"
            if waiting
            else f"gave up: not connected within {DRAIN_WAIT:g} s after the end of input"
        )
        return 1

    async def _watch_interrupts(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.open_signal_receiver(signal.SIGINT) as signals:
            task_status.started()
            async for _ in signals:
                self._interrupted = True
                talk = self._talk_scope
                if talk is not None and not talk.cancel_called:
                    talk.cancel()  # first Ctrl-C: close the connection politely
                else:
                    self._scope.cancel()  # not connected, or a second Ctrl-C

    # -- input ---------------------------------------------------------------

    async def _read_input(self, stdin: _ByteSource) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        partial = ""
        skipping = False  # inside a line already refused for its length
        async with self._lines_in:
            while data := await stdin.receive_some(65536):
                text = decoder.decode(data)
                while text:
                    head, newline, text = text.partition("\n")
                    if skipping:
                        skipping = not newline
                        continue
                    partial += head
                    if newline:
                        line, partial = partial, ""
                        await self._submit(line)
                    elif len(partial) > _MAX_LINE:
                        self._refuse_line(f"more than {_MAX_LINE} characters")
                        partial, skipping = "", True
            partial += decoder.decode(b"", final=True)
            if partial and not skipping:
                await self._submit(partial)
        self._input_ended = True
        self._extend_drain()

    async def _submit(self, line: str) -> None:
        text = line.strip()  # as the server trims, Unicode white space included
        if not text:
            return
        if len(text) > MAX_TEXT_LENGTH:
            self._refuse_line(f"{len(text)} characters")
            return
        await self._lines_in.send(text)

    def _refuse_line(self, size: str) -> None:
        self._undelivered += 1
        self._warn(f"line not sent: {size}, the limit is {MAX_TEXT_LENGTH}")

    def _extend_drain(self) -> None:
        if self._input_ended:
            self._scope.deadline = trio.current_time() + DRAIN_WAIT

    # -- connections ---------------------------------------------------------

    async def _connect_loop(self) -> int:
        failures = 0  # attempts in a row that did not join
        name_taken_since: float | None = None
        while True:
            joins = self._joins
            outcome = await self._connect_once()
            if isinstance(outcome, _Finished):
                if self._undelivered:
                    self._fatal(f"{self._undelivered} line(s) could not be sent")
                    return 1
                return 0
            if isinstance(outcome, _Interrupted):
                return 0
            if self._joins == 0:  # nothing to resume: the first connection must work
                self._fatal(self._explain(outcome))
                return 1
            if self._joins > joins:
                failures, name_taken_since = 0, None
            now = trio.current_time()
            if isinstance(outcome, _Refused) and outcome.code == "name_taken":
                # Probably our own previous connection, not yet noticed as gone.
                if name_taken_since is None:
                    name_taken_since = now
                if now - name_taken_since >= NAME_TAKEN_PATIENCE:
                    self._fatal(self._explain(outcome))
                    return 1
            elif not self._retryable(outcome):
                self._fatal(self._explain(outcome))
                return 1
            failures += 1
            delay = _backoff(failures, self._uniform)
            if self._joins > joins:
                self._show(f"-- reconnecting... ({self._describe(outcome)})")
            else:
                self._warn(f"{self._describe(outcome)}; next attempt in {delay:.1f} s")
            await trio.sleep(delay)

    async def _connect_once(self) -> _Outcome:
        outcome: _Outcome | None = None
        ws: WebSocketConnection | None = None
        try:
            async with open_websocket_url(
                self._url,
                max_message_size=MAX_FRAME,
                connect_timeout=JOIN_WAIT,
                disconnect_timeout=CLOSE_WAIT,
            ) as ws:
                outcome = await self._session(ws)
        except ConnectionRejected as rejected:
            body = (rejected.body or b"").decode("utf-8", "replace").strip()
            status = rejected.status_code
            return _Unreachable(f"HTTP {status}" + (f" {_clean(body)}" if body else ""), status)
        except ConnectionTimeout:
            return _Unreachable(f"no answer within {JOIN_WAIT:g} s")
        except HandshakeError as error:
            if outcome is not None:  # only the close handshake was slow
                return outcome
            cause = error.__cause__
            detail = (cause.strerror or str(cause)) if isinstance(cause, OSError) else ""
            return _Unreachable(detail or str(error) or type(error).__name__)
        finally:
            if ws is not None:
                await _close_transport(ws)
        assert outcome is not None
        return outcome

    async def _session(self, ws: WebSocketConnection) -> _Outcome:
        events = _EventReader(ws)
        hello: dict[str, Any] = {"type": "hello", "name": self._name, "room": self._room}
        if self._transcript.since is not None:
            hello["since"] = self._transcript.since
            if self._transcript.epoch is not None:
                hello["epoch"] = self._transcript.epoch
        try:
            # ASCII: a name from a badly encoded argv (lone surrogates) then
            # reaches the server, which refuses it, instead of crashing the encoder.
            await ws.send_message(json.dumps(hello))
            welcome: dict[str, Any] | None = None
            with trio.move_on_after(JOIN_WAIT):
                welcome = await events.next()
            if welcome is None:
                return _Lost(1006, f"no answer to hello within {JOIN_WAIT:g} s")
            if welcome.get("type") == "error":
                return _Refused(str(welcome.get("code")), str(welcome.get("message", "")))
            if welcome.get("type") != "welcome":
                return _Lost(1002, f"unexpected answer to hello: {welcome.get('type')!r}")
            self._on_welcome(welcome)
            own_join = welcome.get("last_id")
            while type(own_join) is int:  # the replay ends with our own join
                event = await events.next()
                self._on_event(event)
                if event.get("id") == own_join:
                    break
        except ConnectionClosed as closed:
            return _lost(closed)
        self._on_joined(welcome)
        talk = self._talk_scope = trio.CancelScope()
        if self._interrupted:
            talk.cancel()
        try:
            with talk:
                return await _first_of(
                    lambda: self._receive_events(events), lambda: self._send_lines(ws)
                )
        finally:
            self._talk_scope = None
        return _Interrupted()  # Ctrl-C: leaving the `async with` closes with 1000

    def _retryable(self, outcome: _Outcome) -> bool:
        if isinstance(outcome, _Lost):
            return outcome.code not in _FATAL_CLOSE_CODES
        if isinstance(outcome, _Unreachable):
            return outcome.retryable
        return False

    def _describe(self, outcome: _Outcome) -> str:
        if isinstance(outcome, _Lost):
            return outcome.describe()
        if isinstance(outcome, _Refused):
            return f"{outcome.code}: {_clean(outcome.message)}"
        if isinstance(outcome, _Unreachable):
            return f"cannot connect: {outcome.detail}"
        return ""

    def _explain(self, outcome: _Outcome) -> str:
        if isinstance(outcome, _Refused):
            return f"cannot join room {self._room!r} as {self._name!r}: {self._describe(outcome)}"
        if isinstance(outcome, _Unreachable):
            return f"cannot connect to {self._url}: {outcome.detail}"
        return f"connection to {self._url} closed: {self._describe(outcome)}"

    # -- the two tasks of a connection ----------------------------------------

    async def _receive_events(self, events: _EventReader) -> _Outcome:
        try:
            while True:
                self._on_event(await events.next())
        except ConnectionClosed as closed:
            return _lost(closed)

    async def _send_lines(self, ws: WebSocketConnection) -> _Outcome:
        try:
            while True:
                message = self._current
                if message is None:
                    try:
                        text = await self._lines_out.receive()
                    except trio.EndOfChannel:
                        return _Finished()
                    ref = f"{self._ref_prefix}-{next(self._refs)}"
                    message = self._current = _Outgoing(text, ref)
                if message.sent:
                    await self._changed.wait()
                    continue
                await trio.sleep_until(message.not_before)
                say = {"type": "say", "text": message.text, "ref": message.ref}
                await ws.send_message(json.dumps(say, ensure_ascii=False))
                message.sent = True
        except ConnectionClosed as closed:
            return _lost(closed)

    # -- what the server says --------------------------------------------------

    def _on_welcome(self, welcome: dict[str, Any]) -> None:
        self._me = str(welcome.get("name", self._name))
        self._transcript.renumbered(welcome.get("last_id"), welcome.get("epoch"))
        if welcome.get("recovered") is False:
            self._show("-- some history could not be recovered")

    def _on_joined(self, welcome: dict[str, Any]) -> None:
        self._joins += 1
        message = self._current
        if message is not None and message.sent:
            # Sent on the previous connection and not echoed in the replay:
            # it was lost with that connection, so it goes again.
            message.sent = False
            self._notify()
        members = welcome.get("members")
        names = [_clean(str(m)) for m in members] if isinstance(members, list) else []
        shown = ", ".join(names[:_SHOWN_MEMBERS])
        if len(names) > _SHOWN_MEMBERS:
            shown += f" and {len(names) - _SHOWN_MEMBERS} more"
        self._show(("-- reconnected; here: " if self._joins > 1 else "-- here: ") + shown)

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "error":
            self._on_error(event)
            return
        line = _format_event(event)
        if line is None or not self._transcript.observe_event(event):
            return  # typing, unknown types and repeats are not shown
        message = self._current
        if (
            message is not None
            and event.get("type") == "message"
            and event.get("ref") == message.ref
            and event.get("name") == self._me
        ):
            self._current = None
            self._notify()
            self._extend_drain()
        self._show(line)

    def _on_error(self, event: dict[str, Any]) -> None:
        code = _clean(str(event.get("code", "error")))
        text = _clean(str(event.get("message", "")))
        message = self._current
        if message is None or not message.sent or event.get("ref") != message.ref:
            self._warn(f"{code}: {text}")
            return
        if code in ("rate_limited", "unavailable"):
            # The server dropped it (too fast, or its backplane is down): send
            # it again, later; lines behind it wait.
            message.rate_limited += 1
            delay = min(RATE_RETRY_CAP, RATE_RETRY_BASE * 2.0 ** (message.rate_limited - 1))
            message.sent = False
            message.not_before = trio.current_time() + delay
            self._warn(f"{code}: {text} (sending again in {delay:g} s)")
        else:
            self._undelivered += 1
            self._current = None
            self._warn(f"{code}: {text} (not sent: {_clean(message.text[:40])!r})")
        self._notify()

    # -- output ----------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _show(self, text: str) -> None:
        if self._output_closed:
            return
        try:
            self._stdout.write(text + "\n")
            self._stdout.flush()
        except BrokenPipeError:
            # The reader of our output is gone, as with `| head`: stop quietly,
            # like an interrupt. Point the descriptor at /dev/null so that the
            # interpreter's last flush at exit does not complain either.
            self._output_closed = True
            self._scope.cancel()
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self._stdout.fileno())
                os.close(devnull)

    def _warn(self, text: str) -> None:
        self._stderr.write(f"! {text}\n")
        self._stderr.flush()

    def _fatal(self, text: str) -> None:
        self._stderr.write(f"trio-chat: {text}\n")
        self._stderr.flush()


async def run_connect(
    args: argparse.Namespace,
    stdin: trio.abc.ReceiveStream | BinaryIO,
    stdout: TextIO,
    stderr: TextIO,
) -> int:
    """Run the terminal client until the input ends or Ctrl-C; return the exit status.

    Args:
        args: parsed by a parser set up with `add_connect_arguments`.
        stdin: the lines to send, as bytes (UTF-8; a bad byte becomes U+FFFD):
            any Trio `ReceiveStream` (tests pass a memory stream), or a binary
            file with a file descriptor, such as `sys.stdin.buffer`, which a
            worker thread reads (so no `trio.lowlevel` is needed and Ctrl-C
            still ends a client waiting for the keyboard). Not closed here.
        stdout: where the room's events are printed, a line each, flushed.
        stderr: where errors (`! code: message`) and the reason for a
            non-zero exit status go.

    Returns:
        0 once the input has ended and every line sent has been confirmed by
        its echo, or on Ctrl-C (SIGINT is handled while this runs in the main
        thread). 1 when the server refuses us for good (`bad_name`,
        `bad_room`, `name_taken` on the first join or for over 90 s after a
        reconnect, an HTTP refusal such as 403, a close code that says our
        frames were wrong), when the first connection fails, when echoes stop
        coming for 10 s after the end of input, or when some line could not
        be sent (too long, or refused by the server).
    """
    source = stdin if isinstance(stdin, trio.abc.ReceiveStream) else _ThreadedFile(stdin)
    return await _Client(args, stdout, stderr).run(source)
