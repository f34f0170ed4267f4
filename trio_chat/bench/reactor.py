"""The reactor: one worker process's sockets in one plain `select.epoll` loop,
and the commands and answers it exchanges with the coordinator.

Why the workers are not Trio: the generator must cost less per event than
the server it measures, or it measures itself. Each worker is one plain,
single-threaded `select.epoll` loop (`Reactor`) over non-blocking sockets,
each registered once, level-triggered; a readable socket is read until a
read comes back short, and the coordinator's pipe sits in the same epoll.
A Trio task per connection paid, per receive, a failing `recv`, an
`epoll_ctl` re-registration (Trio's epoll is one-shot) and a task switch:
about 45 us per delivery on the 2-core VM this was measured on, so at
20,000 deliveries/s (100 connections, one small frame each per read) the
Trio generator was saturated and its latencies were mostly its own. The
plain loop costs about 18 us there, nearly half of it in the kernel (the
read, and the ACK it sends), and about 1-6 us per delivery at 100,000-500,000/s,
where reads bring several messages and each distinct frame is parsed once
for all the members of its room (`scan_live`). The parent keeps
coordinating, showing progress and sampling the server in Trio, where
nothing is hot.
"""

from __future__ import annotations

import base64
import errno
import json
import math
import os
import secrets
import select
import socket
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from multiprocessing.connection import Connection
from typing import Any, Final

from ..client.transcript import Transcript
from ..client.url import ServerUrl
from ..client.websocket import (
    MAX_RESPONSE_HEAD,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    ConnectFailure,
    FrameReader,
    FramingError,
    check_handshake,
    close_code,
    encode_frame,
    handshake_request,
)
from .counting import STAMP_DIGITS, Joining, StepStats, scan_live, scan_pages
from .metrics import _delta, proc_wait_seconds
from .plan import (
    BenchError,
    ConnSpec,
    messages_due,
    send_offset,
    sender_share,
    total_messages,
)
from .report import ConnectReport, SendReport, StepResult

DRAIN_POLL: Final = 0.02
SEND_TICK: Final = 0.001  # a sender sleeps at least this long: what is due is sent at once
CLOSE_WAIT: Final = 5.0  # seconds for the connections to finish their close handshakes
RECEIVE_SIZE: Final = 65536  # bytes per read
PROBE_TIMEOUT: Final = 5.0  # seconds for the probe connection that picks an address
PAGE_LIMIT: Final = 100  # events a pager asks for at a time (the protocol's most)


# -- the reactor: one worker process's sockets -----------------------------------

RECEIVE_LIMIT: Final = 1 << 20  # bytes read from one socket per wake-up, at most
PUBLISH_EVERY: Final = 0.2  # seconds between updates of the progress counters
_EPOLLIN: Final = select.EPOLLIN
_EPOLLOUT: Final = select.EPOLLOUT


class ConnState(Enum):
    """Where one connection stands."""

    CONNECTING = "connecting"  # the TCP connect is in flight
    UPGRADING = "upgrading"  # the upgrade request is sent; reading the 101
    JOINING = "joining"  # the hello is sent; reading until its own join
    OPEN = "open"  # joined: every event counts
    CLOSING = "closing"  # our close frame is sent; waiting for the server's
    ENDED = "ended"  # the socket is closed


class Busy(Enum):
    """Which coordinator command a reactor is carrying out."""

    IDLE = "idle"
    CONNECTING = "connecting"
    SENDING = "sending"
    DRAINING = "draining"
    CLOSING = "closing"


_OPEN: Final = ConnState.OPEN


class _Conn:
    """One connection's socket and what is known about it."""

    __slots__ = (
        "check",
        "head",
        "joining",
        "key",
        "out",
        "pager",
        "reader",
        "received",
        "room",
        "sock",
        "spec",
        "state",
    )

    def __init__(self, spec: ConnSpec, sock: socket.socket) -> None:
        self.spec = spec
        self.room = spec.room
        self.sock = sock
        self.state = ConnState.CONNECTING
        self.key = base64.b64encode(secrets.token_bytes(16))
        self.head = b""  # the HTTP response, until its blank line
        self.joining: Joining | None = None
        self.reader = FrameReader()
        self.check = Transcript(0)
        self.received = 0  # messages counted in the current step
        self.out = bytearray()  # what the socket would not take yet
        self.pager: _Pager | None = _Pager() if spec.pager else None


class _Pager:
    """One pager's walk back through its room's history (`--pagers`): one
    request on its way at a time, the next due `1 / page_rate` s after the
    last, `before` the first id of the last page (None: from the newest)."""

    __slots__ = ("before", "due", "waiting")

    def __init__(self) -> None:
        self.before: int | None = None
        self.due = 0.0  # monotonic time of the next request
        self.waiting = False  # a request is on its way


class _Pacer:
    """One sender's progress through its share of a step."""

    __slots__ = ("conn", "mine", "sender", "sent")

    def __init__(self, conn: _Conn, sender: int, mine: int) -> None:
        self.conn = conn
        self.sender = sender
        self.mine = mine
        self.sent = 0


def reachable_address(host: str, port: int) -> tuple[int, Any] | str:
    """The first of `host`'s addresses that takes a TCP connection (as
    `(family, sockaddr)`), or why none did.

    One probe connection, closed at once: the reactor's own connects are
    non-blocking, so it needs an address known to work (`localhost` may
    resolve to `::1` first while the server listens on 127.0.0.1 only).
    """
    try:
        candidates = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        return error.strerror or str(error)
    return first_reachable(candidates)


def first_reachable(
    candidates: Sequence[tuple[int, int, int, str, Any]],
) -> tuple[int, Any] | str:
    """`reachable_address` for addresses already resolved (getaddrinfo's rows)."""
    reason = "no address"
    for family, kind, proto, _, address in candidates:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.settimeout(PROBE_TIMEOUT)
                probe.connect(address)
        except OSError as error:
            reason = error.strerror or str(error)
            continue
        return family, address
    return reason


class Reactor:
    """One worker process: every connection of its plan, in one epoll loop.

    The coordinator's pipe is registered in the same epoll; a command starts
    a phase (connect, send, drain, close) that events and timers carry on,
    and its report goes back on the pipe when the phase ends. Sockets are
    registered once, level-triggered, for reading; for writing only while
    one has output the kernel would not take.
    """

    def __init__(self, plan: WorkerPlan, pipe: Connection, counters: Any) -> None:
        if plan.size < STAMP_DIGITS:
            raise BenchError(f"messages must be at least {STAMP_DIGITS} bytes (the send time)")
        self._target = plan.target
        self._specs = plan.specs
        self._pipe = pipe
        self._counters = counters
        self._slot = plan.slot
        self._epoll = select.epoll()
        self._pipe_fd = pipe.fileno()
        self._epoll.register(self._pipe_fd, _EPOLLIN)
        self._conns: dict[int, _Conn] = {}  # every socket not yet closed, by fd
        self._joined: list[_Conn] = []  # every connection that joined, in order
        self._open = 0  # joined and not ended
        self.stats = StepStats(0)
        self._received_before = 0
        self._sent = 0
        self._running = True
        self._busy = Busy.IDLE
        self._wake = 0.0  # monotonic time of the next timer
        self._publish_at = 0.0
        self._say_prefix = b'{"type":"say","text":"'
        self._say_suffix = b"x" * (plan.size - STAMP_DIGITS) + b'"}'
        self._address = reachable_address(plan.target.host, plan.target.port)
        # connect
        self._waiting: deque[ConnSpec] = deque()
        self._in_flight = 0
        self._concurrency = 1
        self._failures: Counter[str] = Counter()
        self._connect_start = 0.0
        # send and drain
        self._cpu_start = 0.0
        self._wait_start: float | None = None
        self._checks_start = (0, 0, 0)
        self._step = StepCommand(1.0, 0.0, 0, 1)
        self._step_start = 0.0  # monotonic time of message 0
        self._step_total = 0
        self._members: Counter[str] = Counter()
        self._late = False
        self._pacers: list[_Pacer] = []
        self._page_requests = 0  # history requests sent in the step
        self._targets: list[tuple[_Conn, int]] = []
        self._quiet = 0.0
        self._quiet_since = 0.0
        self._seen = 0
        # close
        self._close_deadline = 0.0
        self._closed_report = ClosedReport({})

    # -- the loop

    def run(self) -> None:
        """Serve the coordinator's commands until it says close, or is gone."""
        poll = self._epoll.poll
        conns = self._conns
        read_open = self._read_open
        while self._running:
            now = time.monotonic()
            if now >= self._wake:
                self._on_timer(now)
                continue
            for fd, mask in poll(self._wake - now):
                conn = conns.get(fd)
                if conn is None:
                    if fd == self._pipe_fd:
                        self._on_command()
                elif mask == _EPOLLIN and conn.state is _OPEN:
                    read_open(conn)
                else:
                    self._on_event(conn, mask)

    def close(self) -> None:
        """Cut whatever is still connected."""
        for conn in list(self._conns.values()):
            conn.sock.close()
        self._conns.clear()
        self._epoll.close()

    def _on_timer(self, now: float) -> None:
        if now >= self._publish_at:
            self._publish()
            self._publish_at = now + PUBLISH_EVERY
        wake = math.inf
        if self._busy is Busy.SENDING:
            wake = self._pace(now)
        elif self._busy is Busy.DRAINING:
            wake = self._drain_check(now)
        elif self._busy is Busy.CLOSING:
            wake = self._close_check(now)
        self._wake = min(self._publish_at, wake)

    def _publish(self) -> None:
        base = 3 * self._slot
        self._counters[base : base + 3] = [
            self._open,
            self._sent,
            self._received_before + self.stats.received,
        ]

    def _on_command(self) -> None:
        try:
            command = self._pipe.recv()
        except EOFError:  # the coordinator is gone
            self._running = False
            return
        if self._busy is not Busy.IDLE:
            raise RuntimeError(f"{command!r} arrived while {self._busy.value}")
        if isinstance(command, ConnectCommand):
            self._start_connect(command.concurrency)
        elif isinstance(command, StepCommand):
            self._start_step(command)
        elif isinstance(command, DrainCommand):
            self._start_drain(command)
        elif isinstance(command, CloseCommand):
            self._start_close()
        else:
            raise TypeError(f"not a command: {command!r}")
        self._wake = 0.0  # look at the timers at once

    def _reply(self, reply: object) -> None:
        self._busy = Busy.IDLE
        self._publish()
        self._pipe.send(reply)

    # -- connect

    def _start_connect(self, concurrency: int) -> None:
        self._busy = Busy.CONNECTING
        self._waiting = deque(self._specs)
        self._concurrency = concurrency
        self._failures = Counter()
        self._connect_start, self._cpu_start = time.time(), _cpu_seconds()
        self._fill()

    def _fill(self) -> None:
        """Start connections while fewer than `concurrency` are joining; report
        once none is left."""
        while self._waiting and self._in_flight < self._concurrency:
            self._open_socket(self._waiting.popleft())
        if self._busy is Busy.CONNECTING and not self._waiting and not self._in_flight:
            self._reply(
                ConnectReport(
                    self._connect_start,
                    time.time(),
                    len(self._joined),
                    dict(self._failures),
                    _cpu_seconds() - self._cpu_start,
                )
            )

    def _open_socket(self, spec: ConnSpec) -> None:
        if isinstance(self._address, str):
            self._failures[self._address] += 1
            return
        family, address = self._address
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as error:
            self._failures[error.strerror or str(error)] += 1
            return
        sock.setblocking(False)  # noqa: FBT003 (the socket module's own signature)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(address)
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self._failures[os.strerror(err)] += 1
            return
        conn = _Conn(spec, sock)
        self._conns[sock.fileno()] = conn
        self._epoll.register(sock.fileno(), _EPOLLOUT)
        self._in_flight += 1

    def _fail(self, conn: _Conn, reason: str) -> None:
        """A connection that did not join: counted, closed, its place given on."""
        self._failures[reason] += 1
        self._end(conn)
        self._in_flight -= 1
        self._fill()

    def _on_joined(self, conn: _Conn, last_id: int) -> None:
        conn.state = ConnState.OPEN
        conn.joining = None
        conn.check = Transcript(last_id)
        self._joined.append(conn)
        self._open += 1
        self._in_flight -= 1
        self._fill()

    # -- events

    def _on_event(self, conn: _Conn, mask: int) -> None:
        """Anything but a joined connection's plain readable event."""
        if conn.state is ConnState.CONNECTING:
            err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._fail(conn, os.strerror(err))
                return
            conn.state = ConnState.UPGRADING
            self._epoll.modify(conn.sock.fileno(), _EPOLLIN)
            self._write(conn, handshake_request(self._target, conn.key))
            return
        if mask & _EPOLLOUT and not self._flush(conn):
            return
        if mask & ~_EPOLLOUT and conn.state is not ConnState.ENDED:
            if conn.state is _OPEN:
                self._read_open(conn)
            else:
                self._read(conn)

    def _receive(self, conn: _Conn) -> bytes | None:
        """What the socket holds (b"": the server closed); None if nothing, or
        the connection broke (then it is ended)."""
        try:
            data = conn.sock.recv(RECEIVE_SIZE)
        except BlockingIOError:
            return None
        except OSError as error:
            self._lost(conn, error)
            return None
        return _read_on(conn.sock, data) if len(data) == RECEIVE_SIZE else data

    def _read_open(self, conn: _Conn) -> None:
        """The hot path: a joined connection is readable."""
        try:
            data = conn.sock.recv(RECEIVE_SIZE)
        except BlockingIOError:
            return
        except OSError as error:
            self._lost(conn, error)
            return
        if len(data) == RECEIVE_SIZE:
            data = _read_on(conn.sock, data)
        elif not data:
            self._lost(conn, None)
            return
        now = time.time_ns()
        stats = self.stats
        stats.seen += 1
        reader = conn.reader
        # Most reads bring exactly one final text frame under 64 KiB: then the
        # frame reader is skipped.
        if data[0] == 0x81 and data[1] <= 126 and reader.idle:
            length, start = data[1], 2
            if length == 126:
                length, start = int.from_bytes(data[2:4], "big"), 4
            if start + length == len(data):
                if conn.pager is None:
                    conn.received += scan_live(data[start:], conn.check, stats, conn.room, now)
                else:
                    self._scan_pager(conn, data[start:], now)
                return
        try:
            frames = reader.feed(data)
        except FramingError as error:
            self._lost(conn, error)
            return
        for opcode, payload in frames:
            if opcode == OP_TEXT:
                if conn.pager is None:
                    conn.received += scan_live(payload, conn.check, stats, conn.room, now)
                else:
                    self._scan_pager(conn, payload, now)
            elif not self._on_control(conn, opcode, payload):
                return

    def _scan_pager(self, conn: _Conn, payload: bytes, now_ns: int) -> None:
        """A pager's text frame: its answers, then its live events."""
        pager = conn.pager
        assert pager is not None
        rest, answers = scan_pages(payload, self.stats, now_ns)
        for paged, before in answers:
            pager.waiting = False
            if paged:
                pager.before = before
            self._wake = 0.0  # the next request may be due already
        if rest:
            conn.received += scan_live(rest, conn.check, self.stats, conn.room, now_ns)

    def _page(self, now: float, end: float) -> float:
        """Send the history requests that are due (until `end`); returns when
        the next is due."""
        wake = math.inf
        period = 1.0 / self._step.page_rate
        for conn in self._joined:
            pager = conn.pager
            if pager is None or conn.state is not _OPEN or pager.waiting:
                continue
            if now >= pager.due:
                frame = b'{"type":"history","limit":%d,"ref":"p%019d"' % (
                    PAGE_LIMIT,
                    time.time_ns(),
                )
                if pager.before is not None:
                    frame += b',"before":%d' % pager.before
                if not self._write(conn, encode_frame(OP_TEXT, frame + b"}")):
                    continue
                pager.waiting = True
                pager.due = max(pager.due + period, now)
                self._page_requests += 1
                continue
            if pager.due < end:
                wake = min(wake, pager.due)
        return wake

    def _read(self, conn: _Conn) -> None:
        """A connection that is upgrading, joining or closing is readable."""
        data = self._receive(conn)
        if data is None:
            return
        if not data:
            self._lost(conn, None)
            return
        if conn.state is ConnState.UPGRADING:
            head = conn.head + data
            if b"\r\n\r\n" not in head:
                if len(head) > MAX_RESPONSE_HEAD:
                    self._fail(conn, "HTTP response head too large")
                else:
                    conn.head = head
                return
            head, _, data = head.partition(b"\r\n\r\n")
            conn.head = b""
            try:
                check_handshake(head, conn.key)
            except ConnectFailure as failure:
                self._fail(conn, failure.reason)
                return
            conn.state = ConnState.JOINING
            conn.joining = Joining()
            hello = {"type": "hello", "name": conn.spec.name, "room": conn.room}
            if not self._write(conn, encode_frame(OP_TEXT, json.dumps(hello).encode())):
                return
            if not data:
                return
        now = time.time_ns()
        self.stats.seen += 1
        try:
            frames = conn.reader.feed(data)
        except FramingError as error:
            self._lost(conn, error)
            return
        for opcode, payload in frames:
            if opcode == OP_TEXT:
                text: bytes | None = payload
                if conn.joining is not None:
                    try:
                        text = conn.joining.feed(payload)
                    except ConnectFailure as failure:
                        self._fail(conn, failure.reason)
                        return
                    if text is not None:
                        self._on_joined(conn, conn.joining.last_id or 0)
                if text:
                    conn.received += scan_live(text, conn.check, self.stats, conn.room, now)
            elif not self._on_control(conn, opcode, payload):
                return

    def _on_control(self, conn: _Conn, opcode: int, payload: bytes) -> bool:
        """A ping, a close or another opcode; False once the connection ended."""
        if opcode == OP_PING:
            return self._write(conn, encode_frame(OP_PONG, payload))
        if opcode != OP_CLOSE:
            return True
        code = close_code(payload)
        if conn.state is ConnState.JOINING:
            self._fail(conn, f"closed with {code} while joining")
            return False
        if conn.state is _OPEN:
            self.stats.closed[str(code)] += 1
            self._write(conn, encode_frame(OP_CLOSE, payload[:2]))
        self._end(conn)
        return False

    def _lost(self, conn: _Conn, error: BaseException | None) -> None:
        """The connection broke (`error`) or the server closed it without a word."""
        state = conn.state
        if state is ConnState.ENDED:
            return
        if state is ConnState.UPGRADING and error is None:
            self._fail(conn, "connection closed during the upgrade")
        elif state in (ConnState.CONNECTING, ConnState.UPGRADING, ConnState.JOINING):
            self._fail(
                conn,
                "connection closed while joining"
                if error is None
                else f"connection lost while joining ({error!r})",
            )
        else:
            if state is _OPEN:
                self.stats.closed["eof"] += 1
            self._end(conn)

    def _end(self, conn: _Conn) -> None:
        if conn.state is ConnState.ENDED:
            return
        if conn.state is _OPEN or conn.state is ConnState.CLOSING:
            self._open -= 1
        conn.state = ConnState.ENDED
        fd = conn.sock.fileno()
        del self._conns[fd]
        self._epoll.unregister(fd)
        conn.sock.close()

    def _write(self, conn: _Conn, data: bytes) -> bool:
        """Write now what the kernel takes, keep the rest for EPOLLOUT; False
        once the connection is gone."""
        if conn.state is ConnState.ENDED:
            return False
        if conn.out:
            conn.out += data
            return True
        try:
            sent = conn.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as error:
            self._lost(conn, error)
            return False
        if sent < len(data):
            conn.out += data[sent:]
            self._epoll.modify(conn.sock.fileno(), _EPOLLIN | _EPOLLOUT)
        return True

    def _flush(self, conn: _Conn) -> bool:
        """EPOLLOUT: write what was kept; False once the connection is gone."""
        try:
            sent = conn.sock.send(conn.out)
        except BlockingIOError:
            return True
        except OSError as error:
            self._lost(conn, error)
            return False
        del conn.out[:sent]
        if not conn.out:
            self._epoll.modify(conn.sock.fileno(), _EPOLLIN)
        return True

    # -- a step: send, then drain

    def _checks(self) -> tuple[int, int, int]:
        return (
            sum(c.check.duplicates for c in self._joined),
            sum(c.check.order_violations for c in self._joined),
            sum(c.check.skipped for c in self._joined),
        )

    def _start_step(self, command: StepCommand) -> None:
        """Start a step's counters; `_pace` sends this process's share."""
        self._busy = Busy.SENDING
        self._received_before += self.stats.received
        self.stats = StepStats(command.start_ns)
        self._cpu_start = _cpu_seconds()
        self._wait_start = proc_wait_seconds()
        self._checks_start = self._checks()
        for conn in self._joined:
            conn.received = 0
        self._members = Counter(c.room for c in self._joined if c.state is _OPEN)
        delay = (command.start_ns - time.time_ns()) / 1e9
        self._late = delay < 0
        self._step = command
        self._step_start = time.monotonic() + delay
        self._step_total = total = total_messages(command.rate, command.duration)
        self._pacers = [
            _Pacer(c, c.spec.sender, sender_share(total, c.spec.sender, command.senders))
            for c in self._joined
            if c.spec.sender is not None and c.state is _OPEN
        ]
        self._page_requests = 0
        for conn in self._joined:
            if conn.pager is not None:
                conn.pager.due = self._step_start if command.page_rate > 0 else math.inf

    def _pace(self, now: float) -> float:
        """Send what is due, each sender's in one write, stamped with the time
        of that write; returns when to wake next (at least `SEND_TICK` on)."""
        step, start, stats = self._step, self._step_start, self.stats
        rate, senders = step.rate, step.senders
        elapsed = now - start
        count = messages_due(elapsed, rate, self._step_total)
        wake = math.inf
        for pacer in self._pacers:
            conn = pacer.conn
            if pacer.sent >= pacer.mine or conn.state is not _OPEN:
                continue
            due = sender_share(count, pacer.sender, senders)
            if due > pacer.sent:
                lag = elapsed - send_offset(pacer.sender, pacer.sent, senders, rate)
                stats.send_lag = max(stats.send_lag, lag)
                payload = self._say_prefix + b"%019d" % time.time_ns() + self._say_suffix
                frames = b"".join(encode_frame(OP_TEXT, payload) for _ in range(due - pacer.sent))
                if not self._write(conn, frames):
                    continue
                stats.sent_by_room[conn.room] += due - pacer.sent
                self._sent += due - pacer.sent
                pacer.sent = due
            if pacer.sent < pacer.mine:
                wake = min(wake, start + send_offset(pacer.sender, pacer.sent, senders, rate))
        end = start + step.duration
        paging = step.page_rate > 0 and now < end
        if paging:
            wake = min(wake, self._page(now, end), end)
        if wake == math.inf:
            self._reply(
                SendReport(
                    sent_by_room=dict(stats.sent_by_room),
                    members_by_room=dict(self._members),
                    send_lag_max=stats.send_lag,
                    late=self._late,
                    page_requests=self._page_requests,
                )
            )
            return wake
        return max(wake, now + SEND_TICK)

    def _start_drain(self, command: DrainCommand) -> None:
        self._busy = Busy.DRAINING
        self._targets = [(c, command.sent_by_room.get(c.room, 0)) for c in self._joined]
        self._quiet = command.quiet
        self._quiet_since, self._seen = time.monotonic(), self.stats.seen

    def _drain_check(self, now: float) -> float:
        """Done once each open connection has every message of its room's
        step, or nothing arrived for `quiet` seconds; then report the step."""
        stats = self.stats
        if not all(c.state is not _OPEN or c.received >= n for c, n in self._targets):
            if stats.seen != self._seen:
                self._quiet_since, self._seen = now, stats.seen
                return now + DRAIN_POLL
            if now - self._quiet_since < self._quiet:
                return now + DRAIN_POLL
        duplicates, violations, skipped = (
            after - before
            for after, before in zip(self._checks(), self._checks_start, strict=True)
        )
        self._reply(
            StepResult(
                received=stats.received,
                stale=stats.stale,
                foreign=stats.foreign,
                duplicates=duplicates,
                order_violations=violations,
                missing_ids=skipped,
                histogram={b: n for b, n in enumerate(stats.histogram) if n},
                pages=stats.pages,
                page_refused=stats.page_refused,
                page_histogram={b: n for b, n in enumerate(stats.page_histogram) if n},
                max_us=stats.max_us,
                last_receive_ns=stats.last_receive_ns,
                errors=dict(stats.errors),
                refused_by_room=dict(stats.refused_by_room),
                closed=dict(stats.closed),
                cpu_seconds=_cpu_seconds() - self._cpu_start,
                wait_seconds=_delta(proc_wait_seconds(), self._wait_start),
            )
        )
        return math.inf

    # -- close

    def _start_close(self) -> None:
        """Send every open connection a close frame; `_close_check` waits for
        the server's answers, at most `CLOSE_WAIT`.

        Reports the connections the server had closed since the last step
        began (or since connecting).
        """
        self._busy = Busy.CLOSING
        self._closed_report = ClosedReport(dict(self.stats.closed))
        self._close_deadline = time.monotonic() + CLOSE_WAIT
        for conn in self._joined:
            if conn.state is _OPEN:
                conn.state = ConnState.CLOSING
                self._write(conn, encode_frame(OP_CLOSE, (1000).to_bytes(2, "big")))

    def _close_check(self, now: float) -> float:
        closing = any(c.state is ConnState.CLOSING for c in self._joined)
        if closing and now < self._close_deadline:
            return now + DRAIN_POLL
        self._reply(self._closed_report)
        self._running = False
        return math.inf


def _read_on(sock: socket.socket, data: bytes) -> bytes:
    """After a read that filled the buffer: read on while reads fill it, up to
    `RECEIVE_LIMIT` (a short read means the socket is empty). What is left,
    or an error, waits for the next wake-up: epoll is level-triggered."""
    chunks, total = [data], len(data)
    while len(data) == RECEIVE_SIZE and total < RECEIVE_LIMIT:
        try:
            data = sock.recv(RECEIVE_SIZE)
        except OSError:
            break
        chunks.append(data)
        total += len(data)
    return b"".join(chunks)


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


@dataclass(frozen=True, slots=True)
class ClosedReport:
    closed: dict[str, int]  # connections the server closed, by close code


@dataclass(frozen=True, slots=True)
class FleetStatistics:
    """A worker's progress counters."""

    connected: int
    sent: int
    received: int


@dataclass(frozen=True, slots=True)
class ConnectCommand:
    concurrency: int


@dataclass(frozen=True, slots=True)
class StepCommand:
    rate: float  # messages per second, all senders together
    duration: float
    start_ns: int  # wall clock (time.time_ns) of the first message
    senders: int  # all senders, in every process
    page_rate: float = 0.0  # history requests per second per pager (0: no paging)


@dataclass(frozen=True, slots=True)
class DrainCommand:
    sent_by_room: dict[str, int]  # the step's messages per room, from every process
    quiet: float  # give up once nothing arrived for this long (seconds)


@dataclass(frozen=True, slots=True)
class CloseCommand:
    pass


Command = ConnectCommand | StepCommand | DrainCommand | CloseCommand


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    target: ServerUrl
    specs: list[ConnSpec]
    size: int
    slot: int
