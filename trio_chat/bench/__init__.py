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

The modules, each importing only those listed before it (`plan`,
`counting` and `report` do no I/O), and the pure client core
(`trio_chat.client`: the server's URL, client-side WebSocket framing, the
event-id transcript):

- `plan`: the target, the connections and rooms, the pacing schedule;
- `counting`: what arrives, counted and checked: the latency histogram and
  percentiles, id order, loss accounting, scanning received frames (how
  receivers measure is explained there);
- `metrics`: the server's metrics and `/proc` figures, and the Trio probe
  that fetches them;
- `report`: report arithmetic and the printed report;
- `reactor`: one worker process's sockets (why the workers are not Trio is
  explained there);
- `workers`: the spawned processes and the pipe calls that drive them;
- `coordinator`: the Trio side that runs the phases;
- `cli`: the command line.

This module re-exports the names the command line, the tests and
`benchmarks/run.py` use.
"""

from __future__ import annotations

from .cli import ProgressLine, add_bench_arguments, config_from_args, main, run_bench
from .coordinator import BenchConfig, measure
from .counting import (
    HISTOGRAM_SIZE,
    Joining,
    StepStats,
    bucket_ceiling,
    expected_deliveries,
    latency_bucket,
    merge_histograms,
    percentile,
    scan_lines,
    scan_live,
)
from .metrics import (
    ServerSample,
    parse_metrics,
    proc_children,
    proc_sample,
    sample_from_metrics,
)
from .plan import (
    BenchError,
    messages_due,
    parse_target,
    plan_connections,
    send_offset,
    sender_share,
    sweep_rates,
    total_messages,
)
from .reactor import first_reachable
from .report import (
    BenchReport,
    Bounds,
    SendReport,
    StepReport,
    StepResult,
    format_report,
    memory_per_connection_kb,
    summarize_step,
)
from .workers import raise_open_file_limit

__all__ = [
    "HISTOGRAM_SIZE",
    "BenchConfig",
    "BenchError",
    "BenchReport",
    "Bounds",
    "Joining",
    "ProgressLine",
    "SendReport",
    "ServerSample",
    "StepReport",
    "StepResult",
    "StepStats",
    "add_bench_arguments",
    "bucket_ceiling",
    "config_from_args",
    "expected_deliveries",
    "first_reachable",
    "format_report",
    "latency_bucket",
    "main",
    "measure",
    "memory_per_connection_kb",
    "merge_histograms",
    "messages_due",
    "parse_metrics",
    "parse_target",
    "percentile",
    "plan_connections",
    "proc_children",
    "proc_sample",
    "raise_open_file_limit",
    "run_bench",
    "sample_from_metrics",
    "scan_lines",
    "scan_live",
    "send_offset",
    "sender_share",
    "summarize_step",
    "sweep_rates",
    "total_messages",
]
