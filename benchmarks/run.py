"""Start a fresh trio-chat server, measure it with `trio-chat bench`, stop it.

    python benchmarks/run.py [BENCH FLAGS] [--db PATH] [--no-pin]
                             [--send-queue-size N] [--max-connections N] [--server-arg ARG]
                             [--backplane [URL]] [--workers N]

Every flag of `trio-chat bench` but the URL is accepted (`--connections`,
`--senders`, `--rate`, `--duration`, `--sweep`, `--idle`, `--json`, ...). The
server runs as `python -m trio_chat serve --port 0 --rate-limit 0 --db DB`
(DB: `bench.db` in a fresh temporary folder unless `--db` names one), pinned
to core 0 with `taskset -c 0` on a machine with two cores or more, while the
generator, this process and its worker processes, keeps to the other cores
(what `taskset -c 1-N` would do). The generator reads the server's CPU and
memory from /proc (`--server-pid`). The server is stopped with SIGTERM at
the end. Exit status: the generator's.

`--backplane URL` runs the server with `--backplane URL` instead of `--db`
(history lives in Redis then). `--backplane` alone starts a fresh
`redis-server` for the run (Debian's; persistence off, a free loopback port,
a temporary folder) and stops it at the end. Either way this script reads
Redis's `INFO` before and after the connections join and around each step,
and prints what Redis did per join and per message: commands (those that
scripts run included, this script's own `INFO` excluded), bytes in and out
(less the `INFO` requests' own, measured once at the start) and CPU time,
from /proc/PID/stat for a Redis of its own, else from `INFO cpu` (which a
shared Redis charges to every client). With `--json` these lines go to
stderr, after the generator's JSON object.

`--workers N` (with `--backplane`) passes `--workers N` to the server: a
parent process and N workers sharing the port. The generator's connections
all go to one URL; the kernel spreads them over the workers. The server's
CPU and memory are then those of the parent and every process under it,
summed (`--server-pid` once for each), found once all workers serve.

Cores: the server (its N workers, or itself) gets the first N cores, a
Redis of this script's own the next one, and the generator the rest. With
too few cores for that, Redis shares the generator's cores (2 cores, one
process: server on core 0, Redis and generator on core 1); with fewer cores
than server processes plus one for the generator, nothing is pinned (2
cores and `--workers 2`: the workers, Redis and generator share both cores,
so the figures include waiting for a CPU; measure workers on 4 cores or
more). What was chosen is printed first. `--no-pin` pins nothing.

`--reference` measures a minimal relay instead, pinned the same way: the same
command on both says how much of a number is the machine and how much is
trio-chat. `--reference` alone, or `--reference websockets`, runs
`benchmarks/reference_relay.py` (on the websockets library);
`--reference trio-websocket` runs `benchmarks/trio_websocket_relay.py` (the
same relay written the usual trio-websocket way, one frame per event).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from trio_chat import bench
from trio_chat.backplane.url import BackplaneUrl, BackplaneUrlError, parse_backplane_url

SERVING = re.compile(r"serving on http://127\.0\.0\.1:(\d+)/")  # every server says this
RELAYS = {  # --reference CHOICE: the relay it runs
    "websockets": "reference_relay.py",
    "trio-websocket": "trio_websocket_relay.py",
}
START_WAIT = 30.0  # seconds for the server to report its port
STOP_WAIT = 10.0  # seconds for the server to exit after SIGTERM
REDIS_WAIT = 10.0  # seconds for a fresh redis-server to answer PING
OWN_REDIS = ""  # --backplane without a URL: start a redis-server for the run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="Start a fresh trio-chat server and run `trio-chat bench` against it.",
    )
    server = parser.add_argument_group("the server")
    server.add_argument("--db", help="history file (default: bench.db in a new temporary folder)")
    server.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin the server to core 0 and the generator to the other cores",
    )
    server.add_argument(
        "--send-queue-size", help="the server's --send-queue-size (default: its own, 256)"
    )
    server.add_argument(
        "--max-connections",
        type=int,
        help="the server's --max-connections (default: 10000, or more if --connections needs)",
    )
    server.add_argument(
        "--backplane",
        nargs="?",
        const=OWN_REDIS,
        metavar="URL",
        help="run the server with --backplane URL (history in Redis, no --db); without a "
        "URL, start a fresh redis-server for the run; report Redis's work per join and "
        "per message",
    )
    server.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="run the server with --workers N (needs --backplane); its CPU and memory are "
        "summed over the parent and its workers",
    )
    server.add_argument(
        "--reference",
        nargs="?",
        const="websockets",
        choices=sorted(RELAYS),
        help="measure a minimal relay instead, to tell the machine's share of a number from "
        "the server's: benchmarks/reference_relay.py on websockets (the default) or "
        "benchmarks/trio_websocket_relay.py on trio-websocket",
    )
    server.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for `trio-chat serve` (repeatable)",
    )
    return parser


# -- cores ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pinning:
    """The cores of each party; all empty: nothing pinned."""

    server: tuple[int, ...] = ()
    redis: tuple[int, ...] = ()
    generator: tuple[int, ...] = ()
    note: str = "nothing pinned"

    def taskset(self, cores: tuple[int, ...]) -> list[str]:
        return ["taskset", "-c", ",".join(map(str, cores))] if cores else []


def plan_pinning(cores: Sequence[int], *, pin: bool, servers: int, redis: bool) -> Pinning:
    """The first `servers` cores for the server's processes, the next for a
    Redis of our own if there is a core to spare for the generator after it
    (else Redis shares the generator's), the rest for the generator; nothing
    pinned without at least one core for the generator."""
    cores = sorted(cores)
    if not pin:
        return Pinning(note="nothing pinned (--no-pin)")
    if shutil.which("taskset") is None:
        return Pinning(note="nothing pinned (no taskset)")
    if len(cores) < servers + 1:
        return Pinning(
            note=f"nothing pinned: {servers} server processes and the generator need "
            f"{servers + 1} cores and there are {len(cores)}; everything shares them, "
            "so the figures include waiting for a CPU"
        )
    server, rest = tuple(cores[:servers]), tuple(cores[servers:])
    if not redis:
        return Pinning(
            server, (), rest, f"server on cores {_cores(server)}, generator on {_cores(rest)}"
        )
    if len(rest) >= 2:
        return Pinning(
            server,
            rest[:1],
            rest[1:],
            f"server on cores {_cores(server)}, redis-server on {_cores(rest[:1])}, "
            f"generator on {_cores(rest[1:])}",
        )
    return Pinning(
        server,
        rest,
        rest,
        f"server on cores {_cores(server)}, redis-server and generator share "
        f"{_cores(rest)} (too few cores for one each)",
    )


def _cores(cores: tuple[int, ...]) -> str:
    return ",".join(map(str, cores))


# -- Redis -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RedisSample:
    """Redis's cumulated counters at one instant."""

    cpu_seconds: float
    bytes_in: float  # total_net_input_bytes
    bytes_out: float  # total_net_output_bytes
    calls: dict[str, float]  # by command, from INFO commandstats (scripts' commands included)

    def minus(self, before: RedisSample, overhead: RedisSample) -> RedisSample:
        """What happened since `before`, less one `INFO` round (`overhead`)."""
        calls = {
            name: count - before.calls.get(name, 0.0)
            for name, count in self.calls.items()
            if name not in {"info", "auth"}  # this script's own
        }
        return RedisSample(
            self.cpu_seconds - before.cpu_seconds,
            max(0.0, self.bytes_in - before.bytes_in - overhead.bytes_in),
            max(0.0, self.bytes_out - before.bytes_out - overhead.bytes_out),
            {name: count for name, count in calls.items() if count > 0},
        )

    def per(self, count: int, each: str) -> str:
        """One line: this much Redis work, per `each` of `count`."""
        top = sorted(self.calls.items(), key=lambda item: -item[1])[:6]
        names = ", ".join(f"{name} {calls / count:.2f}" for name, calls in top)
        return (
            f"per {each}: {sum(self.calls.values()) / count:.2f} commands ({names or 'none'}), "
            f"{self.bytes_in / count:,.0f} bytes in, {self.bytes_out / count:,.0f} out, "
            f"{1e6 * self.cpu_seconds / count:.1f} us CPU ({self.cpu_seconds:.2f} s for {count:,})"
        )


@dataclass
class Redis:
    """A Redis server to read `INFO` from: ours (`process`) or the URL's."""

    url: BackplaneUrl
    process: subprocess.Popen[bytes] | None = None
    overhead: RedisSample = RedisSample(0.0, 0.0, 0.0, {})  # one INFO round's own bytes
    samples: list[tuple[str, RedisSample]] = field(default_factory=list)

    def command(self, *args: str) -> bytes:
        """Send one command over a fresh connection (after AUTH if the URL
        has a password); the reply's first line, or a bulk reply's body."""
        request = b""
        if self.url.password is not None:
            user = [self.url.username] if self.url.username else []
            request += _resp("AUTH", *user, self.url.password)
        request += _resp(*args)
        with socket.create_connection((self.url.host, self.url.port), timeout=5) as conn:
            conn.sendall(request)
            reply = conn.makefile("rb")
            if self.url.password is not None and not reply.readline().startswith(b"+OK"):
                raise OSError("Redis refused AUTH")
            head = reply.readline().rstrip(b"\r\n")
            if head.startswith(b"$") and int(head[1:]) >= 0:
                return reply.read(int(head[1:]) + 2)[:-2]
            return head

    def sample(self) -> RedisSample:
        """`INFO all`, and the CPU from /proc when the server is ours."""
        fields: dict[str, str] = {}
        calls: dict[str, float] = {}
        for line in self.command("INFO", "all").decode("utf-8", "replace").splitlines():
            name, _, value = line.partition(":")
            if name.startswith("cmdstat_"):
                stats = dict(part.split("=", 1) for part in value.split(","))
                calls[name.removeprefix("cmdstat_")] = float(stats["calls"])
            else:
                fields[name] = value.strip()
        cpu = float(fields["used_cpu_sys"]) + float(fields["used_cpu_user"])
        if self.process is not None:  # ours: its /proc/PID/stat, like the server's
            cpu = bench.proc_sample([self.process.pid]).cpu_seconds or 0.0
        return RedisSample(
            cpu,
            float(fields["total_net_input_bytes"]),
            float(fields["total_net_output_bytes"]),
            calls,
        )

    def calibrate(self) -> None:
        """Measure what one `INFO` round adds to the byte counters."""
        first = self.sample()
        self.overhead = RedisSample(0.0, 0.0, 0.0, {})
        self.overhead = self.sample().minus(first, self.overhead)

    def mark(self, instant: str) -> None:
        """`bench.measure`'s hook: sample Redis at each of its instants (a
        sample that fails is left out, and said so, rather than end the run)."""
        try:
            self.samples.append((instant, self.sample()))
        except (OSError, KeyError, ValueError) as error:
            print(f"benchmarks/run.py: cannot read Redis's INFO: {error!r}", file=sys.stderr)

    def summary(self, report: bench.BenchReport) -> list[str]:
        """What Redis did per join and per message, from the samples."""
        at = dict(self.samples)  # "start" and "joined" come once
        steps = [after for instant, after in self.samples if instant == "stepped"]
        befores = [before for instant, before in self.samples if instant == "step"]
        lines = []
        if "start" in at and "joined" in at and report.connected:
            joins = at["joined"].minus(at["start"], self.overhead)
            lines.append(f"redis: joins: {joins.per(report.connected, 'join')}")
        for n, (before, after, step) in enumerate(zip(befores, steps, report.steps, strict=False)):
            messages = step.sent - step.rate_limited
            if not messages:
                continue
            used = after.minus(before, self.overhead)
            where = f"step {n + 1} ({step.rate:,.6g} msg/s)" if len(report.steps) > 1 else "step"
            lines.append(
                f"redis: {where}: {used.per(messages, 'message')}; "
                f"{100 * used.cpu_seconds / step.elapsed:.1f} % of a core, "
                f"{1e6 * used.cpu_seconds / max(step.received, 1):.2f} us per delivery"
            )
        if len(self.samples) >= 2:
            whole = self.samples[-1][1].cpu_seconds - self.samples[0][1].cpu_seconds
            lines.append(f"redis: CPU {whole:.2f} s over the run (joins, steps, pauses)")
        return lines


def _resp(*args: str) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(
        b"$%d\r\n%s\r\n" % (len(arg.encode()), arg.encode()) for arg in args
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_redis(folder: str, taskset: list[str]) -> Redis:
    """A fresh redis-server (persistence off) on a free loopback port.

    Raises:
        SystemExit: there is no redis-server, or it did not start.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit(
            "benchmarks/run.py: --backplane without a URL needs redis-server "
            "(Debian: apt-get install redis-server)"
        )
    for _attempt in range(5):  # another program may take the free port first
        port = _free_port()
        command = [*taskset, binary, "--port", str(port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no"]
        print(f"redis-server: {shlex.join(command)}", file=sys.stderr)
        process = subprocess.Popen(  # noqa: S603 (Debian's redis-server, our arguments)
            command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        redis = Redis(BackplaneUrl("127.0.0.1", port), process)
        deadline = time.monotonic() + REDIS_WAIT
        while process.poll() is None and time.monotonic() < deadline:
            try:
                if redis.command("PING") == b"+PONG":
                    return redis
            except OSError:
                time.sleep(0.02)  # a child process starting to listen
        _stop(process)
    raise SystemExit("benchmarks/run.py: redis-server did not start")


# -- the run -----------------------------------------------------------------


def _forward(
    stream: IO[str], lines: list[str], ready: threading.Event, serving: re.Pattern[str]
) -> None:
    """Copy the server's log to our stderr; note its port line."""
    for line in stream:
        lines.append(line)
        sys.stderr.write(f"server: {line}")
        if serving.search(line):
            ready.set()
    ready.set()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    options, bench_argv = parser.parse_known_args(argv)
    server_settings = (options.db, options.send_queue_size, options.max_connections)
    if options.reference and (
        any(server_settings)
        or options.server_arg
        or options.backplane is not None
        or options.workers != 1
    ):
        parser.error("--reference takes no server settings: the relay has none")
    if options.workers < 1:
        parser.error("--workers must be 1 or more")
    if options.workers > 1 and options.backplane is None:
        parser.error("--workers needs --backplane: workers share rooms through Redis")
    if options.db and options.backplane is not None:
        parser.error("--db does not go with --backplane: history lives in Redis then")
    redis_url = None
    if options.backplane:
        try:
            redis_url = parse_backplane_url(options.backplane)
        except BackplaneUrlError as error:
            parser.error(f"--backplane: {error}")
    bench_parser = argparse.ArgumentParser(prog="benchmarks/run.py")
    bench.add_bench_arguments(bench_parser)
    placeholder = "ws://127.0.0.1:1/ws"
    bench_args = bench_parser.parse_args([placeholder, *bench_argv])  # usage errors first
    bench.raise_open_file_limit()  # the server inherits it

    with tempfile.TemporaryDirectory(prefix="trio-chat-bench-") as folder:
        own_redis = options.backplane == OWN_REDIS
        pinning = plan_pinning(
            sorted(os.sched_getaffinity(0)),
            pin=options.pin,
            servers=options.workers,
            redis=own_redis,
        )
        if options.workers > 1 or own_redis:
            print(f"cores: {pinning.note}", file=sys.stderr)
        redis = start_redis(folder, pinning.taskset(pinning.redis)) if own_redis else None
        if redis_url is not None and not redis_url.tls:  # INFO over plain TCP only
            redis = Redis(redis_url)
        try:
            return _serve_and_measure(
                options, bench_args, bench_argv, folder=folder, pinning=pinning, redis=redis
            )
        finally:
            if redis is not None and redis.process is not None:
                _stop(redis.process)


def _serve_and_measure(
    options: argparse.Namespace,
    bench_args: argparse.Namespace,
    bench_argv: list[str],
    *,
    folder: str,
    pinning: Pinning,
    redis: Redis | None,
) -> int:
    max_connections = options.max_connections or max(10000, bench_args.connections + 100)
    taskset = pinning.taskset(pinning.server)
    command = [*taskset, sys.executable, "-m", "trio_chat", "serve", "--port", "0"]
    command += ["--rate-limit", "0"]
    backplane = options.backplane or (str(redis.url) if redis else None)
    if backplane is None:
        command += ["--db", options.db or str(Path(folder) / "bench.db")]
    else:
        command += ["--backplane", backplane]
    if options.workers > 1:
        command += ["--workers", str(options.workers)]
    command += ["--max-connections", str(max_connections)]
    if options.send_queue_size:
        command += ["--send-queue-size", options.send_queue_size]
    command += options.server_arg
    if options.reference:
        relay = Path(__file__).with_name(RELAYS[options.reference])
        command = [*taskset, sys.executable, str(relay), "--port", "0"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIO_CHAT_")}
    masked = str(parse_backplane_url(backplane)) if backplane else None  # no password shown
    shown = [masked if part == backplane else part for part in command]
    print(f"server: {' '.join(map(str, shown))}", file=sys.stderr)
    server = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
        command, stderr=subprocess.PIPE, text=True, env=env
    )
    processes: list[int] = []
    try:
        return _measure(
            server,
            bench_argv,
            pinning=pinning,
            redis=redis,
            workers=options.workers,
            processes=processes,
        )
    finally:
        _stop(server)
        for pid in processes[1:]:  # a worker its parent left behind: ours to end
            with contextlib.suppress(OSError):
                if b"trio_chat" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)


def server_processes(pid: int) -> list[int]:
    """`pid` and every process under it, parents first."""
    found = [pid]
    for parent in found:  # grows as it goes: a work queue, not recursion
        found += bench.proc_children(parent)
    return found


def _measure(
    server: subprocess.Popen[str],
    bench_argv: list[str],
    *,
    pinning: Pinning,
    redis: Redis | None,
    workers: int,
    processes: list[int],
) -> int:
    """Wait for the server, find its processes (into `processes`), run the
    generator against it; Redis sampled around its phases."""
    assert server.stderr is not None
    serving = SERVING
    if workers > 1:
        serving = re.compile(SERVING.pattern + rf".*with {workers} workers")
    lines: list[str] = []
    ready = threading.Event()
    threading.Thread(
        target=_forward, args=(server.stderr, lines, ready, serving), daemon=True
    ).start()
    ready.wait(START_WAIT)
    match = next((m for line in lines if (m := serving.search(line))), None)
    if match is None:
        what = f"serving with {workers} workers" if workers > 1 else "its port"
        print(f"benchmarks/run.py: the server did not report {what}", file=sys.stderr)
        return 1
    processes += server_processes(server.pid) if workers > 1 else [server.pid]
    if workers > 1:
        print(f"server: processes {', '.join(map(str, processes))}", file=sys.stderr)
        if len(processes) < workers + 1:
            print(
                f"benchmarks/run.py: warning: {len(processes) - 1} processes under the "
                f"server's, not {workers}: the CPU figures miss some workers",
                file=sys.stderr,
            )
    if pinning.generator:
        os.sched_setaffinity(0, pinning.generator)
        print(f"generator: on cores {sorted(pinning.generator)}", file=sys.stderr)
    url = f"ws://127.0.0.1:{match.group(1)}/ws"
    argv = [url]
    for pid in processes:
        argv += ["--server-pid", str(pid)]
    argv += bench_argv
    print(f"generator: trio-chat bench {' '.join(argv)}", file=sys.stderr)
    parser = argparse.ArgumentParser(prog="trio-chat bench")
    bench.add_bench_arguments(parser)
    args = parser.parse_args(argv)
    if redis is None:
        return bench.run_bench(args)
    try:
        redis.calibrate()
    except (OSError, KeyError, ValueError) as error:
        print(
            f"benchmarks/run.py: no Redis figures: cannot read its INFO: {error!r}",
            file=sys.stderr,
        )
        return bench.run_bench(args)
    reports: list[bench.BenchReport] = []
    status = bench.run_bench(args, mark=redis.mark, on_report=reports.append)
    summary = redis.summary(reports[0]) if reports else []
    out = sys.stderr if args.json else sys.stdout
    for line in summary:
        print(line, file=out)
    return status


def _stop(process: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if process.poll() is None:
            process.kill()
    process.wait()


if __name__ == "__main__":
    sys.exit(main())
