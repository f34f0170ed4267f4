"""What the receivers measure: the latency histogram, the id-order check, loss
accounting, and counting and checking the frames that arrive. Pure, no I/O.

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
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Final

from ..client.transcript import Transcript
from ..client.websocket import ConnectFailure

STAMP_DIGITS: Final = 19  # time.time_ns() until the year 2286


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
        "page_histogram",
        "page_refused",
        "pages",
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
        self.pages = 0  # history pages answered (`--pagers`)
        self.page_refused = 0  # history requests answered with an error
        self.page_histogram = [0] * HISTOGRAM_SIZE  # request sent to page received


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


def scan_live(payload: bytes, check: Transcript, stats: StepStats, room: str, now_ns: int) -> int:
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


def scan_lines(payload: bytes, check: Transcript, stats: StepStats, room: str, now_ns: int) -> int:
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


def scan_other(line: bytes, check: Transcript, stats: StepStats, room: str, now_ns: int) -> int:
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


# -- history pages (`--pagers`) ---------------------------------------------------

PAGE_REF: Final = b'"ref":"p'  # a pager's requests carry `p<send time, ns>` as their ref


def scan_pages(
    payload: bytes, stats: StepStats, now_ns: int
) -> tuple[bytes, list[tuple[bool, int | None]]]:
    """Take a pager's answers out of one of its text frames: each `history`
    event (or `error`) that answers one of its requests is counted and
    timed (its ref holds the request's send time). Returns the rest of the
    frame, for `scan_live`, and for each answer whether it was a page and
    the `before` of the next request (None: start again from the newest)."""
    if PAGE_REF not in payload:
        return payload, []
    rest: list[bytes] = []
    answers: list[tuple[bool, int | None]] = []
    for line in payload.split(b"\n"):
        if PAGE_REF not in line or not line.startswith((b'{"type":"history"', b'{"type":"error"')):
            rest.append(line)
            continue
        event = json.loads(line)
        ref = event.get("ref")
        if not isinstance(ref, str) or not ref[1:].isdigit():
            rest.append(line)
            continue
        micros = (now_ns - int(ref[1:])) // 1000
        events = event.get("events")
        if event.get("type") == "history" and isinstance(events, list):
            stats.pages += 1
            stats.page_histogram[latency_bucket(micros)] += 1
            first = events[0].get("id") if events else None
            more = event.get("more") is True and isinstance(first, int)
            answers.append((True, first if more else None))
        else:
            stats.page_refused += 1
            answers.append((False, None))
    return b"\n".join(rest), answers
