"""The `trio-chat` program as users run it: a real child process."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from functools import partial

import pytest
import trio
import trio.testing
from processes import clean_env, serving
from processes import run_trio_chat as run
from wsclient import RawClient, http_request

from trio_chat import __version__
from trio_chat.cli import SHUTDOWN_DEADLINE, relay_signals, watch_signals


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--port", "eighty"], {}, "--port"),
        (["--port", "70000"], {}, "--port"),
        (["--ping-period", "70s"], {}, "--ping-period"),
        (["--write-wait=-1s"], {}, "--write-wait"),
        (["--write-wait"], {}, "--write-wait"),
        (["--no-such-flag"], {}, "--no-such-flag"),
        (["--handshake-timeout", "10 parsecs"], {}, "--handshake-timeout"),
        (["--log-level", "loud"], {}, "--log-level"),
        (["--allowed-origin", "not a url"], {}, "--allowed-origin"),
        ([], {"TRIO_CHAT_SEND_QUEUE_SIZE": "0"}, "TRIO_CHAT_SEND_QUEUE_SIZE"),
        ([], {"PONG_WAIT": "soon"}, "PONG_WAIT"),
        ([], {"TRIO_CHAT_RATE_LIMIT": "fast"}, "TRIO_CHAT_RATE_LIMIT"),
        (["--workers", "2"], {}, "--workers"),  # several workers need --backplane
        ([], {"TRIO_CHAT_WORKERS": "lots"}, "TRIO_CHAT_WORKERS"),
        (["--log-format", "xml"], {}, "--log-format"),
        ([], {"TRIO_CHAT_LOG_FORMAT": "logfmt"}, "TRIO_CHAT_LOG_FORMAT"),
        (["--debug", "--debug-token", ""], {}, "--debug-token"),
        (["--debug-token", "short"], {}, "--debug-token"),
        ([], {"TRIO_CHAT_DEBUG_TOKEN": "has spaces in a long token"}, "TRIO_CHAT_DEBUG_TOKEN"),
        (["--drain-delay", "a while"], {}, "--drain-delay"),
        ([], {"TRIO_CHAT_DRAIN_DELAY": "-5s"}, "TRIO_CHAT_DRAIN_DELAY"),
        (["--trusted-proxy", "10.0.0.1/8"], {}, "--trusted-proxy"),
        ([], {"TRIO_CHAT_TRUSTED_PROXIES": "10.0.0.0/8,lb"}, "TRIO_CHAT_TRUSTED_PROXIES"),
    ],
)
def test_bad_setting_is_one_line_and_exit_2(
    args: list[str], env: dict[str, str], named: str
) -> None:
    result = run("serve", *args, **env)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("trio-chat")
    assert named in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("command", "loads"), [("serve", False), ("connect", True)])
def test_serve_loads_no_client_code(command: str, loads: bool) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "trio_chat", command, "--help"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=30,
        check=True,
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    assert ("trio_chat.terminal" in imported) is loads
    assert ("trio_chat.bench" in imported) is False
    assert "pyinstrument" not in imported  # loaded by debug mode's profile only


def test_version_and_help() -> None:
    assert run("--version").stdout.strip() == f"trio-chat {__version__}"
    help_text = run("serve", "--help").stdout
    for flag in ("--port", "--ping-period", "--allowed-origin", "--history-replay"):
        assert flag in help_text


def test_busy_port_is_one_line_and_exit_2() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("serve", "--port", str(port))
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert f"127.0.0.1:{port}" in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_shuts_down_gracefully(signum: signal.Signals) -> None:
    async with serving() as (process, port, output):
        page = await http_request(port, "/")
        assert page.status == 200
        client = await RawClient.connect(port)
        await client.hello("alice")
        process.send_signal(signum)
        with trio.fail_after(10):
            closed = await client.closed()
            assert closed.code == 1001
            assert await process.wait() == 0
        await client.aclose()
    log = b"".join(output).decode()
    assert "Traceback" not in log
    assert "shutdown complete" in log


async def test_environment_settings_reach_the_server() -> None:
    async with serving(TRIO_CHAT_HISTORY_REPLAY="1", TRIO_CHAT_LOG_LEVEL="debug") as (
        process,
        port,
        output,
    ):
        first = await RawClient.connect(port)
        await first.hello("first")
        second = await RawClient.connect(port)
        await second.hello("second")
        assert (await second.next_event())["name"] == "second"  # a replay of one event
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert await process.wait() == 0
        await first.aclose()
        await second.aclose()
    assert "DEBUG" in b"".join(output).decode()


async def test_sigterm_ends_the_process_even_with_clients_that_stopped_reading() -> None:
    async with serving(TRIO_CHAT_RATE_LIMIT="0") as (process, port, output):
        talker = await RawClient.connect(port)
        await talker.hello("talker")
        stalled = []
        for n in range(40):
            client = await RawClient.connect(port, receive_buffer=4096)
            await client.hello(f"stalled{n}")
            stalled.append(client)
        for _ in range(40):  # fills the stalled clients' socket buffers
            await talker.say("x" * 4000)
        await talker.next_of("message")
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(SHUTDOWN_DEADLINE):
            assert await process.wait() == 0
        for client in [talker, *stalled]:
            await client.aclose()
    log = b"".join(output).decode()
    assert "Traceback" not in log
    assert "shutdown complete" in log


def cancelled(scope: trio.CancelScope) -> bool:
    return scope.cancel_called


async def test_a_second_signal_cancels_the_graceful_shutdown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    send, receive = trio.open_memory_channel[int](2)
    shutdown, force = trio.Event(), trio.CancelScope()
    overruns: list[float] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            partial(watch_signals, receive, shutdown, force, overrun=lambda: overruns.append(0))
        )
        await send.send(signal.SIGTERM)
        await shutdown.wait()
        assert not cancelled(force)
        await trio.sleep(1)
        await send.send(signal.SIGINT)
        await trio.sleep(0.1)
        assert cancelled(force)
        nursery.cancel_scope.cancel()  # what the program does once stopped
    assert overruns == []


async def test_a_second_signal_ends_the_drain_delay_and_a_third_cancels(
    autojump_clock: trio.testing.MockClock,
) -> None:
    send, receive = trio.open_memory_channel[int](3)
    shutdown, force, drain_ended = trio.Event(), trio.CancelScope(), trio.Event()
    overruns: list[float] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            partial(
                watch_signals,
                receive,
                shutdown,
                force,
                drain_ended=drain_ended,
                overrun=lambda: overruns.append(0),
            )
        )
        await send.send(signal.SIGTERM)
        await shutdown.wait()
        await trio.sleep(1)
        assert not drain_ended.is_set()
        await send.send(signal.SIGTERM)
        await drain_ended.wait()
        await trio.sleep(0.1)
        assert not cancelled(force)  # the clients are closed gracefully
        await send.send(signal.SIGINT)
        await trio.sleep(0.1)
        assert cancelled(force)
        nursery.cancel_scope.cancel()
    assert overruns == []


async def test_a_signal_after_the_drain_delay_cancels(
    autojump_clock: trio.testing.MockClock,
) -> None:
    send, receive = trio.open_memory_channel[int](2)
    shutdown, force, drain_ended = trio.Event(), trio.CancelScope(), trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            partial(watch_signals, receive, shutdown, force, drain_ended=drain_ended)
        )
        await send.send(signal.SIGTERM)
        await shutdown.wait()
        drain_ended.set()  # the server: the delay is over, clients are being closed
        await send.send(signal.SIGTERM)
        await trio.sleep(0.1)
        assert cancelled(force)
        nursery.cancel_scope.cancel()


async def ready_status(port: int) -> int:
    return (await http_request(port, "/readyz")).status


async def until_unready(port: int) -> None:
    """Poll `/readyz` until it answers 503 (the signal is on its way)."""
    with trio.fail_after(10):
        while True:
            if await ready_status(port) == 503:
                return
            await trio.sleep(0.01)


async def test_sigterm_with_a_drain_delay_fails_readyz_before_closing_anyone() -> None:
    """Real time, a real process: the order of what happens, never how long."""
    async with serving("--drain-delay", "1h") as (process, port, output):
        client = await RawClient.connect(port)
        late: RawClient | None = None
        try:
            await client.hello("alice")
            assert await ready_status(port) == 200
            process.send_signal(signal.SIGTERM)
            await until_unready(port)
            # Still serving: the client is open and answered, and new ones join.
            late = await RawClient.connect(port)
            await late.hello("bob")
            with trio.fail_after(10):
                while (await client.next_of("join"))["name"] != "bob":
                    pass
            assert process.returncode is None
            process.send_signal(signal.SIGTERM)  # a second signal ends the delay
            with trio.fail_after(SHUTDOWN_DEADLINE + 5):
                assert (await client.closed()).code == 1001
                assert (await late.closed()).code == 1001
                assert await process.wait() == 0
        finally:
            await client.aclose()
            if late is not None:
                await late.aclose()
    log = b"".join(output).decode()
    assert "Traceback" not in log
    assert "draining: /readyz answers 503" in log
    assert "second SIGTERM: ending the drain delay now" in log
    assert "shutdown complete" in log


async def test_a_shutdown_that_hangs_is_cut_at_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    send, receive = trio.open_memory_channel[int](1)
    shutdown, force = trio.Event(), trio.CancelScope()
    overrun = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            partial(watch_signals, receive, shutdown, force, deadline=10.0, overrun=overrun.set)
        )
        await send.send(signal.SIGTERM)
        await shutdown.wait()
        start = trio.current_time()
        await overrun.wait()  # nothing finishes the "server": the deadline fires
        assert trio.current_time() - start == pytest.approx(10.0)


async def test_the_parent_of_workers_passes_a_second_signal_on() -> None:
    send, receive = trio.open_memory_channel[int](3)
    shutdown = trio.Event()
    forwarded: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay_signals, receive, shutdown, forwarded.append)
        await send.send(signal.SIGINT)
        await shutdown.wait()
        assert forwarded == []  # the supervisor sends the first SIGTERM itself
        await send.send(signal.SIGINT)
        await send.send(signal.SIGTERM)
        await send.aclose()
    assert forwarded == [signal.SIGTERM, signal.SIGTERM]


def test_an_unreachable_backplane_is_one_line_and_exit_2() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        nobody = f"redis://:s3cr3t@127.0.0.1:{probe.getsockname()[1]}/0"
    result = run("serve", "--port", "0", "--backplane", nobody)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("trio-chat: cannot use the backplane at redis://:***@")
    assert "s3cr3t" not in result.stderr
    assert "Traceback" not in result.stderr


def test_db_given_with_a_backplane_is_said_to_be_unused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nobody = f"redis://127.0.0.1:{probe.getsockname()[1]}/0"
    result = run("serve", "--port", "0", "--backplane", nobody, "--db", "chat.db")
    assert result.returncode == 2
    warning, error = result.stderr.splitlines()
    assert "WARNING" in warning
    assert (
        "--db 'chat.db' is not used: with --backplane, history lives in the backplane" in warning
    )
    assert error.startswith("trio-chat: cannot use the backplane")
