"""The coordinator: the Trio side of a run, in the parent process. It opens the
workers, drives them through connect, send (one step per rate), drain and
close, samples the server around each step and builds the `BenchReport`.
"""

from __future__ import annotations

import math
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

import trio

from ..client.url import ServerUrl
from .metrics import ServerSample, _delta, sample_server
from .plan import BenchError, plan_connections, sweep_rates
from .reactor import (
    CLOSE_WAIT,
    CloseCommand,
    ClosedReport,
    ConnectCommand,
    DrainCommand,
    FleetStatistics,
    StepCommand,
    _cpu_seconds,
)
from .report import (
    BenchReport,
    Bounds,
    ConnectReport,
    IdleReport,
    SendReport,
    StepReport,
    StepResult,
    memory_per_connection_kb,
    report_warnings,
    summarize_step,
)
from .workers import Worker, _call_all, open_workers

STEP_LEAD: Final = 1.0  # seconds between announcing a step and its start
STEP_PAUSE: Final = 1.0  # seconds between sweep steps, for the server to settle
DRAIN_QUIET: Final = 2.0  # a drain ends when nothing arrived for this long
IDLE_SETTLE: Final = 1.0  # seconds after the last join before reading the server's memory


# -- the coordinator -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """What to measure; `config_from_args` builds it from the command line."""

    target: ServerUrl
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
    server_pids: tuple[int, ...] = ()  # read CPU and memory from /proc, summed over these
    drain_quiet: float = DRAIN_QUIET
    pagers: int = 0  # connections that page back through history (the last ones)
    page_rate: float = 1.0  # history requests per second, per pager
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
    config: BenchConfig,
    *,
    progress: Callable[[str], None] | None = None,
    mark: Callable[[str], object] | None = None,
) -> BenchReport:
    """Run the benchmark `config` describes against a running server.

    Coordinates from the caller's Trio run; the connections live in
    `procs` spawned worker processes (one at least), each an epoll reactor.
    Every connection is closed, and every worker ended, before it returns.
    Calls `progress` with a line of text twice a second, and `mark`, if
    given, right after each sample of the server: `"start"` (before the
    workers start), `"joined"` (every connection joined), then `"step"` and
    `"stepped"` around each step, in order. `mark` runs in this Trio thread
    between phases, where nothing is hot, so it may read a counter
    elsewhere (benchmarks/run.py samples Redis) but must return quickly.

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
        pagers=config.pagers,
    )
    memory_before = await sample_server(target, config.server_pids)
    _mark(mark, "start")
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
        joined = await sample_server(target, config.server_pids)
        _mark(mark, "joined")
        memory_after = ServerSample()
        if config.idle:
            phase.text = "holding"
            await trio.sleep(IDLE_SETTLE)
            memory_after = await sample_server(target, config.server_pids)
        else:
            steps = await _run_steps(config, workers, phase, mark)
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
        else (steps[-1] if steps else None)  # with --pagers: the step that paged
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


def _mark(mark: Callable[[str], object] | None, instant: str) -> None:
    if mark is not None:
        mark(instant)


async def _run_steps(
    config: BenchConfig,
    workers: Sequence[Worker],
    phase: _Phase,
    mark: Callable[[str], object] | None,
) -> list[StepReport]:
    if config.sweep_rates:
        rates = list(config.sweep_rates)
    elif config.sweep:
        rates = sweep_rates(config.rate, 1.5, 20)
    else:
        rates = [config.rate]
    steps: list[StepReport] = []
    if config.pagers and not config.sweep:
        # The same load without paging first: the report compares live latency.
        steps.append(await _run_step(config, workers, phase, rates[0], mark, paging=False))
        await trio.sleep(STEP_PAUSE)
    for rate in rates:
        step = await _run_step(config, workers, phase, rate, mark, paging=config.pagers > 0)
        steps.append(step)
        if not config.sweep or not step.held:
            break
        await trio.sleep(STEP_PAUSE)
    return steps


async def _run_step(
    config: BenchConfig,
    workers: Sequence[Worker],
    phase: _Phase,
    rate: float,
    mark: Callable[[str], object] | None,
    *,
    paging: bool,
) -> StepReport:
    server_before = await sample_server(config.target, config.server_pids)
    _mark(mark, "step")
    coordinator_cpu = _cpu_seconds()
    start_ns = time.time_ns() + round(STEP_LEAD * 1e9)
    phase.text, phase.rate, phase.duration = "sending", rate, config.duration
    phase.start = trio.current_time() + STEP_LEAD
    page_rate = config.page_rate if paging else 0.0
    command = StepCommand(rate, config.duration, start_ns, config.senders, page_rate)
    sends = await _call_all(workers, command, SendReport)
    sent_by_room: Counter[str] = Counter()
    for send in sends:
        sent_by_room.update(send.sent_by_room)
    phase.text = "draining"
    drain = DrainCommand(dict(sent_by_room), config.drain_quiet)
    results = await _call_all(workers, drain, StepResult)
    server_after = await sample_server(config.target, config.server_pids)
    _mark(mark, "stepped")
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
        paging=paging,
    )
    if any(send.late for send in sends):
        raise BenchError("a worker heard of a step after its start: the machine is overloaded")
    return step
