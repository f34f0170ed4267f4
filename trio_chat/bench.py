"""`trio-chat bench`: a load generator that measures a running trio-chat server.

Theory of operation: the generator opens C WebSocket connections (at most
`--connect-concurrency` handshakes at a time), each joined to one of the
rooms `--rooms`, round robin; the first S connections are the senders. The
connections live in `--procs` spawned worker processes (one at least):
every process holds every P-th connection, so one room may span processes.
The parent coordinates the workers in phases over pipes, all of them at once:

1. connect: every worker opens and joins its connections, then reports;
2. send: a step starts at one wall-clock instant, agreed in advance; the
   global schedule puts message m at `start + m / R`, and sender k sends the
   messages m with `m % S == k`, so the aggregate is paced, not bursty;
3. drain: once every worker has reported what it sent, per room, each waits
   until every connection it holds has received all of its room's messages
   (or nothing at all arrived for `DRAIN_QUIET`), then reports its counts;
4. close.

Each message's text starts with the sender's `time.time_ns()` (19 digits),
so any receiver (all on one machine, one clock) knows its latency. Receivers
decode only what they measure: a frame of `message` lines goes through one
regular expression that picks out each id and send time (once per distinct
frame in a process, see `scan_live`), and only the rare
other events (welcome, join, error) are looked at line by line or through
`json`. Per connection, stored events' ids must rise by exactly 1: a
repeated id is a duplicate, a skipped or late one an order violation.
Expected deliveries are the messages accepted in a room (sent minus those
refused as `rate_limited`) times the room's members at the step's start;
whatever did not arrive is loss. Latencies go into a log-linear histogram
(under 1 % error), which merges across processes.

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

The pure parts (plan, pacing schedule, histogram and percentiles, id checks,
scanning received frames, loss accounting, client-side WebSocket framing,
report arithmetic) come first and do no I/O; the reactor, the process
plumbing, the Trio coordinator and the command line follow.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import hashlib
import json
import math
import multiprocessing
import os
import random
import re
import resource
import secrets
import select
import socket
import sys
import time
import traceback
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from enum import Enum
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final, TextIO, TypeVar
from urllib.parse import urlsplit

import h11
import trio

from .config import parse_duration

_T = TypeVar("_T")

STAMP_DIGITS: Final = 19  # time.time_ns() until the year 2286
STEP_LEAD: Final = 1.0  # seconds between announcing a step and its start
STEP_PAUSE: Final = 1.0  # seconds between sweep steps, for the server to settle
DRAIN_QUIET: Final = 2.0  # a drain ends when nothing arrived for this long
DRAIN_POLL: Final = 0.02
SEND_TICK: Final = 0.001  # a sender sleeps at least this long: what is due is sent at once
IDLE_SETTLE: Final = 1.0  # seconds after the last join before reading the server's memory
CLOSE_WAIT: Final = 5.0  # seconds for the connections to finish their close handshakes
SATURATED: Final = 0.9  # a process busy for this share of the step is saturated
RECEIVE_SIZE: Final = 65536  # bytes per read
IDLE_MEMBERS_PER_ROOM: Final = 10
PROBE_TIMEOUT: Final = 5.0  # seconds for the probe connection that picks an address


class BenchError(Exception):
    """The benchmark cannot run, or its measurement is void; one line for stderr."""


# -- the plan ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """Where the server listens: the WebSocket path, and `/metrics` beside it."""

    host: str
    port: int
    path: str = "/ws"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}{self.path}"

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_target(url: str) -> Target:
    """`ws://HOST:PORT/ws` or `http://HOST:PORT/` (the `/ws` path is implied)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("wss", "https"):
        raise BenchError(
            f"{url!r}: TLS is not supported; point the generator at the server's own "
            "port (ws:// or http://)"
        )
    if scheme not in ("ws", "http"):
        raise BenchError(f"{url!r} is not a ws:// or http:// URL")
    try:
        port = parts.port
    except ValueError as error:
        raise BenchError(f"{url!r}: {error}") from None
    if not parts.hostname:
        raise BenchError(f"{url!r} names no host")
    path = parts.path if parts.path not in ("", "/") else "/ws"
    return Target(parts.hostname, port or 80, path)


@dataclass(frozen=True, slots=True)
class ConnSpec:
    """One connection to open: its name is `c<index>`."""

    index: int
    room: str
    sender: int | None  # its place among the senders, or None for a pure receiver

    @property
    def name(self) -> str:
        return f"c{self.index}"


def plan_connections(
    connections: int, *, rooms: int, senders: int, procs: int, room_prefix: str
) -> list[list[ConnSpec]]:
    """Connection i joins room `i % rooms`, sends if `i < senders`, and lives in
    process `i % procs`: senders and rooms spread over the processes evenly."""
    plan: list[list[ConnSpec]] = [[] for _ in range(procs)]
    for i in range(connections):
        spec = ConnSpec(i, f"{room_prefix}{i % rooms}", i if i < senders else None)
        plan[i % procs].append(spec)
    return plan


# -- the pacing schedule -------------------------------------------------------


def total_messages(rate: float, duration: float) -> int:
    """Messages in a step: message m is due at `m / rate`, for every m with
    `m / rate < duration`."""
    return max(0, math.ceil(rate * duration - 1e-9))


def messages_due(elapsed: float, rate: float, total: int) -> int:
    """How many messages of the global schedule are due `elapsed` s after the start."""
    if elapsed < 0:
        return 0
    return min(total, math.floor(elapsed * rate + 1e-9) + 1)


def sender_share(count: int, sender: int, senders: int) -> int:
    """How many of the first `count` messages are sender's: m with `m % senders == sender`."""
    return (count - sender + senders - 1) // senders if count > sender else 0


def send_offset(sender: int, n: int, senders: int, rate: float) -> float:
    """When sender's n-th message (from 0) is due, in seconds after the start."""
    return (sender + n * senders) / rate


def sweep_rates(start: float, factor: float, steps: int) -> list[float]:
    """`start`, then multiplied by `factor` each step (rounded to 3 significant digits)."""
    return [float(f"{start * factor**k:.3g}") if k else start for k in range(steps)]


# -- latency histogram ---------------------------------------------------------

# Latencies in microseconds: exact below 256 us, then 128 buckets per power
# of two (under 0.8 % relative error). A bucket index is cheap to compute on
# the hot path and histograms merge by adding counts.
_LINEAR: Final = 256
_SUB_BITS: Final = 7
HISTOGRAM_SIZE: Final = 64 << _SUB_BITS


def latency_bucket(micros: int) -> int:
    """The histogram bucket of a latency in microseconds (negative counts as 0)."""
    if micros < _LINEAR:
        return max(micros, 0)
    shift = micros.bit_length() - 8
    return (shift << _SUB_BITS) + (micros >> shift)


def bucket_ceiling(bucket: int) -> int:
    """The largest latency (us) that falls into `bucket`."""
    if bucket < _LINEAR:
        return bucket
    shift = (bucket >> _SUB_BITS) - 1
    mantissa = bucket - (shift << _SUB_BITS)
    return ((mantissa + 1) << shift) - 1


def percentile(histogram: Mapping[int, int], fraction: float) -> int | None:
    """The latency (us) that `fraction` of the samples do not exceed (the
    bucket's upper bound); None without samples."""
    total = sum(histogram.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(fraction * total - 1e-9))
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            return bucket_ceiling(bucket)
    raise AssertionError("unreachable: the ranks add up to the total")


def merge_histograms(histograms: Iterable[Mapping[int, int]]) -> dict[int, int]:
    merged: Counter[int] = Counter()
    for histogram in histograms:
        merged.update(histogram)
    return dict(merged)


# -- id order ------------------------------------------------------------------

_MISSING_LIMIT: Final = 100_000  # remember at most this many skipped ids per connection


class SequenceCheck:
    """The ids one connection receives must rise by exactly 1 from its join.

    `observe` returns whether the id is new. An id above `last + 1` skips ids
    (an order violation; they are remembered as missing); a missing id that
    arrives later is out of order (another violation); any other id at or
    below `last` is a duplicate.
    """

    __slots__ = ("duplicates", "last", "missing", "order_violations", "skipped")

    def __init__(self, last: int) -> None:
        self.last = last
        self.missing: set[int] = set()
        self.skipped = 0  # ids skipped, late arrivals not deducted
        self.duplicates = 0
        self.order_violations = 0

    def observe(self, ident: int) -> bool:
        if ident == self.last + 1:
            self.last = ident
            return True
        return self.irregular(ident)

    def irregular(self, ident: int) -> bool:
        """`observe` for an id that is not `last + 1` (the hot path inlines the rest)."""
        if ident > self.last + 1:
            self.order_violations += 1
            self.skipped += ident - self.last - 1
            if len(self.missing) + ident - self.last - 1 <= _MISSING_LIMIT:
                self.missing.update(range(self.last + 1, ident))
            self.last = ident
            return True
        if ident in self.missing:
            self.missing.discard(ident)
            self.skipped -= 1
            self.order_violations += 1
            return True
        self.duplicates += 1
        return False


# -- loss accounting -----------------------------------------------------------


def expected_deliveries(
    sent_by_room: Mapping[str, int],
    refused_by_room: Mapping[str, int],
    members_by_room: Mapping[str, int],
) -> int:
    """Messages the server accepted in each room times the room's members."""
    return sum(
        max(0, sent - refused_by_room.get(room, 0)) * members_by_room.get(room, 0)
        for room, sent in sent_by_room.items()
    )


# -- WebSocket, client side ----------------------------------------------------

OP_CONTINUATION: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA
_ACCEPT_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_HEAD: Final = 65536


class ConnectFailure(Exception):
    """A connection could not be opened or joined; `reason` is what the report counts."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FramingError(Exception):
    """The server's bytes break RFC 6455 framing."""


def handshake_request(target: Target, key: bytes) -> bytes:
    return (
        f"GET {target.path} HTTP/1.1\r\nHost: {target.authority}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key.decode('ascii')}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode("ascii")


def accept_token(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + _ACCEPT_GUID).digest())  # noqa: S324 (RFC 6455)


def check_handshake(head: bytes, key: bytes) -> None:
    """Check the server's response head (up to the blank line).

    Raises:
        ConnectFailure: `HTTP <status>` if it refused, or why the 101 is unusable.
    """
    lines = head.split(b"\r\n")
    status_line = lines[0].split(b" ", 2)
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise ConnectFailure("not an HTTP response")
    status = int(status_line[1])
    if status != 101:
        raise ConnectFailure(f"HTTP {status}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"sec-websocket-accept") != accept_token(key):
        raise ConnectFailure("bad Sec-WebSocket-Accept")


def encode_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """A final client frame: masked, as RFC 6455 requires of clients.

    The mask is fresh per frame (`random`, not a cryptographic source: it
    protects intermediaries from chosen plaintext, which a benchmark's
    fixed text does not threaten).
    """
    if mask is None:
        mask = random.randbytes(4)  # noqa: S311 (see above)
    length = len(payload)
    if length < 126:
        head = bytes((0x80 | opcode, 0x80 | length))
    elif length < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
    if not length:
        return head + mask
    key = (mask * (length // 4 + 1))[:length]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")
    return head + mask + masked.to_bytes(length, "big")


def close_code(payload: bytes) -> int:
    """The code of a close frame's payload (1005: none given)."""
    return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005


class FrameReader:
    """Splits the server's byte stream into messages: `(opcode, payload)`.

    Server frames are unmasked. Fragments are reassembled; control frames
    come out as they arrive. Text is not decoded: the generator slices bytes.
    """

    __slots__ = ("_buffer", "_fragments", "_opcode", "idle")

    def __init__(self) -> None:
        self._buffer = b""
        self._fragments: list[bytes] = []
        self._opcode = 0
        self.idle = True  # nothing buffered: the next bytes start a new message

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buffer + data if self._buffer else data
        out: list[tuple[int, bytes]] = []
        pos, end = 0, len(buf)
        while end - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            if second & 0x80:
                raise FramingError("a masked frame from the server")
            if first & 0x70:
                raise FramingError("reserved bits set")
            length, start = second & 0x7F, pos + 2
            if length == 126:
                if end - pos < 4:
                    break
                length, start = int.from_bytes(buf[pos + 2 : pos + 4], "big"), pos + 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, start = int.from_bytes(buf[pos + 2 : pos + 10], "big"), pos + 10
            if end - start < length:
                break
            payload = buf[start : start + length]
            pos = start + length
            opcode, final = first & 0x0F, first & 0x80
            if opcode >= OP_CLOSE:
                out.append((opcode, payload))
            elif opcode == OP_CONTINUATION:
                if not self._fragments:
                    raise FramingError("a continuation frame without a start")
                self._fragments.append(payload)
                if final:
                    out.append((self._opcode, b"".join(self._fragments)))
                    self._fragments = []
            elif self._fragments:
                raise FramingError("a new message inside a fragmented one")
            elif final:
                out.append((opcode, payload))
            else:
                self._opcode = opcode
                self._fragments = [payload]
        self._buffer = buf[pos:]
        self.idle = not self._buffer and not self._fragments
        return out


# -- server metrics ------------------------------------------------------------


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format: the value of every unlabelled sample by name."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition(" ")
        if "{" in name:
            continue
        try:
            values[name] = float(rest.split()[0])
        except (IndexError, ValueError):
            continue
    return values


@dataclass(frozen=True, slots=True)
class ServerSample:
    """The server's counters at one instant; None where no source had them."""

    cpu_seconds: float | None = None
    rss_bytes: float | None = None
    deliveries: float | None = None  # trio_chat_deliveries: events queued to clients
    slow_drops: float | None = None
    connections: float | None = None
    wait_seconds: float | None = None  # runnable, waiting for a CPU (--server-pid only)


def sample_from_metrics(metrics: Mapping[str, float]) -> ServerSample:
    def first(*names: str) -> float | None:
        return next((metrics[name] for name in names if name in metrics), None)

    return ServerSample(
        cpu_seconds=first("process_cpu_seconds_total"),
        rss_bytes=first("process_resident_memory_bytes"),
        deliveries=first("trio_chat_deliveries_total", "trio_chat_deliveries"),
        slow_drops=first("trio_chat_slow_drops_total", "trio_chat_slow_drops"),
        connections=first("trio_chat_connections"),
    )


def proc_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_bytes(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) * 1024
    raise OSError(f"no VmRSS for process {pid}")


def proc_wait_seconds(pid: int | str = "self") -> float | None:
    """Time the process's main thread spent runnable but waiting for a CPU
    (/proc/PID/schedstat); None where Linux does not say."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def _delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


# -- reports -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bounds:
    """What a sweep step must achieve to count as held."""

    max_p99: float = 0.250  # seconds
    min_delivered: float = 0.99


@dataclass(frozen=True, slots=True)
class SendReport:
    """One worker's sending side of a step."""

    sent_by_room: dict[str, int]
    members_by_room: dict[str, int]  # its joined connections per room at the start
    send_lag_max: float  # seconds a send ran behind its schedule, at most
    late: bool  # the step's start had passed when the worker heard of it


@dataclass(frozen=True, slots=True)
class StepResult:
    """One worker's receiving side of a step."""

    received: int  # message events of this step, duplicates not counted
    stale: int  # message events sent before this step
    foreign: int  # message events without a send time (not ours)
    duplicates: int
    order_violations: int
    missing_ids: int
    histogram: dict[int, int]
    max_us: int
    last_receive_ns: int
    errors: dict[str, int]  # error events by code, rate_limited excepted
    refused_by_room: dict[str, int]  # rate_limited errors by the sender's room
    closed: dict[str, int]  # connections the server closed, by close code
    cpu_seconds: float  # the worker process's CPU time over the step
    wait_seconds: float | None  # ... and its time runnable but waiting for a CPU


@dataclass(frozen=True, slots=True)
class ConnectReport:
    start: float  # wall clock
    end: float
    connected: int
    failures: dict[str, int]
    cpu_seconds: float  # the worker process's CPU time while connecting


@dataclass(frozen=True, slots=True)
class StepReport:
    """A step as the report shows it; see README "Measuring" for the meaning of each key."""

    rate: float
    duration: float
    sent: int
    rate_limited: int
    members: int
    expected: int
    received: int
    loss: int
    delivered: float
    deliveries_per_second: float
    elapsed: float
    duplicates: int
    order_violations: int
    missing_ids: int
    stale: int
    foreign: int
    latency_ms: dict[str, float | None]
    closed: dict[str, int]
    errors: dict[str, int]
    send_lag_max_ms: float
    server_cpu_seconds: float | None
    server_cpu_percent: float | None
    server_cpu_us_per_delivery: float | None
    server_wait_percent: float | None
    server_saturated: bool | None
    server_deliveries: int | None
    server_slow_drops: int | None
    generator_cpu_seconds: float
    generator_cpu_percent: float
    generator_wait_percent: float | None
    generator_saturated: bool
    held: bool


def summarize_step(
    *,
    rate: float,
    duration: float,
    start_ns: int,
    sends: Sequence[SendReport],
    results: Sequence[StepResult],
    server_before: ServerSample,
    server_after: ServerSample,
    coordinator_cpu: float,
    bounds: Bounds,
) -> StepReport:
    """Add up the workers' reports of one step (pure arithmetic)."""
    sent_by_room: Counter[str] = Counter()
    members_by_room: Counter[str] = Counter()
    refused_by_room: Counter[str] = Counter()
    closed: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for send in sends:
        sent_by_room.update(send.sent_by_room)
        members_by_room.update(send.members_by_room)
    for result in results:
        refused_by_room.update(result.refused_by_room)
        closed.update(result.closed)
        errors.update(result.errors)
    sent = sum(sent_by_room.values())
    expected = expected_deliveries(sent_by_room, refused_by_room, members_by_room)
    received = sum(r.received for r in results)
    last_ns = max((r.last_receive_ns for r in results), default=0)
    elapsed = max(duration, (last_ns - start_ns) / 1e9)
    histogram = merge_histograms(r.histogram for r in results)
    p99 = percentile(histogram, 0.99)

    def ms(micros: int | None) -> float | None:
        return None if micros is None else micros / 1000

    max_us = max((r.max_us for r in results), default=0)
    latency = {
        "p50": ms(percentile(histogram, 0.50)),
        "p90": ms(percentile(histogram, 0.90)),
        "p99": ms(p99),
        "max": ms(max_us) if histogram else None,
    }
    server_cpu = _delta(server_after.cpu_seconds, server_before.cpu_seconds)
    server_deliveries = _delta(server_after.deliveries, server_before.deliveries)
    slow_drops = _delta(server_after.slow_drops, server_before.slow_drops)
    generator_cpu = sum(r.cpu_seconds for r in results) + coordinator_cpu
    waits = [r.wait_seconds for r in results]
    generator_wait = None if None in waits else sum(w or 0.0 for w in waits)
    # A process that was running or runnable nearly all the time wanted a
    # whole core: busy, or starved by other load on the machine.
    saturated = any(
        r.cpu_seconds + (r.wait_seconds or 0.0) >= SATURATED * elapsed for r in results
    )
    server_wait = _delta(server_after.wait_seconds, server_before.wait_seconds)
    delivered = received / expected if expected else (1.0 if not sent else 0.0)
    rate_limited = sum(refused_by_room.values())
    held = (
        rate_limited == 0
        and delivered >= bounds.min_delivered
        and p99 is not None
        and p99 <= bounds.max_p99 * 1e6
    )
    return StepReport(
        rate=rate,
        duration=duration,
        sent=sent,
        rate_limited=rate_limited,
        members=sum(members_by_room.values()),
        expected=expected,
        received=received,
        loss=expected - received,
        delivered=delivered,
        deliveries_per_second=received / elapsed,
        elapsed=elapsed,
        duplicates=sum(r.duplicates for r in results),
        order_violations=sum(r.order_violations for r in results),
        missing_ids=sum(r.missing_ids for r in results),
        stale=sum(r.stale for r in results),
        foreign=sum(r.foreign for r in results),
        latency_ms=latency,
        closed=dict(closed),
        errors=dict(errors),
        send_lag_max_ms=max((s.send_lag_max for s in sends), default=0.0) * 1000,
        server_cpu_seconds=server_cpu,
        server_cpu_percent=None if server_cpu is None else 100 * server_cpu / elapsed,
        server_cpu_us_per_delivery=(
            None if server_cpu is None or not received else 1e6 * server_cpu / received
        ),
        server_wait_percent=None if server_wait is None else 100 * server_wait / elapsed,
        server_saturated=(
            None
            if server_cpu is None
            else server_cpu + (server_wait or 0.0) >= SATURATED * elapsed
        ),
        server_deliveries=None if server_deliveries is None else round(server_deliveries),
        server_slow_drops=None if slow_drops is None else round(slow_drops),
        generator_cpu_seconds=generator_cpu,
        generator_cpu_percent=100 * generator_cpu / elapsed,
        generator_wait_percent=None if generator_wait is None else 100 * generator_wait / elapsed,
        generator_saturated=saturated,
        held=held,
    )


@dataclass(frozen=True, slots=True)
class IdleReport:
    memory_before_bytes: float | None
    memory_after_bytes: float | None
    memory_per_connection_kb: float | None
    server_connections: int | None
    closed: dict[str, int]


def memory_per_connection_kb(
    before: float | None, after: float | None, connections: int
) -> float | None:
    """Growth of the server's resident memory per connection, in KB (1024 bytes)."""
    if before is None or after is None or connections <= 0:
        return None
    return (after - before) / connections / 1024


@dataclass(frozen=True, slots=True)
class BenchReport:
    """Everything `--json` prints (one object)."""

    mode: str  # "load", "sweep" or "idle"
    url: str
    connections: int
    connected: int
    connect_failures: dict[str, int]
    connect_seconds: float
    connect_server_cpu_seconds: float | None
    connect_generator_cpu_seconds: float
    rooms: int
    senders: int
    procs: int
    size: int
    steps: list[StepReport]
    result: StepReport | None  # load: the step; sweep: the highest step held
    idle: IdleReport | None
    warnings: list[str]

    @property
    def ok(self) -> bool:
        """Whether the measurement stands: every connection joined, nothing refused."""
        return (
            self.connected == self.connections
            and not self.connect_failures
            and all(step.rate_limited == 0 for step in self.steps)
            and (self.mode == "idle" or bool(self.steps))
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data


def report_warnings(report: BenchReport) -> list[str]:
    """What makes a measurement doubtful, in words."""
    warnings: list[str] = []
    if report.connect_failures:
        reasons = ", ".join(f"{n} x {why}" for why, n in sorted(report.connect_failures.items()))
        warnings.append(
            f"{report.connections - report.connected} of {report.connections} connections "
            f"failed ({reasons}); for many connections raise the server's "
            "--max-connections and the open-file limit (ulimit -n)"
        )
    for number, step in enumerate(report.steps, 1):
        where = f"step {number} ({step.rate:g} msg/s)" if len(report.steps) > 1 else "the run"
        if step.rate_limited:
            warnings.append(
                f"{where}: the server refused {step.rate_limited} messages as rate_limited; "
                "these are not counted as loss. Run the server with --rate-limit 0 "
                "for benchmarks"
            )
        if step.closed:
            codes = ", ".join(f"{n} x {code}" for code, n in sorted(step.closed.items()))
            hint = (
                " (1013: a connection's send queue overflowed: the generator read too "
                "slowly, or the server's --send-queue-size is too small for the burst)"
                if "1013" in step.closed
                else ""
            )
            warnings.append(f"{where}: the server closed connections: {codes}{hint}")
        if step.generator_saturated:
            warnings.append(
                f"{where}: the generator was saturated (a process of it was running or "
                f"waiting for a CPU over {SATURATED:.0%} of the time): it may be the "
                "bottleneck; add --procs and cores, or quiet the machine"
            )
        if (step.generator_wait_percent or 0) >= 10 or (step.server_wait_percent or 0) >= 10:
            warnings.append(
                f"{where}: the machine is contended: the server waited for a CPU "
                f"{step.server_wait_percent or 0:.0f} % and the generator "
                f"{step.generator_wait_percent or 0:.0f} % of the time; latencies "
                "include that wait"
            )
        if step.errors:
            warnings.append(f"{where}: error events: {step.errors}")
        if step.stale or step.foreign:
            warnings.append(
                f"{where}: {step.stale} messages from an earlier step and {step.foreign} "
                "messages not sent by the generator were received (not counted)"
            )
    if report.idle is not None and report.idle.closed:
        warnings.append(f"the server closed idle connections: {report.idle.closed}")
    per_connection = report.idle.memory_per_connection_kb if report.idle else None
    if per_connection is not None and per_connection < 1:
        warnings.append(
            f"the server's memory grew only {per_connection:.1f} KB per connection: it "
            "probably reused memory freed by earlier connections; measure a freshly "
            "started server (benchmarks/run.py does)"
        )
    return warnings


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else many or one + 's'}"


def _connect_cpu(report: BenchReport) -> str:
    server = report.connect_server_cpu_seconds
    return (
        f" (CPU: server {'-' if server is None else f'{server:.2f} s'}, "
        f"generator {report.connect_generator_cpu_seconds:.2f} s)"
    )


def _waited(percent: float | None) -> str:
    return "" if percent is None else f", waited for a CPU {percent:.1f} %"


def _number(value: float) -> str:
    return f"{value:,.0f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms" if value >= 10 else f"{value:.2f} ms"


def format_step(step: StepReport) -> list[str]:
    latency = step.latency_ms
    server = (
        "  server CPU    not available (no /metrics and no --server-pid)"
        if step.server_cpu_percent is None
        else f"  server CPU    {step.server_cpu_percent:.1f} % of a core"
        + (
            f" ({step.server_cpu_us_per_delivery:.2f} us per delivery)"
            if step.server_cpu_us_per_delivery is not None
            else ""
        )
        + _waited(step.server_wait_percent)
        + (" (SATURATED)" if step.server_saturated else "")
    )
    closed = ", ".join(f"{n} x {code}" for code, n in sorted(step.closed.items())) or "none"
    return [
        f"  offered       {step.rate:,.6g} msg/s x {step.duration:g} s: {_number(step.sent)} "
        f"messages to {step.members} members",
        f"  deliveries    {_number(step.received)} of {_number(step.expected)} expected "
        f"({100 * step.delivered:.2f} %), {_number(step.deliveries_per_second)}/s "
        f"over {step.elapsed:.2f} s",
        f"  loss          {_number(step.loss)}   duplicates {step.duplicates}   "
        f"order violations {step.order_violations}   rate_limited {step.rate_limited}",
        f"  latency       p50 {_ms(latency['p50'])}   p90 {_ms(latency['p90'])}   "
        f"p99 {_ms(latency['p99'])}   max {_ms(latency['max'])}",
        server,
        f"  generator CPU {step.generator_cpu_percent:.1f} % of a core"
        + _waited(step.generator_wait_percent)
        + (" (SATURATED)" if step.generator_saturated else "")
        + f", send lag max {step.send_lag_max_ms:.1f} ms",
        f"  closed        {closed}",
    ]


def format_report(report: BenchReport) -> str:
    """The human summary."""
    lines = [
        f"trio-chat bench {report.mode}: {report.url}",
        f"  connections   {report.connected} of {report.connections} joined in "
        f"{report.connect_seconds:.2f} s{_connect_cpu(report)} ({_count(report.rooms, 'room')}, "
        f"{_count(report.senders, 'sender')}, {_count(report.procs, 'process', 'processes')}, "
        f"{report.size}-byte messages)",
    ]
    if report.idle is not None:
        idle = report.idle
        mb = "-"
        if idle.memory_before_bytes is not None and idle.memory_after_bytes is not None:
            mb = (
                f"{idle.memory_before_bytes / 2**20:.1f} MB -> "
                f"{idle.memory_after_bytes / 2**20:.1f} MB"
            )
        per = idle.memory_per_connection_kb
        lines.append(
            f"  server memory {mb}: "
            + ("not available" if per is None else f"{per:.1f} KB per connection")
        )
    if report.mode == "load" and report.result is not None:
        lines.extend(format_step(report.result))
    elif report.mode == "sweep":
        lines.append(
            f"  {'msg/s':>9} {'deliveries/s':>13} {'delivered':>9} {'p50':>9} {'p99':>9} "
            f"{'server':>7} {'gen':>6}  held"
        )
        for step in report.steps:
            server = "-" if step.server_cpu_percent is None else f"{step.server_cpu_percent:.0f}%"
            lines.append(
                f"  {step.rate:>9,.6g} {_number(step.deliveries_per_second):>13} "
                f"{100 * step.delivered:>8.2f}% {_ms(step.latency_ms['p50']):>9} "
                f"{_ms(step.latency_ms['p99']):>9} {server:>7} "
                f"{step.generator_cpu_percent:>5.0f}%  {'yes' if step.held else 'no'}"
            )
        best = report.result
        if best is None:
            lines.append("  highest held: none (the first step already broke the bounds)")
        else:
            lines.append(
                f"  highest held: {_number(best.deliveries_per_second)} deliveries/s "
                f"({best.rate:,.6g} msg/s, p99 {_ms(best.latency_ms['p99'])})"
            )
    return "\n".join(lines)


# -- what arrives: counting and checking (pure) ----------------------------------

_MESSAGE: Final = b'{"type":"message","id":'
_JOIN: Final = b'{"type":"join","id":'
_LEAVE: Final = b'{"type":"leave","id":'
_TEXT: Final = b'"text":"'


class StepStats:
    """One process's counters for the current step; the hot path writes them."""

    __slots__ = (
        "closed",
        "errors",
        "foreign",
        "histogram",
        "last_receive_ns",
        "max_us",
        "parsed",
        "received",
        "refused_by_room",
        "seen",
        "send_lag",
        "sent_by_room",
        "stale",
        "start_ns",
    )

    def __init__(self, start_ns: int) -> None:
        self.start_ns = start_ns
        self.received = 0
        self.stale = 0
        self.foreign = 0
        self.seen = 0  # reads, for telling a finished drain from a quiet one
        self.histogram = [0] * HISTOGRAM_SIZE
        self.max_us = 0
        self.last_receive_ns = 0
        self.errors: Counter[str] = Counter()
        self.refused_by_room: Counter[str] = Counter()
        self.closed: Counter[str] = Counter()
        self.sent_by_room: Counter[str] = Counter()
        self.send_lag = 0.0
        self.parsed: dict[bytes, tuple[int, int, list[int]]] = {}  # see scan_live


# A message line as the server writes it for the generator (compact JSON,
# keys in this order): its id and the 19-digit send time its text starts with.
# Not anchored to the start of a line, so that the engine can look for the
# literal start (twice as fast); JSON strings escape quotes, so the literal
# cannot occur inside one, and `scan_live` checks that every line matched.
_PARSED_LIMIT: Final = 1024  # distinct frames remembered by scan_live, per step
_MESSAGE_LINE: Final = re.compile(
    rb'\{"type":"message","id":(\d+),"room":"[^"\n]*","name":"[^"\n]*","text":"(\d{19})'
)


def parse_messages(payload: bytes) -> tuple[int, int, list[int]] | None:
    """A frame whose lines are all stamped messages with consecutive ids: the
    first id, the last, and each send time; None for any other frame."""
    found = _MESSAGE_LINE.findall(payload)
    if len(found) != payload.count(b"\n") + 1:
        return None
    first = int(found[0][0])
    if [int(ident) for ident, _ in found] != list(range(first, first + len(found))):
        return None
    return first, first + len(found) - 1, [int(stamp) for _, stamp in found]


def scan_live(
    payload: bytes, check: SequenceCheck, stats: StepStats, room: str, now_ns: int
) -> int:
    """The hot path: count, check and time the events of one text frame of a
    joined connection, received at `now_ns`; returns the messages counted.

    In the steady state a frame holds messages with consecutive ids, and
    every member of the room receives the same bytes: `parse_messages` runs
    once per distinct frame (a regular expression pass in C) and the result
    is kept in `stats.parsed`, so for the other members only the ids' order
    and the latencies are left to check. Any other frame, or one whose ids
    do not follow on from the connection's last, goes line by line through
    `scan_lines`, with the same result.
    """
    parsed = stats.parsed.get(payload)
    if parsed is None:
        parsed = parse_messages(payload)
        if parsed is None:
            return scan_lines(payload, check, stats, room, now_ns)
        if len(stats.parsed) >= _PARSED_LIMIT:
            stats.parsed.clear()
        stats.parsed[payload] = parsed
    first, last, stamps = parsed
    if first != check.last + 1:
        return scan_lines(payload, check, stats, room, now_ns)
    check.last = last
    histogram = stats.histogram
    start_ns = stats.start_ns
    worst = stats.max_us
    received = 0
    for sent_ns in stamps:
        if sent_ns < start_ns:
            stats.stale += 1
            continue
        received += 1
        micros = (now_ns - sent_ns) // 1000
        if micros > worst:  # noqa: PLR1730 (cheaper than max())
            worst = micros
        if micros < 256:  # latency_bucket, inlined: once per delivery
            histogram[max(micros, 0)] += 1
        else:
            shift = micros.bit_length() - 8
            histogram[(shift << 7) + (micros >> shift)] += 1
    if received:
        stats.received += received
        stats.max_us = worst
        stats.last_receive_ns = now_ns
    return received


def scan_lines(
    payload: bytes, check: SequenceCheck, stats: StepStats, room: str, now_ns: int
) -> int:
    """`scan_live` for any frame, line by line.

    A `message`, `join` or `leave` line is recognised by its prefix and its id
    sliced out of the bytes (the server writes compact JSON with `type` and
    `id` first); anything else is decoded in full by `scan_other`.
    """
    last = check.last
    histogram = stats.histogram
    start_ns = stats.start_ns
    worst = stats.max_us
    received = 0
    for line in payload.split(b"\n"):
        if line.startswith(_MESSAGE):
            comma = line.find(b",", 23)
            ident = int(line[23:comma])
            if ident == last + 1:
                last = ident
            else:
                check.last = last
                fresh = check.irregular(ident)
                last = check.last
                if not fresh:
                    continue
            at = line.find(_TEXT, comma) + 8
            stamp = line[at : at + STAMP_DIGITS]
            if at < 8 or len(stamp) < STAMP_DIGITS or not stamp.isdigit():
                stats.foreign += 1
                continue
            sent_ns = int(stamp)
            if sent_ns < start_ns:
                stats.stale += 1
                continue
            received += 1
            micros = (now_ns - sent_ns) // 1000
            worst = max(worst, micros)
            histogram[latency_bucket(micros)] += 1
        elif line.startswith((_JOIN, _LEAVE)):
            start = line.find(b'"id":') + 5
            ident = int(line[start : line.find(b",", start)])
            if ident == last + 1:
                last = ident
            else:
                check.last = last
                check.irregular(ident)
                last = check.last
        elif line:
            check.last = last
            received += scan_other(line, check, stats, room, now_ns)
            last = check.last
    check.last = last
    if received:
        stats.received += received
        stats.max_us = worst
        stats.last_receive_ns = now_ns
    return received


def scan_other(line: bytes, check: SequenceCheck, stats: StepStats, room: str, now_ns: int) -> int:
    """Any other line, decoded in full; returns 1 for a counted message.

    A `rate_limited` error is counted against `room`, the room of the
    connection that sent the refused message.
    """
    event = json.loads(line)
    ident = event.get("id")
    if isinstance(ident, int) and not check.observe(ident):
        return 0
    kind = event.get("type")
    if kind == "error":
        code = str(event.get("code"))
        if code == "rate_limited":
            stats.refused_by_room[room] += 1
        else:
            stats.errors[code] += 1
    elif kind == "message":
        stamp = str(event.get("text", ""))[:STAMP_DIGITS]
        if len(stamp) < STAMP_DIGITS or not stamp.isdigit():
            stats.foreign += 1
        elif int(stamp) < stats.start_ns:
            stats.stale += 1
        else:
            micros = (now_ns - int(stamp)) // 1000
            stats.histogram[latency_bucket(micros)] += 1
            stats.max_us = max(stats.max_us, micros)
            return 1
    return 0


class Joining:
    """A connection between its hello and its own join.

    The welcome names the id of the connection's own join (`last_id`); the
    history replayed before it is not counted. `feed` takes one text frame
    and returns None while still joining, else what followed the join in
    that frame (often nothing).
    """

    __slots__ = ("last_id",)

    def __init__(self) -> None:
        self.last_id: int | None = None

    def feed(self, payload: bytes) -> bytes | None:
        """Raises:
        ConnectFailure: the server answered the hello with an error event.
        """
        lines = payload.split(b"\n")
        for k, line in enumerate(lines):
            if not line:
                continue
            event = json.loads(line)
            kind = event.get("type")
            if kind == "welcome":
                self.last_id = event["last_id"]
            elif kind == "error":
                raise ConnectFailure(f"error {event.get('code')} while joining")
            elif self.last_id is not None and event.get("id") == self.last_id:
                return b"\n".join(lines[k + 1 :])
        return None


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
        self.check = SequenceCheck(0)
        self.received = 0  # messages counted in the current step
        self.out = bytearray()  # what the socket would not take yet


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
        conn.check = SequenceCheck(last_id)
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
                conn.received += scan_live(data[start:], conn.check, stats, conn.room, now)
                return
        try:
            frames = reader.feed(data)
        except FramingError as error:
            self._lost(conn, error)
            return
        for opcode, payload in frames:
            if opcode == OP_TEXT:
                conn.received += scan_live(payload, conn.check, stats, conn.room, now)
            elif not self._on_control(conn, opcode, payload):
                return

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
                if len(head) > _MAX_HEAD:
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
        if wake == math.inf:
            self._reply(
                SendReport(
                    sent_by_room=dict(stats.sent_by_room),
                    members_by_room=dict(self._members),
                    send_lag_max=stats.send_lag,
                    late=self._late,
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


@dataclass(frozen=True, slots=True)
class DrainCommand:
    sent_by_room: dict[str, int]  # the step's messages per room, from every process
    quiet: float  # give up once nothing arrived for this long (seconds)


@dataclass(frozen=True, slots=True)
class CloseCommand:
    pass


Command = ConnectCommand | StepCommand | DrainCommand | CloseCommand


# -- the server probe ----------------------------------------------------------


async def http_get(target: Target, path: str) -> tuple[int, bytes]:
    """One GET on its own connection: the status and the body."""
    stream = await trio.open_tcp_stream(target.host, target.port)
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        request = h11.Request(
            method="GET",
            target=path,
            headers=[("Host", target.authority), ("Connection", "close")],
        )
        await stream.send_all((conn.send(request) or b"") + (conn.send(h11.EndOfMessage()) or b""))
        status, body = 0, []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some(65536)))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return status, b"".join(body)


async def sample_server(target: Target, pid: int | None) -> ServerSample:
    """The server's counters: CPU and memory from /proc when `pid` is given,
    else from `/metrics`; the trio_chat_* counters from `/metrics` if it answers.

    Raises:
        BenchError: the server cannot be reached at all.
    """
    try:
        status, body = await http_get(target, "/metrics")
    except OSError as error:
        raise BenchError(f"cannot reach the server at {target.authority}: {error}") from None
    except (h11.RemoteProtocolError, trio.BrokenResourceError):
        status, body = 0, b""
    sample = sample_from_metrics(parse_metrics(body.decode("utf-8", "replace")))
    if status != 200:
        sample = ServerSample()
    if pid is not None:
        try:
            cpu, rss = proc_cpu_seconds(pid), proc_rss_bytes(pid)
        except (OSError, IndexError, ValueError) as error:
            raise BenchError(f"cannot read process {pid} (--server-pid): {error}") from None
        sample = ServerSample(
            cpu,
            rss,
            sample.deliveries,
            sample.slow_drops,
            sample.connections,
            proc_wait_seconds(pid),
        )
    return sample


# -- workers: spawned processes, each running a reactor ---------------------------


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    target: Target
    specs: list[ConnSpec]
    size: int
    slot: int


@dataclass(frozen=True, slots=True)
class WorkerFailed:
    traceback: str


@dataclass(frozen=True, slots=True)
class WorkerReady:
    pass


class Worker:
    """A reactor in a spawned process, reached over a pipe; its progress
    counters sit in shared memory, three per worker."""

    def __init__(
        self,
        process: multiprocessing.process.BaseProcess,
        conn: Connection,
        counters: Any,
        slot: int,
    ) -> None:
        self.process = process
        self._conn = conn
        self._counters = counters
        self._slot = slot

    async def receive(self) -> object:
        try:
            reply: object = await trio.to_thread.run_sync(self._conn.recv, abandon_on_cancel=True)
        except EOFError:
            raise BenchError(
                f"worker process {self._slot} died (exit code {self.process.exitcode})"
            ) from None
        if isinstance(reply, WorkerFailed):
            raise BenchError(f"worker process {self._slot} failed:\n{reply.traceback}")
        return reply

    async def call(self, command: Command) -> object:
        await trio.to_thread.run_sync(self._conn.send, command)
        return await self.receive()

    def statistics(self) -> FleetStatistics:
        base = 3 * self._slot
        return FleetStatistics(*(int(self._counters[base + k]) for k in range(3)))


def _worker_main(plan: WorkerPlan, conn: Connection, counters: Any) -> None:
    """A spawned worker process: one reactor, driven by the coordinator's commands."""
    raise_open_file_limit()
    with contextlib.suppress(KeyboardInterrupt):
        reactor: Reactor | None = None
        try:
            reactor = Reactor(plan, conn, counters)
            conn.send(WorkerReady())
            reactor.run()
        except Exception as error:  # noqa: BLE001 (reported to the coordinator)
            with contextlib.suppress(OSError):
                conn.send(WorkerFailed("".join(traceback.format_exception(error))))
        finally:
            if reactor is not None:
                reactor.close()


@asynccontextmanager
async def open_workers(
    target: Target, plan: Sequence[list[ConnSpec]], *, size: int
) -> AsyncIterator[list[Worker]]:
    """One spawned worker process per entry of `plan` (terminated on exit if
    they have not finished by then)."""
    context = multiprocessing.get_context("spawn")
    counters = context.RawArray("q", 3 * len(plan))
    workers: list[Worker] = []
    try:
        for slot, specs in enumerate(plan):
            parent_end, child_end = context.Pipe()
            process = context.Process(
                target=_worker_main,
                args=(WorkerPlan(target, specs, size, slot), child_end, counters),
                name=f"trio-chat-bench-{slot}",
                daemon=True,
            )
            await trio.to_thread.run_sync(process.start)
            child_end.close()
            workers.append(Worker(process, parent_end, counters, slot))
        for worker in workers:
            ready = await worker.receive()
            assert isinstance(ready, WorkerReady), ready
        yield list(workers)
    except BaseException:
        for worker in workers:  # do not wait for workers that were not told to close
            if worker.process.is_alive():
                worker.process.terminate()
        raise
    finally:
        with trio.CancelScope(shield=True):
            for worker in workers:
                await trio.to_thread.run_sync(worker.process.join, CLOSE_WAIT)
                if worker.process.is_alive():
                    worker.process.terminate()
                    await trio.to_thread.run_sync(worker.process.join, CLOSE_WAIT)


async def _call_all(workers: Sequence[Worker], command: Command, kind: type[_T]) -> list[_T]:
    """The same command to every worker at once; their replies in worker order."""
    replies: list[object] = [None] * len(workers)

    async def call(index: int) -> None:
        replies[index] = await workers[index].call(command)

    async with trio.open_nursery() as nursery:
        for index in range(len(workers)):
            nursery.start_soon(call, index)
    typed: list[_T] = []
    for reply in replies:
        if not isinstance(reply, kind):
            raise BenchError(f"a worker answered {reply!r} to {command!r}")
        typed.append(reply)
    return typed


# -- the coordinator -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """What to measure; `config_from_args` builds it from the command line."""

    target: Target
    connections: int = 100
    senders: int = 10
    rooms: int = 1
    rate: float = 100.0
    duration: float = 10.0
    size: int = 64
    procs: int = 1
    connect_concurrency: int = 100
    idle: bool = False
    sweep: bool = False
    sweep_rates: tuple[float, ...] = ()
    bounds: Bounds = field(default_factory=Bounds)
    server_pid: int | None = None
    drain_quiet: float = DRAIN_QUIET
    room_prefix: str = field(default_factory=lambda: f"bench-{secrets.token_hex(3)}-")

    @property
    def mode(self) -> str:
        return "idle" if self.idle else "sweep" if self.sweep else "load"


class _Phase:
    """What the coordinator is doing, for the progress line."""

    def __init__(self, connections: int) -> None:
        self.connections = connections
        self.text = "connecting"
        self.rate = 0.0
        self.duration = 0.0
        self.start = 0.0  # Trio time of the step's start

    def describe(self, stats: FleetStatistics, deliveries_rate: float) -> str:
        if self.text == "connecting":
            return f"connecting: {stats.connected:,} of {self.connections:,} joined"
        if self.text == "sending":
            elapsed = min(max(trio.current_time() - self.start, 0.0), self.duration)
            return (
                f"{self.rate:,.6g} msg/s: {elapsed:.1f} of {self.duration:g} s, "
                f"sent {stats.sent:,}, received {stats.received:,} "
                f"({deliveries_rate:,.0f} deliveries/s)"
            )
        if self.text == "draining":
            return f"draining: received {stats.received:,} ({deliveries_rate:,.0f}/s)"
        return f"{self.text}: {stats.connected:,} connections"


async def _show_progress(
    workers: Sequence[Worker], phase: _Phase, show: Callable[[str], None]
) -> None:
    last_time, last_received = trio.current_time(), 0
    while True:
        await trio.sleep(0.5)
        parts = [w.statistics() for w in workers]
        stats = FleetStatistics(
            sum(p.connected for p in parts),
            sum(p.sent for p in parts),
            sum(p.received for p in parts),
        )
        now = trio.current_time()
        rate = (stats.received - last_received) / max(now - last_time, 1e-9)
        last_time, last_received = now, stats.received
        show(phase.describe(stats, max(rate, 0.0)))


async def measure(
    config: BenchConfig, *, progress: Callable[[str], None] | None = None
) -> BenchReport:
    """Run the benchmark `config` describes against a running server.

    Coordinates from the caller's Trio run; the connections live in
    `procs` spawned worker processes (one at least), each an epoll reactor.
    Every connection is closed, and every worker ended, before it returns.
    Calls `progress` with a line of text twice a second.

    Raises:
        BenchError: the server cannot be reached, or a worker failed.
    """
    target = config.target
    senders = 0 if config.idle else config.senders
    plan = plan_connections(
        config.connections,
        rooms=config.rooms,
        senders=senders,
        procs=config.procs,
        room_prefix=config.room_prefix,
    )
    memory_before = await sample_server(target, config.server_pid)
    phase = _Phase(config.connections)
    steps: list[StepReport] = []
    idle: IdleReport | None = None
    async with (
        open_workers(target, plan, size=config.size) as workers,
        trio.open_nursery() as nursery,
    ):
        if progress is not None:
            nursery.start_soon(_show_progress, workers, phase, progress)
        per_worker = max(1, math.ceil(config.connect_concurrency / len(workers)))
        coordinator_cpu = _cpu_seconds()
        connects = await _call_all(workers, ConnectCommand(per_worker), ConnectReport)
        coordinator_cpu = _cpu_seconds() - coordinator_cpu
        joined = await sample_server(target, config.server_pid)
        memory_after = ServerSample()
        if config.idle:
            phase.text = "holding"
            await trio.sleep(IDLE_SETTLE)
            memory_after = await sample_server(target, config.server_pid)
        else:
            steps = await _run_steps(config, workers, phase)
        phase.text = "closing"
        closed: Counter[str] = Counter()
        with trio.move_on_after(CLOSE_WAIT + STEP_LEAD):  # the workers give up at CLOSE_WAIT
            for reply in await _call_all(workers, CloseCommand(), ClosedReport):
                closed.update(reply.closed)
        nursery.cancel_scope.cancel()
    connected = sum(c.connected for c in connects)
    if config.idle:
        idle = IdleReport(
            memory_before_bytes=memory_before.rss_bytes,
            memory_after_bytes=memory_after.rss_bytes,
            memory_per_connection_kb=memory_per_connection_kb(
                memory_before.rss_bytes, memory_after.rss_bytes, connected
            ),
            server_connections=(
                None if memory_after.connections is None else round(memory_after.connections)
            ),
            closed=dict(closed),
        )
    failures: Counter[str] = Counter()
    for connect in connects:
        failures.update(connect.failures)
    held = [step for step in steps if step.held]
    result = (
        max(held, key=lambda s: s.deliveries_per_second, default=None)
        if config.sweep
        else (steps[0] if steps else None)
    )
    report = BenchReport(
        mode=config.mode,
        url=target.url,
        connections=config.connections,
        connected=connected,
        connect_failures=dict(failures),
        connect_seconds=max(c.end for c in connects) - min(c.start for c in connects),
        connect_server_cpu_seconds=_delta(joined.cpu_seconds, memory_before.cpu_seconds),
        connect_generator_cpu_seconds=sum(c.cpu_seconds for c in connects) + coordinator_cpu,
        rooms=config.rooms,
        senders=senders,
        procs=config.procs,
        size=config.size,
        steps=steps,
        result=result,
        idle=idle,
        warnings=[],
    )
    report.warnings.extend(report_warnings(report))
    return report


async def _run_steps(
    config: BenchConfig, workers: Sequence[Worker], phase: _Phase
) -> list[StepReport]:
    if config.sweep_rates:
        rates = list(config.sweep_rates)
    elif config.sweep:
        rates = sweep_rates(config.rate, 1.5, 20)
    else:
        rates = [config.rate]
    steps: list[StepReport] = []
    for rate in rates:
        step = await _run_step(config, workers, phase, rate)
        steps.append(step)
        if not config.sweep or not step.held:
            break
        await trio.sleep(STEP_PAUSE)
    return steps


async def _run_step(
    config: BenchConfig, workers: Sequence[Worker], phase: _Phase, rate: float
) -> StepReport:
    server_before = await sample_server(config.target, config.server_pid)
    coordinator_cpu = _cpu_seconds()
    start_ns = time.time_ns() + round(STEP_LEAD * 1e9)
    phase.text, phase.rate, phase.duration = "sending", rate, config.duration
    phase.start = trio.current_time() + STEP_LEAD
    command = StepCommand(rate, config.duration, start_ns, config.senders)
    sends = await _call_all(workers, command, SendReport)
    sent_by_room: Counter[str] = Counter()
    for send in sends:
        sent_by_room.update(send.sent_by_room)
    phase.text = "draining"
    drain = DrainCommand(dict(sent_by_room), config.drain_quiet)
    results = await _call_all(workers, drain, StepResult)
    server_after = await sample_server(config.target, config.server_pid)
    step = summarize_step(
        rate=rate,
        duration=config.duration,
        start_ns=start_ns,
        sends=sends,
        results=results,
        server_before=server_before,
        server_after=server_after,
        coordinator_cpu=_cpu_seconds() - coordinator_cpu,
        bounds=config.bounds,
    )
    if any(send.late for send in sends):
        raise BenchError("a worker heard of a step after its start: the machine is overloaded")
    return step


# -- the command line ----------------------------------------------------------


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above 0")
    return int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number above 0")
    return value


def _duration(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be above zero")
    return seconds


def _rates(text: str) -> tuple[float, ...]:
    return tuple(_positive_float(part.strip()) for part in text.split(",") if part.strip())


def _percent(text: str) -> float:
    value = _positive_float(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"{text!r} must be at most 100")
    return value


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `trio-chat bench URL`."""
    parser.add_argument(
        "url", metavar="URL", help="the server: ws://HOST:PORT/ws or http://HOST:PORT/"
    )
    parser.add_argument(
        "-c", "--connections", type=_positive_int, default=100, help="connections (default 100)"
    )
    parser.add_argument(
        "--senders",
        type=_positive_int,
        default=10,
        help="connections that send (the first ones; default 10)",
    )
    parser.add_argument(
        "--rooms",
        type=_positive_int,
        default=None,
        help=(
            "rooms the connections are spread over, round robin (default 1; with "
            f"--idle one per {IDLE_MEMBERS_PER_ROOM} connections)"
        ),
    )
    parser.add_argument(
        "--rate",
        type=_positive_float,
        default=100.0,
        help="messages per second, all senders together, paced (default 100; "
        "each is delivered to every member of its room)",
    )
    parser.add_argument(
        "--duration",
        type=_duration,
        default=10.0,
        help="how long senders send, per step (250ms, 10s, 1m30s; default 10s)",
    )
    parser.add_argument(
        "--size",
        type=_positive_int,
        default=64,
        help=f"message text in bytes, the {STAMP_DIGITS}-digit send time included (default 64)",
    )
    parser.add_argument(
        "--procs",
        type=_positive_int,
        default=1,
        help="worker processes the connections are spread over (default 1)",
    )
    parser.add_argument(
        "--connect-concurrency",
        type=_positive_int,
        default=100,
        help="connection handshakes in flight at once, in total (default 100)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--idle",
        action="store_true",
        help="hold the connections without traffic and report the server's memory per connection",
    )
    mode.add_argument(
        "--sweep",
        action="store_true",
        help="raise the rate x1.5 per step from --rate until p99 exceeds --max-p99 or "
        "less than --min-delivered arrives; report the highest rate held",
    )
    parser.add_argument(
        "--sweep-rates",
        type=_rates,
        default=(),
        metavar="R1,R2,...",
        help="the rates (messages/s) of a sweep's steps, instead of x1.5 (implies --sweep)",
    )
    parser.add_argument(
        "--max-p99",
        type=_duration,
        default=0.250,
        help="a sweep step holds while p99 latency is at most this (default 250ms)",
    )
    parser.add_argument(
        "--min-delivered",
        type=_percent,
        default=99.0,
        metavar="PERCENT",
        help="a sweep step holds while at least this share arrives (default 99)",
    )
    parser.add_argument(
        "--server-pid",
        type=_positive_int,
        default=None,
        help="read the server's CPU and memory from /proc/PID (default: its /metrics)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--no-progress", action="store_true", help="no progress on stderr")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """Check the flags together.

    Raises:
        BenchError: a bad URL or combination of flags.
    """
    target = parse_target(args.url)
    if args.idle and args.sweep_rates:
        raise BenchError("--sweep-rates does not go with --idle")
    rooms = args.rooms
    if rooms is None:
        rooms = math.ceil(args.connections / IDLE_MEMBERS_PER_ROOM) if args.idle else 1
    if rooms > args.connections:
        raise BenchError("--rooms must not exceed --connections")
    if not args.idle and args.senders > args.connections:
        raise BenchError("--senders must not exceed --connections")
    if args.procs > args.connections:
        raise BenchError("--procs must not exceed --connections")
    if not STAMP_DIGITS <= args.size <= 4000:
        raise BenchError(f"--size must be between {STAMP_DIGITS} and 4000 bytes")
    return BenchConfig(
        target=target,
        connections=args.connections,
        senders=args.senders,
        rooms=rooms,
        rate=args.sweep_rates[0] if args.sweep_rates else args.rate,
        duration=args.duration,
        size=args.size,
        procs=args.procs,
        connect_concurrency=args.connect_concurrency,
        idle=args.idle,
        sweep=args.sweep or bool(args.sweep_rates),
        sweep_rates=args.sweep_rates,
        bounds=Bounds(max_p99=args.max_p99, min_delivered=args.min_delivered / 100),
        server_pid=args.server_pid,
    )


def raise_open_file_limit() -> None:
    """Thousands of connections need thousands of file descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class ProgressLine:
    """Progress on stderr: one line rewritten in place on a terminal, else a
    line every few seconds."""

    def __init__(self, stream: TextIO, *, every: float = 5.0) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._every = every
        self._last = -math.inf
        self._width = 0

    def __call__(self, text: str) -> None:
        if self._tty:
            self._stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
        elif time.monotonic() - self._last >= self._every:
            self._last = time.monotonic()
            self._stream.write(f"trio-chat bench: {text}\n")
        self._stream.flush()

    def finish(self) -> None:
        if self._tty and self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()
            self._width = 0


def run_bench(args: argparse.Namespace) -> int:
    """`trio-chat bench`: measure, print the report; returns the exit status
    (0: done, 1: the measurement is void or failed, 2: bad flags)."""
    try:
        config = config_from_args(args)
    except BenchError as error:
        print(f"trio-chat bench: {error}", file=sys.stderr)
        return 2
    raise_open_file_limit()
    progress = None if args.no_progress else ProgressLine(sys.stderr)
    try:
        report = trio.run(_measure_for_cli, config, progress)
    except BenchError as error:
        if progress is not None:
            progress.finish()
        print(f"trio-chat bench: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if progress is not None:
            progress.finish()
        return 130
    if progress is not None:
        progress.finish()
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        print(format_report(report))
    for warning in report.warnings:
        print(f"trio-chat bench: warning: {warning}", file=sys.stderr)
    return 0 if report.ok else 1


async def _measure_for_cli(config: BenchConfig, progress: ProgressLine | None) -> BenchReport:
    return await measure(config, progress=progress)


def main(argv: Sequence[str] | None = None) -> int:
    """`trio-chat bench` on its own (benchmarks/run.py uses it)."""
    parser = argparse.ArgumentParser(
        prog="trio-chat bench", description="A load generator for a running trio-chat server."
    )
    add_bench_arguments(parser)
    return run_bench(parser.parse_args(argv))
