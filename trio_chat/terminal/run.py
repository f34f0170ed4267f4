"""The run of `trio-chat connect`: its arguments, and the client that connects,
reconnects and hands lines both ways (the package docstring says how)."""

from __future__ import annotations

import argparse
import codecs
import contextlib
import json
import os
import secrets
import signal
import threading
from dataclasses import dataclass
from typing import Any, BinaryIO, Final, TextIO, TypeVar

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from ..client.display import clean, format_event
from ..client.history import BEGINNING, BadCommand, Scrollback, ShowHistory, mark, parse_command
from ..client.lineedit import (
    EndOfInput,
    Redraw,
    Submitted,
)
from ..client.outbox import Outbox
from ..client.pacing import RECONNECT_CAP, Pacer, reconnect_delay
from ..client.transcript import Transcript
from ..client.url import ServerUrlError, parse_server_url
from ..core.protocol import DEFAULT_ROOM, MAX_TEXT_LENGTH
from .screen import Screen, keys_mode
from .streams import ByteSource, EventReader, ThreadedFile, close_transport, first_of

__all__ = ["RECONNECT_CAP", "add_connect_arguments", "run_connect"]

_T = TypeVar("_T")

JOIN_WAIT: Final = 10.0  # seconds for the TCP + HTTP upgrade, and again for the welcome
DRAIN_WAIT: Final = 10.0  # after end of input: seconds allowed between two confirmations
CLOSE_WAIT: Final = 3.0  # seconds for the server to answer our close frame
NAME_TAKEN_PATIENCE: Final = 90.0  # seconds: PONG_WAIT (60 s) clears a dead ghost, plus margin
# A replay after `since` may be large; trio-websocket's default limit is 1 MiB.
MAX_FRAME: Final = 64 * 2**20
_OUTBOX_LIMIT: Final = 64  # lines typed ahead of the server's confirmations (then stdin waits)
_MAX_LINE: Final = 65536  # longer input lines are refused without being kept in memory
_SHOWN_MEMBERS: Final = 20
PRINT_CHOICES: Final = ("all", "live", "none")

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
    parser.add_argument(
        "--name",
        help="your display name in the room (required unless a token names you)",
    )
    parser.add_argument(
        "--token",
        help=(
            "a signed token, for a server in token mode: it names you, so --name may be left "
            "out (default: the TRIO_CHAT_TOKEN variable, which other users cannot see in the "
            "process list); when it expires the server closes the connection and the client "
            "exits, to be started again with a new one"
        ),
    )
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
    parser.add_argument(
        "--print",
        dest="print_events",
        choices=PRINT_CHOICES,
        default=None,
        help=(
            "what to print on standard output: 'all' (the room's recent history, then "
            "every event; the default when standard input is a terminal), 'live' (only "
            "what happens after joining), 'none' (nothing; the default when standard "
            "input is a pipe or a file: a script's lines are sent and confirmed, the "
            "exit status tells, and only problems go to standard error)"
        ),
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


# --------------------------------------------------------------------------
# The client


class _Client:
    def __init__(
        self,
        args: argparse.Namespace,
        stdout: TextIO,
        stderr: TextIO,
        *,
        screen: Screen | None = None,
        terminal_output: bool = False,
    ) -> None:
        self._url: str = args.url
        self._token: str | None = getattr(args, "token", None)
        self._name: str = args.name or ""  # "" only with a token, which names us
        self._room: str = args.room
        self._stdout = stdout
        self._stderr = stderr
        self._screen = screen
        self._terminal_output = terminal_output  # a newline after Ctrl-C's echoed ^C
        printing = getattr(args, "print_events", None)
        self._print: str = printing or ("all" if screen is not None else "none")
        self._transcript = Transcript(args.since)
        self._scrollback = Scrollback()  # `/history`: the oldest id shown, the page asked for
        self._me: str | None = None  # our name as the server spells it
        self._resume: str | None = None  # the last welcome's secret, for the next hello
        self._outbox = Outbox(secrets.token_hex(4))
        self._pacer = Pacer()
        self._limited_since: int | None = None  # confirmations when a rate-limit spell began
        self._changed = trio.Event()  # set (and replaced) when the outbox or input moves on
        self._uniform = secrets.SystemRandom().uniform
        self._input_ended = False
        self._undelivered = 0  # lines refused, locally or by the server
        self._joins = 0
        self._in_replay = False  # taking the replay of the first join
        self._interrupted = False
        self._output_closed = False  # whoever read our stdout went away (`| head`)
        # `_scope` holds the whole conversation with the server: its deadline
        # is the drain bound once the input ended; Ctrl-C cancels `_talk_scope`
        # when a connection is up (so the WebSocket closes politely), else this.
        self._scope = trio.CancelScope()
        self._talk_scope: trio.CancelScope | None = None

    # -- top level -----------------------------------------------------------

    async def run(self, stdin: ByteSource) -> int:
        try:
            async with trio.open_nursery() as nursery:
                if threading.current_thread() is threading.main_thread():
                    await nursery.start(self._watch_interrupts)
                if self._screen is not None:
                    self._screen.redraw()
                    nursery.start_soon(self._read_keys, stdin, self._screen)
                else:
                    nursery.start_soon(self._read_input, stdin)
                status = await self._run_until_done()
                nursery.cancel_scope.cancel()
        finally:
            if self._screen is not None:
                self._screen.close(interrupted=self._interrupted)
            elif self._interrupted and self._terminal_output:
                # The terminal echoed ^C where the cursor was: give the shell a line.
                with contextlib.suppress(OSError, ValueError):
                    self._stdout.write("\n")
                    self._stdout.flush()
        return status

    async def _run_until_done(self) -> int:
        with self._scope:
            return await self._connect_loop()
        waiting = len(self._outbox)
        if self._output_closed:
            return 0
        if self._interrupted:
            if waiting:
                self._warn(f"{waiting} line(s) not sent")
            return 0
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

    async def _read_input(self, stdin: ByteSource) -> None:
        """Lines from a pipe or a file (or a terminal in its own line mode)."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        partial = ""
        skipping = False  # inside a line already refused for its length
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
        self._end_input()

    async def _read_keys(self, stdin: ByteSource, screen: Screen) -> None:
        """Keys from a terminal in key mode: edited here, drawn by `screen`."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while data := await stdin.receive_some(4096):
            for action in screen.editor.feed(decoder.decode(data)):
                if isinstance(action, Submitted):
                    await self._submit(action.text)
                elif isinstance(action, EndOfInput):
                    self._end_input()
                    screen.redraw()
                    return
                elif isinstance(action, Redraw):
                    screen.redraw()
            screen.redraw()
        self._end_input()

    async def _submit(self, line: str) -> None:
        text = line.strip()  # as the server trims, Unicode white space included
        if not text:
            return
        command = parse_command(text)
        if isinstance(command, BadCommand):
            self._warn(command.usage)
            return
        if isinstance(command, ShowHistory):
            self._scrollback.wanted = command.count
            self._notify()
            return
        if len(text) > MAX_TEXT_LENGTH:
            self._refuse_line(f"{len(text)} characters")
            return
        while len(self._outbox) >= _OUTBOX_LIMIT:
            await self._changed.wait()
        self._outbox.add(text)
        self._outbox_changed()

    def _refuse_line(self, size: str) -> None:
        self._undelivered += 1
        self._warn(f"line not sent: {size}, the limit is {MAX_TEXT_LENGTH}")

    def _end_input(self) -> None:
        self._input_ended = True
        self._extend_drain()
        self._notify()

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
            self._scrollback.lost()
            self._outbox.connection_lost()
            self._outbox_changed()
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
            delay = reconnect_delay(failures, self._uniform)
            if self._joins > joins:
                self._status(f"-- reconnecting... ({self._describe(outcome)})", important=True)
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
            return _Unreachable(f"HTTP {status}" + (f" {clean(body)}" if body else ""), status)
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
                await close_transport(ws)
        assert outcome is not None
        return outcome

    def _hello(self) -> dict[str, Any]:
        hello: dict[str, Any] = {"type": "hello", "room": self._room}
        if self._name:
            hello["name"] = self._name
        if self._token is not None:
            hello["token"] = self._token
        if self._transcript.since is not None:
            hello["since"] = self._transcript.since
            if self._transcript.epoch is not None:
                hello["epoch"] = self._transcript.epoch
            if self._resume is not None:
                hello["resume"] = self._resume
        return hello

    async def _session(self, ws: WebSocketConnection) -> _Outcome:
        events = EventReader(ws)
        hello = self._hello()
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
            self._on_welcome(welcome, resuming="resume" in hello)
            last_id = welcome.get("last_id")
            # The replay ends with our own join, or on a resume with the room's
            # last event, which we may have seen already (then there is none).
            self._in_replay = self._joins == 0
            try:
                while type(last_id) is int and last_id > self._transcript.last:
                    event = await events.next()
                    self._on_event(event)
                    if event.get("id") == last_id:
                        break
            finally:
                self._in_replay = False
        except ConnectionClosed as closed:
            return _lost(closed)
        self._on_joined(welcome)
        talk = self._talk_scope = trio.CancelScope()
        if self._interrupted:
            talk.cancel()
        try:
            with talk:
                return await first_of(
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
            return f"{outcome.code}: {clean(outcome.message)}"
        if isinstance(outcome, _Unreachable):
            return f"cannot connect: {outcome.detail}"
        return ""

    def _explain(self, outcome: _Outcome) -> str:
        if isinstance(outcome, _Refused):
            who = f" as {self._name!r}" if self._name else ""
            return f"cannot join room {self._room!r}{who}: {self._describe(outcome)}"
        if isinstance(outcome, _Unreachable):
            return f"cannot connect to {self._url}: {outcome.detail}"
        return f"connection to {self._url} closed: {self._describe(outcome)}"

    # -- the two tasks of a connection ----------------------------------------

    async def _receive_events(self, events: EventReader) -> _Outcome:
        try:
            while True:
                self._on_event(await events.next())
        except ConnectionClosed as closed:
            return _lost(closed)

    async def _send_lines(self, ws: WebSocketConnection) -> _Outcome:
        try:
            while True:
                page = self._scrollback.request()
                if page is not None:  # counts toward the rate limit, as a `say` does
                    self._pacer.spend(trio.current_time())
                    await ws.send_message(json.dumps(page))
                    continue
                line = self._outbox.head
                waiting = self._scrollback.pending is not None  # for a page we asked for
                if line is None and self._input_ended and not waiting:
                    return _Finished()
                if line is None or line.sent:
                    await self._changed.wait()
                    continue
                now = trio.current_time()
                ready = max(line.not_before, self._pacer.ready_at(now))
                if ready > now:  # rate limited, or the server could not take it
                    with trio.move_on_at(ready):
                        await self._changed.wait()
                    continue
                self._pacer.spend(now)
                line.sent = True
                say = {"type": "say", "text": line.text, "ref": line.ref}
                await ws.send_message(json.dumps(say, ensure_ascii=False))
        except ConnectionClosed as closed:
            return _lost(closed)

    # -- what the server says --------------------------------------------------

    def _on_welcome(self, welcome: dict[str, Any], *, resuming: bool) -> None:
        self._me = str(welcome.get("name", self._name))
        resume = welcome.get("resume")
        self._resume = resume if isinstance(resume, str) and resume else None
        if self._transcript.renumbered(
            welcome.get("last_id"), welcome.get("epoch"), resuming=resuming
        ):
            self._scrollback.renumbered()
        if welcome.get("recovered") is False:
            self._status("-- some history could not be recovered")

    def _on_joined(self, welcome: dict[str, Any]) -> None:
        self._joins += 1
        members = welcome.get("members")
        names = [clean(str(m)) for m in members] if isinstance(members, list) else []
        shown = ", ".join(names[:_SHOWN_MEMBERS])
        if len(names) > _SHOWN_MEMBERS:
            shown += f" and {len(names) - _SHOWN_MEMBERS} more"
        self._status(("-- reconnected; here: " if self._joins > 1 else "-- here: ") + shown)

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "error":
            self._on_error(event)
            return
        if kind == "history":
            self._on_history(event)
            return
        # Confirm before numbering: the server answers a `say` it already
        # stored with the original event, whose id we may have seen.
        if kind == "message" and event.get("name") == self._me:
            self._confirm(event.get("ref"))
        line = format_event(event)
        if line is None or not self._transcript.observe_event(event):
            return  # typing, unknown types and repeats are not shown
        self._scrollback.shown(event)  # `/history` reads on from the oldest
        if self._print == "all" or (self._print == "live" and not self._in_replay):
            self._show(line)

    def _on_history(self, event: dict[str, Any]) -> None:
        """The page `/history` asked for: shown oldest first, marked."""
        answer = self._scrollback.answered(event)
        if answer is None:
            return
        events, beginning = answer
        for stored in events:
            line = format_event(stored)
            if line is not None:
                self._show(mark(line))
        if beginning:
            self._show(BEGINNING)
        self._notify()  # the end of input may have waited for it

    def _confirm(self, ref: object) -> None:
        if self._outbox.confirm(ref) is None:
            return  # not ours, or confirmed already
        self._outbox_changed()
        self._extend_drain()
        if self._limited_since is not None and not self._outbox:
            lines = self._outbox.confirmed - self._limited_since
            refusals = self._pacer.refusals
            self._limited_since = None
            self._warn(
                f"rate limited: {lines} line(s) sent at the server's pace "
                f"({refusals} refusal(s) in all)"
            )

    def _on_error(self, event: dict[str, Any]) -> None:
        code = clean(str(event.get("code", "error")))
        text = clean(str(event.get("message", "")))
        if self._scrollback.refused(event.get("ref")):
            self._warn(f"{code}: {text} (history not shown)")
            self._notify()
            return
        line = self._outbox.find(event.get("ref"))
        if line is None or not line.sent:
            self._warn(f"{code}: {text}")
            return
        now = trio.current_time()
        if code == "rate_limited":
            # Dropped as too fast: pace to the server's limit and send it again
            # (lines behind it wait). Said once per spell, summed up at its end.
            line.sent = False
            self._pacer.refused(now)
            if self._limited_since is None:
                self._limited_since = self._outbox.confirmed
                self._warn(
                    f"{code}: {text} (sending at most {self._pacer.rate:g} line(s)/s from now on)"
                )
        elif code == "unavailable":
            # The server's backplane is down: send it again, later.
            delay = line.retry_later(now)
            self._warn(f"{code}: {text} (sending again in {delay:g} s)")
        else:
            self._undelivered += 1
            self._outbox.take(line.ref)
            self._warn(f"{code}: {text} (not sent: {clean(line.text[:40])!r})")
        self._outbox_changed()

    # -- output ----------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _outbox_changed(self) -> None:
        self._notify()
        if self._screen is not None:
            self._screen.redraw([line.text for line in self._outbox])

    def _status(self, text: str, *, important: bool = False) -> None:
        """A line of our own (not an event): shown with the events, unless
        they are not printed; then only an `important` one, on stderr."""
        if self._print != "none":
            self._show(text)
        elif important:
            self._warn(text.removeprefix("-- "))

    def _show(self, text: str) -> None:
        if self._screen is not None:
            self._screen.show(text)
            return
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
        if self._screen is not None:
            self._screen.warn(f"! {text}")
            return
        self._stderr.write(f"! {text}\n")
        self._stderr.flush()

    def _fatal(self, text: str) -> None:
        if self._screen is not None:
            self._screen.warn(f"trio-chat: {text}")
            return
        self._stderr.write(f"trio-chat: {text}\n")
        self._stderr.flush()


def _is_terminal(stream: BinaryIO | TextIO) -> bool:
    try:
        return os.isatty(stream.fileno())
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return False


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
            When it and `stdout` are both a terminal, the client edits the
            line itself (the terminal's echo is off meanwhile, and put back).
        stdout: where the room's events are printed (`--print`), a line each,
            flushed.
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
    if isinstance(stdin, trio.abc.ReceiveStream):
        return await _Client(args, stdout, stderr).run(stdin)
    source = ThreadedFile(stdin)
    terminal_output = _is_terminal(stdout)
    if not (terminal_output and _is_terminal(stdin)):
        client = _Client(args, stdout, stderr, terminal_output=terminal_output)
        return await client.run(source)
    with keys_mode(stdin.fileno()):
        screen = Screen(stdout, stderr)
        return await _Client(args, stdout, stderr, screen=screen).run(source)
