"""The `trio-chat bench` command line: its arguments, turning them into a
`BenchConfig`, the progress line on stderr, and the exit status.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Final, TextIO

import trio

from ..config import parse_duration
from .coordinator import BenchConfig, measure
from .counting import STAMP_DIGITS
from .plan import BenchError, parse_target
from .report import BenchReport, Bounds, format_report
from .workers import raise_open_file_limit

IDLE_MEMBERS_PER_ROOM: Final = 10


# -- the command line ----------------------------------------------------------


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above 0")
    return int(text)


def _non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
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
        action="append",
        default=[],
        metavar="PID",
        help="read the server's CPU and memory from /proc/PID (default: its /metrics); "
        "repeat for a server of several processes (a parent and its workers): their "
        "figures are summed, and the /metrics counters of one of them are left out",
    )
    parser.add_argument(
        "--pagers",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="connections (the last N) that page back through their room's history while "
        "the senders send: `history` requests of 100 events, walking back with `before` "
        "and starting again from the newest at the beginning; a load run first measures "
        "the same load without paging, to compare (default 0)",
    )
    parser.add_argument(
        "--page-rate",
        type=_positive_float,
        default=1.0,
        metavar="R",
        help="history requests per second per pager, one on its way at a time (default 1)",
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
    if args.pagers > args.connections:
        raise BenchError("--pagers must not exceed --connections")
    if args.pagers and args.idle:
        raise BenchError("--pagers does not go with --idle")
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
        server_pids=tuple(args.server_pid),
        pagers=args.pagers,
        page_rate=args.page_rate,
    )


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


def run_bench(
    args: argparse.Namespace,
    *,
    mark: Callable[[str], object] | None = None,
    on_report: Callable[[BenchReport], object] | None = None,
) -> int:
    """`trio-chat bench`: measure, print the report; returns the exit status
    (0: done, 1: the measurement is void or failed, 2: bad flags).

    For a caller that measures more around the run (benchmarks/run.py):
    `mark` goes to `measure`, and `on_report` gets the report once printed.
    """
    try:
        config = config_from_args(args)
    except BenchError as error:
        print(f"trio-chat bench: {error}", file=sys.stderr)
        return 2
    raise_open_file_limit()
    progress = None if args.no_progress else ProgressLine(sys.stderr)
    try:
        report = trio.run(_measure_for_cli, config, progress, mark)
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
    if on_report is not None:
        on_report(report)
    return 0 if report.ok else 1


async def _measure_for_cli(
    config: BenchConfig, progress: ProgressLine | None, mark: Callable[[str], object] | None
) -> BenchReport:
    return await measure(config, progress=progress, mark=mark)


def main(argv: Sequence[str] | None = None) -> int:
    """`trio-chat bench` on its own (benchmarks/run.py uses it)."""
    parser = argparse.ArgumentParser(
        prog="trio-chat bench", description="A load generator for a running trio-chat server."
    )
    add_bench_arguments(parser)
    return run_bench(parser.parse_args(argv))
