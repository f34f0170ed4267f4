"""`trio-chat serve --workers N`: real processes on one port, a real redis-server.

The parent runs as a child process of the test (`processes.serving`), its
workers as its own children; which worker answers a connection is told by
`/metrics` (`process_start_time_seconds` differs: workers start one after the
other), and the workers' pids by the prefix of their log lines. Every wait is
on a condition, bounded by `fail_after`; the machine may be slow and busy.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import pytest
import trio
from conftest import wait_until
from processes import TRIO_CHAT, clean_env, serving_until
from redis_server import free_port
from wsclient import RawClient, http_request

from trio_chat.bench.metrics import parse_metrics
from trio_chat.config import Settings
from trio_chat.core.restarts import RestartPolicy
from trio_chat.server.workers import Supervisor, WorkersFailed

START_WAIT = 60  # seconds for all workers to serve (each loads the Redis client)
WAIT = 30  # seconds any other step may take
ALL_SERVING = re.compile(
    rb"serving on http://127\.0\.0\.1:(\d+)/ \(WebSocket at /ws\) with \d+ workers"
)
WORKER = re.compile(rb"\[worker (\d+) pid (\d+)\]")


@asynccontextmanager
async def workers(
    redis_url: str, *args: str, count: int = 2
) -> AsyncIterator[tuple[trio.Process, int, list[bytes]]]:
    """`serve --workers COUNT` on a port of its own, once every worker serves."""
    async with serving_until(
        ALL_SERVING,
        START_WAIT,
        *("--workers", str(count), "--backplane", redis_url, "--rate-limit", "0", *args),
    ) as (process, port, output):
        try:
            yield process, port, output
        finally:
            # Stopped gracefully if the test did not; else `serving` kills the
            # parent, and its workers see their stdin end and stop too.
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with trio.move_on_after(WAIT):
                    await process.wait()


def worker_pids(output: list[bytes]) -> dict[int, list[int]]:
    """Each worker's process ids so far, in order, from its log lines."""
    pids: dict[int, list[int]] = {}
    for number, pid in WORKER.findall(b"".join(output)):
        seen = pids.setdefault(int(number), [])
        if int(pid) not in seen:
            seen.append(int(pid))
    return pids


async def connections_by_worker(port: int, total: int) -> dict[float, int]:
    """Open WebSocket connections per worker (by start time), read from
    /metrics over new connections until two workers answered and their
    counts add up to `total`."""
    seen: dict[float, int] = {}
    while len(seen) < 2 or sum(seen.values()) != total:
        response = await http_request(port, "/metrics")
        assert response.status == 200
        metrics = parse_metrics(response.body.decode())
        seen[metrics["process_start_time_seconds"]] = int(metrics["trio_chat_connections"])
    return seen


async def test_connections_spread_over_the_workers_and_share_rooms(redis_url: str) -> None:
    async with workers(redis_url) as (_process, port, output):
        clients: list[RawClient] = []
        with trio.fail_after(WAIT):
            spread: dict[float, int] = {}
            # The kernel hashes each connection's addresses to a worker: 20
            # land on both but with odds of 2**-19; if not, open more.
            while len(spread) < 2 or min(spread.values()) == 0:
                for _ in range(20):
                    client = await RawClient.connect(port)
                    await client.hello(f"c{len(clients)}", "spread")
                    clients.append(client)
                spread = await connections_by_worker(port, len(clients))
            # Every member, whichever worker holds it, sees every message
            # with the same id, in the same order.
            for client in clients:
                await client.say(f"from {id(client)}")
            seen = []
            for client in clients:
                messages = [await client.next_of("message") for _ in clients]
                seen.append([(m["id"], m["name"], m["text"]) for m in messages])
        assert all(stream == seen[0] for stream in seen)
        ids = [event_id for event_id, _, _ in seen[0]]
        assert ids == list(range(ids[0], ids[0] + len(clients)))
        for client in clients:
            await client.aclose()
    assert b"Traceback" not in b"".join(output)


async def test_a_killed_worker_is_restarted_and_the_port_keeps_serving(redis_url: str) -> None:
    async with workers(redis_url) as (process, port, output):
        first, second = (worker_pids(output)[number][0] for number in (1, 2))
        os.kill(first, signal.SIGKILL)
        died = f"worker 1 (pid {first}) exited with signal SIGKILL".encode()
        with trio.fail_after(WAIT):
            # Connections the kernel gave the worker before it died die with it;
            # once the parent has seen it exit, its listener is gone too.
            await wait_until(lambda: died in b"".join(output))
            while len(worker_pids(output)[1]) < 2 or b"serving again" not in b"".join(output):
                # Meanwhile worker 2 answers every connection.
                assert (await http_request(port, "/healthz")).status == 200
                await trio.sleep(0.05)  # a real process restarting: not timing logic
            assert await connections_by_worker(port, 0)  # both answer on the one port
        log = b"".join(output).decode()
        assert worker_pids(output)[2] == [second]
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(WAIT):
            assert await process.wait() == 0
    assert "Traceback" not in log


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_to_the_parent_closes_every_client_with_1001(
    redis_url: str, signum: signal.Signals
) -> None:
    async with workers(redis_url) as (process, port, output):
        clients = []
        with trio.fail_after(WAIT):
            for n in range(10):
                client = await RawClient.connect(port)
                await client.hello(f"c{n}")
                clients.append(client)
        process.send_signal(signum)
        with trio.fail_after(WAIT):
            for client in clients:
                assert (await client.closed()).code == 1001
            assert await process.wait() == 0
        for client in clients:
            await client.aclose()
    log = b"".join(output).decode()
    assert "Traceback" not in log
    assert log.count("shutdown complete") == 2  # one per worker
    assert "all workers stopped" in log


async def test_workers_stop_when_their_parent_is_killed(redis_url: str) -> None:
    async with workers(redis_url) as (process, _port, output):
        process.kill()
        with trio.fail_after(WAIT):
            await process.wait()
            # The workers share the parent's stderr: the pipe ends when both have exited.
            await wait_until(lambda: b"".join(output).count(b"shutdown complete") == 2)
    assert b"".join(output).count(b"the parent process is gone") == 2


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TRIO_CHAT, "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=WAIT + START_WAIT,
        check=False,
    )


def test_an_unreachable_backplane_is_one_line_and_exit_2() -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    result = run("--workers", "2", "--backplane", nobody)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("trio-chat: cannot use the backplane")
    assert "Traceback" not in result.stderr


def test_a_busy_port_is_one_line_and_exit_2(redis_url: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("--port", str(port), "--workers", "2", "--backplane", redis_url)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


# -- the supervisor with stand-in workers -------------------------------------------
# Small Python programs in place of `trio-chat serve`: they say they serve as
# a worker does (a line on stdout), or fail, at once.

SERVES = "import sys, time; print('serving', flush=True); time.sleep(600)"


def stand_in(*programs: str) -> list[list[str]]:
    return [[sys.executable, "-c", program] for program in programs]


def supervisor(
    commands: Sequence[Sequence[str]], count: int, *, stop_deadline: float = WAIT, **policy: float
) -> Supervisor:
    """Worker n runs commands[min(n, len) - 1], one after the other on each restart."""
    runs: dict[int, int] = {}

    def command(number: int, port: int) -> Sequence[str]:
        del port
        runs[number] = runs.get(number, 0) + 1
        return commands[min(runs[number], len(commands)) - 1]

    settings = Settings(host="127.0.0.1", port=0, workers=count)
    restarts = RestartPolicy(first_delay=0.01, max_delay=0.05, **policy)  # type: ignore[arg-type]
    return Supervisor(settings, command, stop_deadline=stop_deadline, restarts=restarts)


async def test_workers_that_keep_failing_stop_the_supervisor() -> None:
    workers = supervisor(stand_in(SERVES, "raise SystemExit(3)"), count=1, give_up_after=3)
    with trio.fail_after(WAIT), pytest.RaisesGroup(WorkersFailed, flatten_subgroups=True) as info:
        async with trio.open_nursery() as nursery:
            # Serves once, then fails three times in a row at start.
            await nursery.start(workers.serve_workers, trio.Event())
            workers.forward_signal(signal.SIGKILL)
    (failed,) = info.value.exceptions
    assert isinstance(failed, WorkersFailed)
    assert failed.status == 1
    assert failed.reason is not None
    assert failed.reason.startswith("worker 1 failed 3 times in a row")
    assert "(last: status 3)" in failed.reason


async def test_status_2_before_serving_stops_the_supervisor_at_once() -> None:
    workers = supervisor(stand_in("raise SystemExit(2)"), count=3)
    with trio.fail_after(WAIT), pytest.raises(WorkersFailed) as info:
        await workers.serve_workers(trio.Event())
    assert (info.value.status, info.value.reason) == (2, None)


async def test_shutdown_stops_every_worker() -> None:
    workers = supervisor(stand_in(SERVES), count=3)
    shutdown = trio.Event()
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(workers.serve_workers, shutdown)
            assert port > 0
            shutdown.set()  # SIGTERM: the stand-ins die of it, which is fine at a stop


async def test_workers_that_ignore_the_stop_are_killed_at_the_deadline() -> None:
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('serving', flush=True); time.sleep(600)"
    )
    workers = supervisor(stand_in(stubborn), count=2, stop_deadline=0.5)
    shutdown = trio.Event()
    with trio.fail_after(WAIT), pytest.RaisesGroup(WorkersFailed, flatten_subgroups=True) as info:
        async with trio.open_nursery() as nursery:
            await nursery.start(workers.serve_workers, shutdown)
            shutdown.set()
    (failed,) = info.value.exceptions
    assert isinstance(failed, WorkersFailed)
    assert failed.status == 1
    assert failed.reason == "killed 2 of the workers: still running 0.5s after SIGTERM"
