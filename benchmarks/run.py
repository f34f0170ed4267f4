"""Start a fresh trio-chat server, measure it with `trio-chat bench`, stop it.

    python benchmarks/run.py [BENCH FLAGS] [--db PATH] [--no-pin]
                             [--send-queue-size N] [--max-connections N] [--server-arg ARG]

Every flag of `trio-chat bench` but the URL is accepted (`--connections`,
`--senders`, `--rate`, `--duration`, `--sweep`, `--idle`, `--json`, ...). The
server runs as `python -m trio_chat serve --port 0 --rate-limit 0 --db DB`
(DB: `bench.db` in a fresh temporary folder unless `--db` names one), pinned
to core 0 with `taskset -c 0` on a machine with two cores or more, while the
generator, this process and its worker processes, keeps to the other cores
(what `taskset -c 1-N` would do). The generator reads the server's CPU and
memory from /proc (`--server-pid`). The server is stopped with SIGTERM at
the end. Exit status: the generator's.

`--reference` measures a minimal relay instead, pinned the same way: the same
command on both says how much of a number is the machine and how much is
trio-chat. `--reference` alone, or `--reference websockets`, runs
`benchmarks/reference_relay.py` (on the websockets library);
`--reference trio-websocket` runs `benchmarks/trio_websocket_relay.py` (the
same relay written the usual trio-websocket way, one frame per event).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from trio_chat import bench

SERVING = re.compile(r"serving on http://127\.0\.0\.1:(\d+)/")  # every server says this
RELAYS = {  # --reference CHOICE: the relay it runs
    "websockets": "reference_relay.py",
    "trio-websocket": "trio_websocket_relay.py",
}
START_WAIT = 30.0  # seconds for the server to report its port
STOP_WAIT = 10.0  # seconds for the server to exit after SIGTERM


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


def _pinning(*, pin: bool) -> tuple[list[str], set[int] | None]:
    """`taskset -c 0` for the server, and the other cores for us, when that makes sense."""
    cores = sorted(os.sched_getaffinity(0))
    if not pin or len(cores) < 2 or shutil.which("taskset") is None:
        return [], None
    return ["taskset", "-c", str(cores[0])], set(cores[1:])


def _forward(stream: IO[str], lines: list[str], ready: threading.Event) -> None:
    """Copy the server's log to our stderr; note its port line."""
    for line in stream:
        lines.append(line)
        sys.stderr.write(f"server: {line}")
        if SERVING.search(line):
            ready.set()
    ready.set()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    options, bench_argv = parser.parse_known_args(argv)
    server_settings = (options.db, options.send_queue_size, options.max_connections)
    if options.reference and (any(server_settings) or options.server_arg):
        parser.error("--reference takes no server settings: the relay has none")
    bench_parser = argparse.ArgumentParser(prog="benchmarks/run.py")
    bench.add_bench_arguments(bench_parser)
    placeholder = "ws://127.0.0.1:1/ws"
    bench_args = bench_parser.parse_args([placeholder, *bench_argv])  # usage errors first
    bench.raise_open_file_limit()  # the server inherits it

    with tempfile.TemporaryDirectory(prefix="trio-chat-bench-") as folder:
        db = options.db or str(Path(folder) / "bench.db")
        max_connections = options.max_connections or max(10000, bench_args.connections + 100)
        taskset, generator_cores = _pinning(pin=options.pin)
        command = [
            *taskset,
            sys.executable,
            "-m",
            "trio_chat",
            "serve",
            "--port",
            "0",
            "--rate-limit",
            "0",
            "--db",
            db,
            "--max-connections",
            str(max_connections),
        ]
        if options.send_queue_size:
            command += ["--send-queue-size", options.send_queue_size]
        command += options.server_arg
        if options.reference:
            relay = Path(__file__).with_name(RELAYS[options.reference])
            command = [*taskset, sys.executable, str(relay), "--port", "0"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIO_CHAT_")}
        print(f"server: {' '.join(command)}", file=sys.stderr)
        server = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
            command, stderr=subprocess.PIPE, text=True, env=env
        )
        try:
            return _measure(server, bench_argv, generator_cores)
        finally:
            _stop(server)


def _measure(
    server: subprocess.Popen[str], bench_argv: list[str], generator_cores: set[int] | None
) -> int:
    assert server.stderr is not None
    lines: list[str] = []
    ready = threading.Event()
    threading.Thread(target=_forward, args=(server.stderr, lines, ready), daemon=True).start()
    ready.wait(START_WAIT)
    match = next((m for line in lines if (m := SERVING.search(line))), None)
    if match is None:
        print("benchmarks/run.py: the server did not start", file=sys.stderr)
        return 1
    if generator_cores is not None:
        os.sched_setaffinity(0, generator_cores)
        print(f"generator: on cores {sorted(generator_cores)}", file=sys.stderr)
    url = f"ws://127.0.0.1:{match.group(1)}/ws"
    argv = [url, "--server-pid", str(server.pid), *bench_argv]
    print(f"generator: trio-chat bench {' '.join(argv)}", file=sys.stderr)
    return bench.main(argv)


def _stop(server: subprocess.Popen[str]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT
        while server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if server.poll() is None:
            server.kill()
    server.wait()


if __name__ == "__main__":
    sys.exit(main())
