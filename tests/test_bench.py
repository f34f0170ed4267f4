"""`trio-chat bench`: the load generator's arithmetic, and its counts against real servers.

The pure parts (plan, pacing, histogram, scanning received frames, loss
accounting, report arithmetic) are tested directly,
the scanner against deliberately bad input. `measure` then coordinates from
the test's own Trio loop (its workers are spawned processes) against the
real server of conftest.py (or a child process, where the server's memory
must be its own), and against a scripted server that numbers events wrongly
on purpose. Nothing here asserts a speed: only that every delivery is
counted, and counted right.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import itertools
import json
import math
import os
import re
import signal
import socket
import subprocess
import time
from typing import Any

import pytest
import trio
from conftest import StartServer
from hypothesis import given
from hypothesis import strategies as st
from processes import TRIO_CHAT, clean_env, serving
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from trio_chat import bench
from trio_chat.bench import (
    BenchConfig,
    BenchError,
    Bounds,
    SendReport,
    ServerSample,
    StepResult,
    StepStats,
)
from trio_chat.bench.metrics import sample_server
from trio_chat.client.transcript import Transcript
from trio_chat.client.url import ServerUrl
from trio_chat.client.websocket import ConnectFailure

# The keys of `--json`, as README "Measuring" documents them.
REPORT_KEYS = {
    "mode", "url", "connections", "connected", "connect_failures", "connect_seconds",
    "connect_server_cpu_seconds", "connect_generator_cpu_seconds", "rooms", "senders",
    "procs", "size", "steps", "result", "idle", "warnings", "ok",
}  # fmt: skip
STEP_KEYS = {
    "rate", "duration", "sent", "rate_limited", "members", "expected", "received", "loss",
    "delivered", "deliveries_per_second", "elapsed", "duplicates", "order_violations",
    "missing_ids", "stale", "foreign", "latency_ms", "closed", "errors", "send_lag_max_ms",
    "server_cpu_seconds", "server_cpu_percent", "server_cpu_us_per_delivery",
    "server_wait_percent", "server_saturated", "server_deliveries", "server_slow_drops",
    "generator_cpu_seconds", "generator_cpu_percent", "generator_wait_percent",
    "generator_saturated", "held", "paging", "page_requests", "pages", "page_refused",
    "pages_per_second", "page_latency_ms",
}  # fmt: skip
IDLE_KEYS = {
    "memory_before_bytes", "memory_after_bytes", "memory_per_connection_kb",
    "server_connections", "closed",
}  # fmt: skip
HANG_GUARD = 60  # seconds: a hung run fails instead of blocking the suite (not a speed bound)
PATIENCE = 15.0  # seconds without a delivery before a drain gives up, on a busy test machine


def small(port: int, **overrides: Any) -> BenchConfig:
    """A short, gentle run: 10 connections, 2 senders, 20 msg/s for 1 s."""
    settings: dict[str, Any] = {
        "connections": 10,
        "senders": 2,
        "rate": 20.0,
        "duration": 1.0,
        "connect_concurrency": 5,
        "drain_quiet": PATIENCE,
    }
    settings.update(overrides)
    return BenchConfig(target=ServerUrl("127.0.0.1", port), **settings)


# -- the plan ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("ws://127.0.0.1:8080/ws", ServerUrl("127.0.0.1", 8080, "/ws")),
        ("http://localhost:9000/", ServerUrl("localhost", 9000, "/ws")),
        ("ws://chat.example:81", ServerUrl("chat.example", 81, "/ws")),
        ("ws://[::1]:8080/chat", ServerUrl("::1", 8080, "/chat")),
        ("http://example.org", ServerUrl("example.org", 80, "/ws")),
        ("127.0.0.1:8080", ServerUrl("127.0.0.1", 8080, "/ws")),  # as `connect` takes it
    ],
)
def test_parse_target(url: str, target: ServerUrl) -> None:
    assert bench.parse_target(url) == target


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("wss://a:1/ws", "TLS"),
        ("https://a/", "TLS"),
        ("ftp://a/", "use a ws://"),
        ("ws://:8080/ws", "no host"),
        ("ws://a:99999/ws", "(?i)port"),
    ],
)
def test_parse_target_refuses(url: str, says: str) -> None:
    with pytest.raises(BenchError, match=says):
        bench.parse_target(url)


@pytest.mark.parametrize(
    ("connections", "rooms", "senders", "procs"), [(10, 1, 3, 1), (103, 7, 10, 4)]
)
def test_plan_spreads_rooms_senders_and_processes(
    connections: int, rooms: int, senders: int, procs: int
) -> None:
    plan = bench.plan_connections(
        connections, rooms=rooms, senders=senders, procs=procs, room_prefix="r-"
    )
    specs = sorted((s for part in plan for s in part), key=lambda s: s.index)
    assert [s.index for s in specs] == list(range(connections))
    assert len({s.name for s in specs}) == connections
    assert [s.sender for s in specs if s.sender is not None] == list(range(senders))
    members = [sum(s.room == f"r-{r}" for s in specs) for r in range(rooms)]
    assert max(members) - min(members) <= 1
    assert max(map(len, plan)) - min(map(len, plan)) <= 1
    senders_per_proc = [sum(s.sender is not None for s in part) for part in plan]
    assert max(senders_per_proc) - min(senders_per_proc) <= 1


# -- pacing --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "duration", "total"),
    [(100, 1.0, 100), (20, 0.5, 10), (3, 1.0, 3), (2.5, 1.0, 3), (0.5, 1.0, 1), (1000, 0.25, 250)],
)
def test_total_messages(rate: float, duration: float, total: int) -> None:
    assert bench.total_messages(rate, duration) == total


@given(
    rate=st.floats(0.5, 50_000),
    duration=st.floats(0.1, 30),
    senders=st.integers(1, 200),
)
def test_senders_share_the_schedule_exactly(rate: float, duration: float, senders: int) -> None:
    total = bench.total_messages(rate, duration)
    assert sum(bench.sender_share(total, k, senders) for k in range(senders)) == total
    shares = [bench.sender_share(total, k, senders) for k in range(senders)]
    assert max(shares) - min(shares) <= 1  # round robin: no sender carries more than one extra


@given(
    rate=st.floats(1, 10_000),
    senders=st.integers(1, 50),
    sender=st.integers(0, 49),
    n=st.integers(0, 1000),
)
def test_a_message_is_due_at_its_offset_and_not_before(
    rate: float, senders: int, sender: int, n: int
) -> None:
    sender %= senders
    total = 10**9
    at = bench.send_offset(sender, n, senders, rate)
    due = bench.sender_share(bench.messages_due(at, rate, total), sender, senders)
    assert due == n + 1  # this message and all before it
    earlier = at - 0.5 / rate
    assert bench.sender_share(bench.messages_due(earlier, rate, total), sender, senders) == n


def test_messages_due_is_capped_and_starts_at_zero() -> None:
    assert bench.messages_due(-0.1, 100, 50) == 0
    assert bench.messages_due(0.0, 100, 50) == 1
    assert bench.messages_due(10.0, 100, 50) == 50


def test_sweep_rates_grow_by_half() -> None:
    assert bench.sweep_rates(1000, 1.5, 5) == [1000, 1500, 2250, 3380, 5060]


# -- latency histogram ---------------------------------------------------------


@given(st.integers(0, 10**12))
def test_latency_buckets_lose_under_one_percent(micros: int) -> None:
    bucket = bench.latency_bucket(micros)
    assert 0 <= bucket < bench.HISTOGRAM_SIZE
    ceiling = bench.bucket_ceiling(bucket)
    assert micros <= ceiling <= micros * 1.008 + 1
    assert bench.latency_bucket(ceiling) == bucket


def test_latency_buckets_are_contiguous_and_ordered() -> None:
    buckets = [bench.latency_bucket(micros) for micros in range(100_000)]
    assert buckets[0] == 0
    assert all(b - a in (0, 1) for a, b in itertools.pairwise(buckets))
    assert bench.latency_bucket(-5) == 0


def test_percentiles() -> None:
    histogram = {bench.latency_bucket(us): 1 for us in range(1, 101)}
    assert bench.percentile(histogram, 0.50) == 50
    assert bench.percentile(histogram, 0.99) == 99
    assert bench.percentile(histogram, 1.0) == 100
    assert bench.percentile({}, 0.5) is None
    skewed = {bench.latency_bucket(10): 98, bench.latency_bucket(5000): 2}
    assert bench.percentile(skewed, 0.98) == 10
    assert 5000 <= (bench.percentile(skewed, 0.99) or 0) <= 5040


def test_histograms_merge() -> None:
    assert bench.merge_histograms([{1: 2, 300: 1}, {1: 1}, {}]) == {1: 3, 300: 1}


# -- loss accounting -----------------------------------------------------------


def test_expected_deliveries_count_members_and_refusals() -> None:
    sent = {"a": 10, "b": 4}
    members = {"a": 3, "b": 5, "c": 7}
    assert bench.expected_deliveries(sent, {}, members) == 10 * 3 + 4 * 5
    assert bench.expected_deliveries(sent, {"a": 2}, members) == 8 * 3 + 4 * 5
    assert bench.expected_deliveries(sent, {"b": 9}, members) == 10 * 3  # never negative


def _result(**overrides: Any) -> StepResult:
    fields: dict[str, Any] = {
        "received": 0,
        "stale": 0,
        "foreign": 0,
        "duplicates": 0,
        "order_violations": 0,
        "missing_ids": 0,
        "histogram": {},
        "max_us": 0,
        "last_receive_ns": 0,
        "errors": {},
        "refused_by_room": {},
        "closed": {},
        "cpu_seconds": 0.0,
        "wait_seconds": 0.0,
    }
    fields.update(overrides)
    return StepResult(**fields)


def test_summarize_step_adds_up_the_workers() -> None:
    start = 10**18
    sends = [
        SendReport({"a": 6}, {"a": 2, "b": 1}, 0.001, late=False),
        SendReport({"a": 4, "b": 5}, {"a": 2, "b": 1}, 0.003, late=False),
    ]
    results = [
        _result(
            received=30,
            histogram={bench.latency_bucket(1000): 30},
            max_us=1000,
            last_receive_ns=start + 2_000_000_000,
            cpu_seconds=0.5,
            wait_seconds=0.25,
            refused_by_room={"a": 1},
        ),
        _result(
            received=9,
            duplicates=2,
            histogram={bench.latency_bucket(3000): 9},
            max_us=3000,
            last_receive_ns=start + 1_500_000_000,
            cpu_seconds=1.4,
            wait_seconds=0.5,
        ),
    ]
    step = bench.summarize_step(
        rate=10,
        duration=1.0,
        start_ns=start,
        sends=sends,
        results=results,
        server_before=ServerSample(cpu_seconds=1.0, deliveries=100, wait_seconds=2.0),
        server_after=ServerSample(cpu_seconds=1.4, deliveries=139, wait_seconds=2.1),
        coordinator_cpu=0.1,
        bounds=Bounds(max_p99=0.01, min_delivered=0.99),
    )
    assert step.sent == 15
    assert step.rate_limited == 1
    assert step.members == 6
    assert step.expected == 9 * 4 + 5 * 2  # room a: 10 sent, 1 refused, 4 members
    assert step.received == 39
    assert step.loss == 46 - 39
    assert step.delivered == pytest.approx(39 / 46)
    assert step.elapsed == pytest.approx(2.0)  # to the last receipt
    assert step.deliveries_per_second == pytest.approx(19.5)
    assert step.duplicates == 2
    assert step.latency_ms["p50"] == pytest.approx(1.0, rel=0.01)
    assert step.latency_ms["max"] == 3.0
    assert step.send_lag_max_ms == pytest.approx(3.0)
    assert step.server_cpu_seconds == pytest.approx(0.4)
    assert step.server_cpu_percent == pytest.approx(20.0)
    assert step.server_cpu_us_per_delivery == pytest.approx(0.4e6 / 39)
    assert step.server_deliveries == 39
    assert step.generator_cpu_seconds == pytest.approx(2.0)
    assert step.generator_wait_percent == pytest.approx(37.5)
    assert step.generator_saturated  # one worker ran or waited to run 1.9 s of 2 s
    assert step.server_wait_percent == pytest.approx(5.0)
    assert step.server_saturated is False
    assert not step.held  # refused messages void it, and so does the loss


def test_a_step_holds_within_bounds() -> None:
    def step(received: int, worst_us: int) -> bench.StepReport:
        return bench.summarize_step(
            rate=100,
            duration=1.0,
            start_ns=0,
            sends=[SendReport({"a": 100}, {"a": 1}, 0.0, late=False)],
            results=[_result(received=received, histogram={bench.latency_bucket(worst_us): 1})],
            server_before=ServerSample(),
            server_after=ServerSample(),
            coordinator_cpu=0.0,
            bounds=Bounds(max_p99=0.250, min_delivered=0.99),
        )

    assert step(100, 1000).held
    assert step(99, 249_000).held
    assert not step(98, 1000).held
    assert not step(100, 260_000).held
    assert step(100, 1000).server_cpu_percent is None  # no source, no number
    assert step(100, 1000).server_saturated is None


def test_memory_per_connection() -> None:
    assert bench.memory_per_connection_kb(1024 * 1000, 1024 * 3000, 100) == 20.0
    assert bench.memory_per_connection_kb(None, 5.0, 100) is None
    assert bench.memory_per_connection_kb(1.0, 5.0, 0) is None


# -- scanning what arrives ------------------------------------------------------

START_NS = 1_700_000_000_000_000_000  # a step's start, as time.time_ns()


def message_line(ident: int, text: str, *, room: str = "r-0", name: str = "c1") -> bytes:
    """A message event as the server writes it (protocol.message_event's layout)."""
    event = {"type": "message", "id": ident, "room": room, "name": name, "text": text, "ts": "t"}
    return json.dumps(event, separators=(",", ":")).encode()


def stamped(ident: int, sent_ns: int = START_NS + 1_000_000) -> bytes:
    return message_line(ident, f"{sent_ns:019d}xxxx")


def scan(frames: list[bytes], *, last: int = 10) -> tuple[int, Transcript, StepStats]:
    check, stats = Transcript(last), StepStats(START_NS)
    counted = sum(bench.scan_live(f, check, stats, "r-0", START_NS + 3_000_000) for f in frames)
    return counted, check, stats


def test_scan_counts_each_message_once_and_times_it() -> None:
    frames = [stamped(11), b"\n".join([stamped(12), stamped(13)])]
    counted, check, stats = scan(frames)
    assert counted == stats.received == 3
    assert (check.last, check.duplicates, check.order_violations) == (13, 0, 0)
    assert stats.histogram[bench.latency_bucket(2000)] == 3  # sent 1 ms, read 3 ms after start
    assert stats.max_us == 2000
    assert stats.last_receive_ns == START_NS + 3_000_000


@pytest.mark.parametrize("split", [False, True])
def test_scan_detects_duplicates_and_order_violations(*, split: bool) -> None:
    ids = [11, 12, 12, 14, 13, 15, 11]  # 12 twice; 14 before 13; 11 again
    lines = [stamped(i) for i in ids]
    counted, check, stats = scan(lines if split else [b"\n".join(lines)])
    assert counted == stats.received == 5  # the repeats are not deliveries
    assert check.duplicates == 2
    assert check.order_violations == 2  # 13 skipped, then 13 late
    assert check.skipped == 0
    assert sum(stats.histogram) == 5


def test_scan_sorts_out_stale_foreign_and_other_events() -> None:
    lines = [
        stamped(11, START_NS - 1),  # sent before the step: stale
        message_line(12, "hello from a person"),  # no send time: foreign
        b'{"type":"join","id":13,"room":"r-0","name":"c9","ts":"t"}',
        b'{"type":"typing","room":"r-0","name":"c9"}',
        b'{"type":"error","code":"rate_limited","message":"slow down"}',
        b'{"type":"error","code":"bad_frame","message":"?"}',
        b'{"type":"leave","id":15,"room":"r-0","name":"c9","ts":"t","reason":"quit"}',
        stamped(16),
    ]
    counted, check, stats = scan([b"\n".join(lines)])
    assert counted == stats.received == 1
    assert (stats.stale, stats.foreign) == (1, 1)
    assert stats.refused_by_room == {"r-0": 1}
    assert stats.errors == {"bad_frame": 1}
    assert (check.last, check.order_violations, check.skipped) == (16, 1, 1)  # 14 never came


EVENTS = st.one_of(
    st.builds(lambda i, d: stamped(i, START_NS + d), st.integers(1, 40), st.integers(-5, 9)),
    st.builds(lambda i: message_line(i, "no stamp"), st.integers(1, 40)),
    st.builds(
        lambda i: b'{"type":"join","id":%d,"room":"r-0","name":"x","ts":"t"}' % i,
        st.integers(1, 40),
    ),
    st.just(b'{"type":"error","code":"rate_limited","message":"m"}'),
    st.just(b'{"type":"typing","room":"r-0","name":"x"}'),
    st.builds(lambda i: message_line(i, "1" * 19, name='a\\"b'), st.integers(1, 40)),
)


@given(st.lists(st.lists(EVENTS, min_size=1, max_size=6), max_size=8))
def test_the_fast_scan_agrees_with_the_line_by_line_scan(frames: list[list[bytes]]) -> None:
    """The parsed-once path and `scan_lines` count and check alike, for two
    members receiving the same frames (the second finds them parsed)."""
    results = []
    for scanner in (bench.scan_live, bench.scan_lines):
        checks, stats = [Transcript(0), Transcript(0)], StepStats(START_NS)
        counted = [
            scanner(b"\n".join(f), check, stats, "r-0", START_NS + 10)
            for f in frames
            for check in checks
        ]
        results.append(
            (
                counted,
                [(c.last, c.duplicates, c.order_violations, c.skipped) for c in checks],
                (stats.received, stats.stale, stats.foreign, stats.max_us, stats.histogram),
                (dict(stats.errors), dict(stats.refused_by_room)),
            )
        )
    assert results[0] == results[1]


def test_a_frame_is_parsed_once_for_every_member() -> None:
    frame = b"\n".join(stamped(i) for i in (11, 12, 13))
    checks, stats = [Transcript(10) for _ in range(3)], StepStats(START_NS)
    for check in checks:
        assert bench.scan_live(bytes(frame), check, stats, "r-0", START_NS + 3_000_000) == 3
    assert list(stats.parsed) == [frame]
    assert stats.received == 9
    assert [c.last for c in checks] == [13, 13, 13]
    late = Transcript(11)  # already has 11: a duplicate, found line by line
    assert bench.scan_live(frame, late, stats, "r-0", START_NS) == 2
    assert (late.last, late.duplicates) == (13, 1)


def test_joining_waits_for_its_own_join() -> None:
    joining = bench.Joining()
    welcome = b'{"type":"welcome","room":"r-0","name":"c1","members":["c0","c1"],"last_id":7}'
    history = b'{"type":"join","id":5,"room":"r-0","name":"c0","ts":"t"}\n' + stamped(6)
    assert joining.feed(welcome + b"\n" + history) is None  # history is not counted
    own_join = b'{"type":"join","id":7,"room":"r-0","name":"c1","ts":"t"}'
    assert joining.feed(own_join + b"\n" + stamped(8)) == stamped(8)  # live from here
    assert joining.last_id == 7
    assert bench.Joining().feed(welcome + b"\n" + own_join) == b""
    with pytest.raises(ConnectFailure, match="error name_taken while joining"):
        bench.Joining().feed(b'{"type":"error","code":"name_taken","message":"m"}')


def test_parse_metrics() -> None:
    text = (
        "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
        "# TYPE process_cpu_seconds_total counter\n"
        "process_cpu_seconds_total 12.5\n"
        "process_resident_memory_bytes 4.2e+07\n"
        'python_info{implementation="CPython"} 1.0\n'
        "trio_chat_deliveries_total 1234.0\n"
        "trio_chat_connections 7.0\n"
        "garbage\n"
    )
    metrics = bench.parse_metrics(text)
    assert metrics["process_cpu_seconds_total"] == 12.5
    assert "python_info" not in metrics
    sample = bench.sample_from_metrics(metrics)
    assert sample == ServerSample(
        cpu_seconds=12.5, rss_bytes=4.2e7, deliveries=1234, slow_drops=None, connections=7
    )


def test_a_server_of_several_processes_is_summed() -> None:
    """A parent's children are found, and their /proc figures add up; two
    sleeping processes, so that nothing moves between the reads."""
    parent = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60 & wait"])
    try:
        children: list[int] = []
        for _poll in range(500):  # until sh has started both (a bound, not timing logic)
            if len(children := bench.proc_children(parent.pid)) == 2:
                break
            time.sleep(0.01)
        assert len(children) == 2, children
        one, other = (bench.proc_sample([pid]) for pid in children)
        both = bench.proc_sample(children)
        assert one.rss_bytes is not None
        assert other.rss_bytes is not None
        assert both.rss_bytes == one.rss_bytes + other.rss_bytes > 0
        assert both.cpu_seconds == (one.cpu_seconds or 0) + (other.cpu_seconds or 0)
        assert both.deliveries is None  # /proc knows no deliveries
    finally:
        for pid in children:
            os.kill(pid, signal.SIGTERM)
        parent.wait(timeout=10)
    assert bench.proc_children(parent.pid) == []
    with pytest.raises(BenchError, match=f"process {parent.pid}"):
        bench.proc_sample([parent.pid])


async def test_metrics_counters_only_for_a_server_of_one_process(
    start_server: StartServer,
) -> None:
    server = await start_server(rate_limit=0)
    target = ServerUrl("127.0.0.1", server.port)
    with trio.fail_after(HANG_GUARD):
        alone = await sample_server(target, [os.getpid()])
        several = await sample_server(target, [os.getpid(), os.getpid()])
    assert alone.deliveries is not None  # this process is the server: its /metrics
    assert alone.connections is not None
    assert several.deliveries is several.connections is several.slow_drops is None
    assert (several.rss_bytes or 0) > (alone.rss_bytes or 0)


# -- the command line, parsed --------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="trio-chat bench")
    bench.add_bench_arguments(parser)
    return parser.parse_args(argv)


def test_flags_and_defaults() -> None:
    config = bench.config_from_args(parse("ws://127.0.0.1:8080/ws"))
    assert (config.connections, config.senders, config.rooms, config.rate) == (100, 10, 1, 100)
    assert (config.duration, config.size, config.procs, config.mode) == (10.0, 64, 1, "load")
    assert config.bounds == Bounds(max_p99=0.25, min_delivered=0.99)
    idle = bench.config_from_args(parse("http://h:1/", "--idle", "-c", "5000"))
    assert (idle.mode, idle.rooms) == ("idle", 500)  # idle connections spread over rooms
    sweep = bench.config_from_args(
        parse("ws://h:1/ws", "--sweep-rates", "100,200,400", "--duration", "1m30s")
    )
    assert (sweep.mode, sweep.rate, sweep.sweep_rates) == ("sweep", 100, (100, 200, 400))
    assert sweep.duration == 90
    tight = bench.config_from_args(
        parse("ws://h:1/ws", "--sweep", "--max-p99", "5ms", "--min-delivered", "99.9")
    )
    assert tight.bounds.max_p99 == 0.005
    assert tight.bounds.min_delivered == pytest.approx(0.999)


@pytest.mark.parametrize(
    "argv",
    [
        ["ws://h:1/ws", "--duration", "10 parsecs"],
        ["ws://h:1/ws", "--duration", "0s"],
        ["ws://h:1/ws", "--rate", "0"],
        ["ws://h:1/ws", "--rate", "nan"],
        ["ws://h:1/ws", "--connections", "-3"],
        ["ws://h:1/ws", "--min-delivered", "101"],
        ["ws://h:1/ws", "--idle", "--sweep"],
    ],
)
def test_bad_flags_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        bench.main(argv)
    assert exit_.value.code == 2
    assert "trio-chat bench" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["ws://h:1/ws", "-c", "5", "--senders", "6"], "--senders"),
        (["ws://h:1/ws", "-c", "5", "--senders", "1", "--procs", "6"], "--procs"),
        (["ws://h:1/ws", "-c", "5", "--senders", "1", "--rooms", "6"], "--rooms"),
        (["ws://h:1/ws", "--size", "10"], "--size"),
        (["wss://h:1/ws"], "TLS"),
    ],
)
def test_bad_combinations_exit_2(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench.main(argv) == 2
    err = capsys.readouterr().err
    assert says in err
    assert err.count("\n") == 1


def test_progress_line() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    line = bench.ProgressLine(terminal)
    line("connecting: 10 of 100 joined")
    line("sent 5")
    line.finish()
    assert terminal.getvalue().startswith("\rconnecting: 10 of 100 joined\rsent 5")
    assert "\n" not in terminal.getvalue()
    log = io.StringIO()
    line = bench.ProgressLine(log, every=3600)
    line("first")
    line("throttled")
    line.finish()
    assert log.getvalue() == "trio-chat bench: first\n"


# -- against the real server -----------------------------------------------------


def check_exact(step: bench.StepReport, *, members: int) -> None:
    """Every message reached every member once, in order."""
    assert step.sent > 0
    assert step.members == members
    assert step.rate_limited == 0
    assert step.received == step.expected
    assert step.loss == 0
    assert step.duplicates == step.order_violations == step.missing_ids == 0
    assert step.stale == step.foreign == 0
    assert step.closed == {}
    assert step.delivered == 1.0
    p50, p99, worst = (step.latency_ms[k] for k in ("p50", "p99", "max"))
    assert p50 is not None
    assert p99 is not None
    assert worst is not None
    assert 0 <= p50 <= p99 <= worst * 1.01


@pytest.mark.parametrize("rooms", [1, 3])
async def test_short_run_counts_every_delivery(start_server: StartServer, rooms: int) -> None:
    server = await start_server(rate_limit=0)
    with trio.fail_after(HANG_GUARD):
        report = await bench.measure(small(server.port, rooms=rooms, senders=4))
    assert report.ok, report.warnings
    # Only what the machine does (other processes taking the CPUs) may be
    # warned about here; nothing about this run's messages.
    about_the_run = [w for w in report.warnings if "the machine is contended" not in w]
    assert about_the_run == []
    assert report.connected == 10
    assert report.connect_failures == {}
    assert report.connect_seconds > 0
    [step] = report.steps
    assert report.result == step
    check_exact(step, members=10)
    assert step.sent == 20  # 20 msg/s for 1 s
    if rooms == 1:
        assert step.expected == 20 * 10  # everyone hears everything
    else:
        # Rooms of 4, 3 and 3 members; senders c0..c3 are in rooms 0, 1, 2, 0.
        assert step.expected == 10 * 4 + 5 * 3 + 5 * 3
    assert step.server_deliveries == step.expected  # the server's own count agrees
    assert step.server_cpu_seconds is not None
    assert step.server_cpu_seconds >= 0


async def test_json_report_has_the_documented_keys(start_server: StartServer) -> None:
    server = await start_server(rate_limit=0)
    with trio.fail_after(HANG_GUARD):
        report = await bench.measure(small(server.port, duration=0.5))
    data = json.loads(json.dumps(report.to_json()))
    assert set(data) == REPORT_KEYS
    assert set(data["result"]) == STEP_KEYS
    assert set(data["result"]["latency_ms"]) == {"p50", "p90", "p99", "max"}
    assert data["idle"] is None
    assert data["mode"] == "load"
    assert data["ok"] is True
    text = bench.format_report(report)
    assert "deliveries" in text
    assert "p99" in text


async def test_sweep_raises_the_rate_until_a_bound_breaks(start_server: StartServer) -> None:
    server = await start_server(rate_limit=0)
    with trio.fail_after(HANG_GUARD):
        loose = await bench.measure(
            small(server.port, duration=0.5, sweep=True, sweep_rates=(10, 20))
        )
    assert [step.rate for step in loose.steps] == [10, 20]
    assert all(step.held for step in loose.steps)
    for step in loose.steps:
        check_exact(step, members=10)
    assert loose.result is not None
    assert loose.result.rate == 20
    # A bound no run can meet: the first step fails, the sweep stops there.
    impossible = Bounds(max_p99=1e-6, min_delivered=0.99)
    with trio.fail_after(HANG_GUARD):
        tight = await bench.measure(
            small(server.port, duration=0.5, sweep=True, sweep_rates=(10, 20), bounds=impossible)
        )
    assert len(tight.steps) == 1
    assert not tight.steps[0].held
    assert tight.result is None
    assert "highest held: none" in bench.format_report(tight)


async def test_rate_limited_messages_are_reported_not_lost(start_server: StartServer) -> None:
    server = await start_server(rate_limit=1, rate_burst=2)
    # Refused messages never arrive, so the drain ends on a quiet second.
    config = small(server.port, connections=3, senders=1, rate=10, drain_quiet=1.0)
    with trio.fail_after(HANG_GUARD):
        report = await bench.measure(config)
    [step] = report.steps
    assert step.sent == 10
    assert step.rate_limited >= 5  # a burst of 2, then 1 per second, of 10 in one second
    accepted = step.sent - step.rate_limited
    assert step.expected == accepted * 3
    assert step.received == step.expected
    assert step.loss == 0
    assert not step.held
    assert not report.ok
    assert any("rate_limited" in w and "--rate-limit 0" in w for w in report.warnings)


async def test_workers_in_other_processes_count_exactly(start_server: StartServer) -> None:
    server = await start_server(rate_limit=0)
    with trio.fail_after(HANG_GUARD):
        report = await bench.measure(small(server.port, procs=2, rooms=2, senders=3))
    assert report.ok, report.warnings
    [step] = report.steps
    check_exact(step, members=10)
    assert step.expected == 20 * 5  # two rooms of five
    assert step.generator_cpu_seconds > 0


def test_the_first_address_that_connects_is_used() -> None:
    with socket.socket() as listener, socket.socket() as closed:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        closed.bind(("127.0.0.1", 0))  # bound, never listening: refuses
        refusing = closed.getsockname()
        listening = listener.getsockname()
        row = (socket.AF_INET, socket.SOCK_STREAM, 6, "")
        assert bench.first_reachable([(*row, refusing), (*row, listening)]) == (
            socket.AF_INET,
            listening,
        )
        reason = bench.first_reachable([(*row, refusing)])
        assert isinstance(reason, str)
        assert "refused" in reason.lower()


async def test_unreachable_server() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        with trio.fail_after(HANG_GUARD), pytest.raises(BenchError, match="cannot reach"):
            await bench.measure(small(port))


async def test_connection_limit_is_a_reported_failure(start_server: StartServer) -> None:
    server = await start_server(rate_limit=0, max_connections=6)
    with trio.fail_after(HANG_GUARD):
        report = await bench.measure(small(server.port, duration=0.5))
    assert report.connected == 6
    assert report.connect_failures == {"HTTP 503": 4}
    assert not report.ok
    [step] = report.steps
    assert step.members == 6
    assert step.received == step.expected  # the six that joined still count exactly
    assert any("4 of 10 connections failed" in w for w in report.warnings)


async def test_idle_reports_memory_per_connection() -> None:
    # Servers in child processes, so that their memory is their own; a fresh
    # one per run, since a server reuses memory that closed connections freed.
    reports = []
    for by_pid in (False, True):
        with trio.fail_after(HANG_GUARD):
            async with serving("--rate-limit", "0") as (process, port, _):
                config = small(port, connections=200, idle=True, rooms=20)
                if by_pid:
                    config = dataclasses.replace(config, server_pids=(process.pid,))
                reports.append(await bench.measure(config))
                process.terminate()
    report = reports[0]
    for idle_report in reports:
        assert idle_report.ok, idle_report.warnings
        assert idle_report.mode == "idle"
        assert idle_report.steps == []
        assert idle_report.connected == 200
        idle = idle_report.idle
        assert idle is not None
        assert idle.memory_per_connection_kb is not None
        assert idle.memory_per_connection_kb > 0
        assert idle.server_connections == 200
        assert idle.closed == {}
    assert set(json.loads(json.dumps(report.to_json()))["idle"]) == IDLE_KEYS
    assert "KB per connection" in bench.format_report(report)


# -- against a scripted server that gets the numbering wrong ---------------------


async def test_duplicates_and_order_violations_are_detected(nursery: trio.Nursery) -> None:
    """The i-th message comes back with the ids of `SCRIPT[i]` (join was id 1);
    a ping before them must be answered."""
    script = [[2], [3, 3], [5], [4], [6]]  # 3 twice; 5 before 4

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        hello = json.loads(await ws.get_message())
        room, name = hello["room"], hello["name"]
        welcome = {"type": "welcome", "room": room, "name": name, "members": [name]}
        join = {"type": "join", "id": 1, "room": room, "name": name, "ts": "t"}
        await ws.send_message(json.dumps({**welcome, "last_id": 1}) + "\n" + json.dumps(join))
        await ws.ping(b"still there?")  # returns once the generator answers with a pong
        for ids in script:
            say = json.loads(await ws.get_message())
            lines = [
                json.dumps(
                    {"type": "message", "id": i, "room": room, "name": name, "text": say["text"]},
                    separators=(",", ":"),
                )
                for i in ids
            ]
            await ws.send_message("\n".join(lines))
        with contextlib.suppress(ConnectionClosed):
            await ws.get_message()  # until the generator closes

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    config = small(server.port, connections=1, senders=1, rate=5)
    with trio.fail_after(HANG_GUARD):
        report = await bench.measure(config)
    [step] = report.steps
    assert step.sent == 5
    assert step.received == 5  # the duplicate is not a delivery
    assert step.duplicates == 1
    assert step.order_violations == 2  # 4 skipped, then 4 late
    assert step.missing_ids == 0
    assert step.loss == 0
    assert step.server_cpu_seconds is None  # no /metrics there


# -- the program ---------------------------------------------------------------


async def test_the_program_prints_one_json_object() -> None:
    async with serving("--rate-limit", "0") as (process, port, _):
        argv = [
            *TRIO_CHAT,
            "bench",
            f"ws://127.0.0.1:{port}/ws",
            "-c",
            "10",
            "--senders",
            "2",
            "--rate",
            "20",
            "--duration",
            "1s",
            "--procs",
            "2",
            "--server-pid",
            str(process.pid),
            "--json",
        ]
        with trio.fail_after(HANG_GUARD):
            done = await trio.run_process(
                argv, capture_stdout=True, capture_stderr=True, env=clean_env(), check=False
            )
        process.terminate()
    assert done.returncode == 0, done.stderr.decode()
    data = json.loads(done.stdout)  # one object, no progress mixed in
    assert set(data) == REPORT_KEYS
    assert data["ok"] is True
    assert data["result"]["received"] == data["result"]["expected"] == 20 * 10
    assert data["result"]["loss"] == 0
    assert not math.isnan(data["result"]["server_cpu_percent"])


def test_the_program_refuses_a_bad_duration() -> None:
    done = subprocess.run(
        [*TRIO_CHAT, "bench", "ws://127.0.0.1:1/ws", "--duration", "soon"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "--duration" in done.stderr
    assert done.stdout == ""


async def test_pagers_page_back_through_history_while_the_load_runs(
    start_server: StartServer,
) -> None:
    """Two of ten connections page back (the room holds more than a page, so
    they walk back with `before` and start over), first a step without paging
    to compare; both steps deliver everything."""
    server = await start_server(rate_limit=0, history_limit=250)
    with trio.fail_after(HANG_GUARD):
        # Fill the room's history first, so that pages walk back and wrap.
        await bench.measure(small(server.port, rate=200.0, duration=1.0, room_prefix="paged-"))
        report = await bench.measure(
            small(server.port, pagers=2, page_rate=20.0, room_prefix="paged-")
        )
    assert report.ok, report.warnings
    baseline, paged = report.steps
    assert report.result == paged
    for step in (baseline, paged):
        check_exact(step, members=10)
    assert not baseline.paging
    assert baseline.pages == baseline.page_requests == 0
    assert paged.paging
    assert paged.page_refused == 0
    assert paged.page_requests >= 10  # 2 pagers, 20/s for 1 s, one on its way at a time
    assert paged.pages == paged.page_requests
    p50, p99 = paged.page_latency_ms["p50"], paged.page_latency_ms["p99"]
    assert p50 is not None
    assert p99 is not None
    assert 0 < p50 <= p99
    text = bench.format_report(report)
    assert "without paging:" in text
    assert "with paging:" in text
    assert re.search(r"history pages +\d+ of \d+ requests answered", text), text
    assert "page latency  p50" in text
    data = json.loads(json.dumps(report.to_json()))
    assert data["result"]["pages"] == paged.pages
