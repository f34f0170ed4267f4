"""The `trio-chat` command line (see ../shared/cli.md for the contract)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

import trio

from . import __version__
from .bench import add_bench_arguments, run_bench
from .config import SettingError, Settings, add_serve_arguments, load_settings
from .server import open_listeners, open_store, serve_chat
from .sqlite_store import HistoryError
from .terminal import add_connect_arguments, run_connect

log = logging.getLogger("trio_chat")

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (and exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
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
    add_bench_arguments(bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        return run_bench(args)
    if args.command == "connect":
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
    try:
        return trio.run(_serve, settings)
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        return 130


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
    try:
        store = await open_store(settings)
    except HistoryError as error:
        print(f"trio-chat: {error} (--db)", file=sys.stderr)
        for listener in listeners:
            await listener.aclose()
        return EXIT_USAGE
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_signals, shutdown, nursery.cancel_scope)
        await serve_chat(settings, shutdown, listeners=listeners, store=store)
        nursery.cancel_scope.cancel()
    return 0


async def _watch_signals(shutdown: trio.Event, force: trio.CancelScope) -> None:
    """First SIGINT/SIGTERM: graceful shutdown. A second one: stop at once."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            if shutdown.is_set():
                log.warning("second %s: stopping now", signal.Signals(signum).name)
                force.cancel()
                return
            log.info("%s received: shutting down", signal.Signals(signum).name)
            shutdown.set()
