"""The reports: what each phase measured, the arithmetic that turns worker
counts and server samples into a step's figures, the warnings about what
makes a measurement doubtful, and the text printed at the end. Pure, no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from .counting import expected_deliveries, merge_histograms, percentile
from .metrics import ServerSample, _delta

SATURATED: Final = 0.9  # a process busy for this share of the step is saturated


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
    page_requests: int = 0  # history requests its pagers sent


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
    pages: int = 0  # history pages its pagers received
    page_refused: int = 0  # history requests answered with an error
    page_histogram: dict[int, int] = field(default_factory=dict)  # request to answer


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
    paging: bool = False  # pagers paged back through history during the step
    page_requests: int = 0
    pages: int = 0  # history pages answered
    page_refused: int = 0
    pages_per_second: float = 0.0
    page_latency_ms: dict[str, float | None] = field(default_factory=dict)


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
    paging: bool = False,
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
    page_histogram = merge_histograms(r.page_histogram for r in results)
    pages = sum(r.pages for r in results)
    page_latency: dict[str, float | None] = {
        key: ms(percentile(page_histogram, fraction))
        for key, fraction in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("max", 1.0))
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
        paging=paging,
        page_requests=sum(s.page_requests for s in sends),
        pages=pages,
        page_refused=sum(r.page_refused for r in results),
        pages_per_second=pages / duration,
        page_latency_ms=page_latency if paging else {},
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
        *(_format_paging(step) if step.paging else []),
    ]


def _format_paging(step: StepReport) -> list[str]:
    latency = step.page_latency_ms
    return [
        f"  history pages {_number(step.pages)} of {_number(step.page_requests)} requests "
        f"answered ({step.pages_per_second:,.1f}/s), refused {step.page_refused}",
        f"  page latency  p50 {_ms(latency.get('p50'))}   p90 {_ms(latency.get('p90'))}   "
        f"p99 {_ms(latency.get('p99'))}   max {_ms(latency.get('max'))}",
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
    if report.mode == "load" and len(report.steps) == 2 and report.steps[1].paging:
        # `--pagers`: the same load without paging, then with it.
        baseline, paged = report.steps
        lines.append("  without paging:")
        lines.extend(format_step(baseline))
        lines.append("  with paging:")
        lines.extend(format_step(paged))
        before, after = baseline.latency_ms, paged.latency_ms
        lines.append(
            "  live latency  with paging vs without: "
            f"p50 {_ms(after['p50'])} vs {_ms(before['p50'])}, "
            f"p99 {_ms(after['p99'])} vs {_ms(before['p99'])}"
        )
    elif report.mode == "load" and report.result is not None:
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
