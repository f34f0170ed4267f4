"""The `trio-chat` command line: `serve`, `connect` and `bench`.

The clients (`connect`, the terminal client; `bench`, the load generator)
are imported only when their command runs, so that `serve` loads no client
code: a server process holds only what serving needs.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from typing import NoReturn

import trio

from . import __version__
from .backplane.errors import BackplaneError
from .config import SettingError, Settings, add_serve_arguments, load_settings
from .server.app import open_listeners, open_store, serve_chat
from .stores.sqlite import HistoryError

log = logging.getLogger("trio_chat")

EXIT_USAGE = 2
EXIT_INTERNAL_ERROR = 70  # EX_SOFTWARE: a bug stopped the server; a supervisor restarts it
# Seconds from the first SIGINT/SIGTERM to the end of the process, whatever
# happens: clients get SHUTDOWN_GRACE to answer their 1001, history is
# flushed, and if something still holds the exit (a disk that hangs, a bug),
# the process logs it and exits with status 1 rather than lingering.
SHUTDOWN_DEADLINE = 10.0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (and exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see --help)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; the arguments of `connect` and `bench` are added only when
    `command` names them (their modules are imported for it)."""
    parser = _Parser(
        prog="trio-chat",
        description="A real-time chat server and browser client on Trio.",
    )
    parser.add_argument("--version", action="version", version=f"trio-chat {__version__}")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    serve = commands.add_parser(
        "serve",
        help="run the chat server (HTTP and WebSocket on one port)",
        description=(
            "Run the chat server until SIGINT or SIGTERM. Every setting can also be "
            "given as an environment variable TRIO_CHAT_<NAME>; a flag beats the "
            "variable, the variable beats the default."
        ),
    )
    add_serve_arguments(serve)
    connect = commands.add_parser(
        "connect",
        help="a terminal client: print a room, send each line of standard input",
        description=(
            "Join a room and print its events; each line of standard input is sent "
            "as a message. Reconnects by itself when the connection drops; exits 0 "
            "at the end of input (once every line sent is confirmed) or on Ctrl-C."
        ),
    )
    if command == "connect":
        from .terminal import add_connect_arguments  # noqa: PLC0415 (see the module docstring)

        add_connect_arguments(connect)
    bench = commands.add_parser(
        "bench",
        help="a load generator: measure a running server",
        description=(
            "Open connections to a running trio-chat server, let some of them send at a "
            "paced rate, and report deliveries per second, loss, duplicates, order "
            "violations, latency and CPU use (--sweep: the highest rate held; --idle: "
            "server memory per connection)."
        ),
    )
    if command == "bench":
        from .bench import add_bench_arguments  # noqa: PLC0415 (see the module docstring)

        add_bench_arguments(bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser(_command(sys.argv[1:] if argv is None else argv)).parse_args(argv)
    if args.command == "bench":
        from .bench import run_bench  # noqa: PLC0415 (see the module docstring)

        return run_bench(args)
    if args.command == "connect":
        from .terminal import run_connect  # noqa: PLC0415 (see the module docstring)

        try:
            return trio.run(run_connect, args, sys.stdin.buffer, sys.stdout, sys.stderr)
        except KeyboardInterrupt:  # Ctrl-C before run_connect took SIGINT over
            return 0
    try:
        settings = load_settings(args, os.environ)
    except SettingError as error:
        print(f"trio-chat: {error}", file=sys.stderr)
        return EXIT_USAGE
    _configure_logging(settings)
    if settings.backplane is not None and (args.db is not None or os.environ.get("TRIO_CHAT_DB")):
        log.warning(
            "--db %r is not used: with --backplane, history lives in the backplane", settings.db
        )
    try:
        return trio.run(_serve, settings)
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        return 130
    except Exception as error:  # noqa: BLE001 (a bug, logged with its traceback where it happened)
        log.critical("stopped by an internal error: %s", _summary(error))
        return EXIT_INTERNAL_ERROR


def _command(argv: Sequence[str]) -> str | None:
    """The command word of a command line (the first argument that is not an option)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def _first(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def _summary(error: BaseException) -> str:
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return f"{type(error).__name__}: {error}"


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


async def _serve(settings: Settings) -> int:
    try:
        listeners = await open_listeners(settings)
    except OSError as error:
        reason = error.strerror or str(error)
        print(
            f"trio-chat: cannot listen on {settings.host}:{settings.port} "
            f"(--host/--port): {reason}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    store = None
    if settings.backplane is None:  # else history lives in the backplane
        try:
            store = await open_store(settings)
        except HistoryError as error:
            print(f"trio-chat: {error} (--db)", file=sys.stderr)
            for listener in listeners:
                await listener.aclose()
            return EXIT_USAGE
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            # The watcher stays outside what it may cancel, to keep its deadline.
            force = trio.CancelScope()
            nursery.start_soon(watch_signals, signals, shutdown, force)
            unreachable: BaseException | None = None
            try:
                with force:
                    await serve_chat(settings, shutdown, listeners=listeners, store=store)
            except* BackplaneError as group:
                unreachable = _first(group)
            finally:
                nursery.cancel_scope.cancel()
    if unreachable is not None:
        print(
            f"trio-chat: cannot use the backplane at {settings.backplane} "
            f"(--backplane): {unreachable}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return 0


def _exit_now() -> None:
    logging.shutdown()  # flush the log: os._exit skips it
    os._exit(1)


async def watch_signals(
    signals: AsyncIterator[int],
    shutdown: trio.Event,
    force: trio.CancelScope,
    *,
    deadline: float = SHUTDOWN_DEADLINE,
    overrun: Callable[[], None] = _exit_now,
) -> None:
    """First SIGINT/SIGTERM: graceful shutdown. A second one: cancel at once.

    Either way, `deadline` seconds after the first signal `overrun` is
    called (by default: exit with status 1), because the graceful path
    includes shielded steps (the last history write) that no cancellation
    can cut short. The caller cancels this task once the server has stopped.
    """
    async for signum in signals:
        log.info("%s received: shutting down", signal.Signals(signum).name)
        shutdown.set()
        break
    with trio.move_on_after(deadline):
        async for signum in signals:
            log.warning("second %s: stopping now", signal.Signals(signum).name)
            force.cancel()
        return
    log.error("shutdown took over %gs: exiting now", deadline)
    overrun()
