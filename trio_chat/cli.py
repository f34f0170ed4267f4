"""The `trio-chat` command line: `serve`, `connect`, `bench` and `token`.

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
import time
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from typing import NoReturn, cast

import trio

from . import __version__
from .backplane.errors import BackplaneError
from .config import (
    SettingError,
    Settings,
    add_serve_arguments,
    load_auth,
    load_settings,
    parse_duration,
)
from .core.auth import check_room_pattern, issue_token
from .core.protocol import ProtocolError
from .server.app import open_listeners, open_store, serve_chat
from .server.logs import JsonFormatter
from .server.workers import Supervisor, WorkersFailed
from .stores.sqlite import HistoryError

log = logging.getLogger("trio_chat")

EXIT_USAGE = 2
EXIT_INTERNAL_ERROR = 70  # EX_SOFTWARE: a bug stopped the server; a supervisor restarts it
# Seconds from the end of the drain delay (--drain-delay, after the first
# SIGINT/SIGTERM) to the end of the process, whatever happens: clients get
# SHUTDOWN_GRACE to answer their 1001, history is flushed, and if something
# still holds the exit (a disk that hangs, a bug), the process logs it and
# exits with status 1 rather than lingering.
SHUTDOWN_DEADLINE = 10.0
# With --workers, seconds the parent gives its workers to stop before it
# kills them: their own deadline, and time to exit after it.
WORKERS_STOP_DEADLINE = SHUTDOWN_DEADLINE + 5.0


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
    # Not a setting: how the parent of `serve --workers N` starts worker
    # NUMBER of N (see server/workers.py). Hidden from --help.
    serve.add_argument("--as-worker", type=int, metavar="NUMBER", help=argparse.SUPPRESS)
    connect = commands.add_parser(
        "connect",
        help="a terminal client: print a room, send each line of standard input",
        description=(
            "Join a room and print its events; each line of standard input is sent "
            "as a message. Reconnects by itself when the connection drops; exits 0 "
            "at the end of input (once every line sent is confirmed) or on Ctrl-C. "
            "When standard input is a pipe, nothing is printed unless --print asks."
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
    token = commands.add_parser(
        "token",
        help="print a token for token mode, signed with the configured secret",
        description=(
            "Print a signed token (HS256) naming NAME, for a hello to a server in token "
            "mode: for operators and tests. The secret comes from --auth-secret-file or "
            "TRIO_CHAT_AUTH_SECRET_FILE, as for serve; a server holding only a public key "
            "cannot sign (its tokens come from the holder of the private key)."
        ),
    )
    token.add_argument("name", metavar="NAME", help="the member's display name (the token's sub)")
    token.add_argument(
        "--rooms",
        metavar="ROOMS",
        type=_room_patterns,
        help="comma-separated rooms the token grants, * matching any run of characters "
        "(default: every room)",
    )
    token.add_argument(
        "--ttl",
        metavar="DURATION",
        type=_ttl,
        default=3600.0,
        help="how long the token is valid, e.g. 10m, 1h, 720h (default: 1h)",
    )
    token.add_argument("--auth-secret-file", metavar="PATH", help="the HS256 secret's file")
    # Read only to say that a public key cannot sign.
    token.add_argument("--auth-public-key", metavar="PATH", help=argparse.SUPPRESS)
    return parser


MAX_TTL = 366 * 24 * 3600.0  # a year: a longer-lived token is a mistake, not a plan


def _ttl(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if not 0 < seconds <= MAX_TTL:
        raise argparse.ArgumentTypeError("must be above 0 and at most 8784h (a year)")
    return seconds


def _room_patterns(text: str) -> list[str]:
    patterns = [part.strip() for part in text.split(",") if part.strip()]
    try:
        return [check_room_pattern(pattern) for pattern in patterns]
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _print_token(args: argparse.Namespace) -> int:
    """`trio-chat token`: one token on stdout, or one line on stderr and status 2."""
    try:
        verifier = load_auth(args, os.environ)
    except SettingError as error:
        print(f"trio-chat: {error}", file=sys.stderr)
        return EXIT_USAGE
    if verifier is None:
        print(
            "trio-chat: no secret to sign with: set --auth-secret-file or "
            "TRIO_CHAT_AUTH_SECRET_FILE",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if not verifier.can_sign:
        print(
            f"trio-chat: only a public key is configured ({verifier.algorithm}): tokens come "
            "from whoever holds its private key",
            file=sys.stderr,
        )
        return EXIT_USAGE
    secret = verifier.key
    assert isinstance(secret, bytes)  # a secret verifier holds the file's bytes
    try:
        token = issue_token(secret, args.name, now=time.time(), ttl=args.ttl, rooms=args.rooms)
    except ProtocolError as error:
        print(f"trio-chat: invalid NAME {args.name!r}: {error.message}", file=sys.stderr)
        return EXIT_USAGE
    print(token)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(_command(argv)).parse_args(argv)
    if args.command == "bench":
        from .bench import run_bench  # noqa: PLC0415 (see the module docstring)

        return run_bench(args)
    if args.command == "token":
        return _print_token(args)
    if args.command == "connect":
        from .terminal import run_connect  # noqa: PLC0415 (see the module docstring)

        if args.token is None:
            args.token = os.environ.get("TRIO_CHAT_TOKEN") or None
        if args.name is None and args.token is None:
            print(
                "trio-chat connect: --name is required (unless --token or TRIO_CHAT_TOKEN "
                "names you)",
                file=sys.stderr,
            )
            return EXIT_USAGE

        try:
            return trio.run(run_connect, args, sys.stdin.buffer, sys.stdout, sys.stderr)
        except KeyboardInterrupt:  # Ctrl-C before run_connect took SIGINT over
            return 0
    try:
        settings = load_settings(args, os.environ)
    except SettingError as error:
        print(f"trio-chat: {error}", file=sys.stderr)
        return EXIT_USAGE
    worker: int | None = args.as_worker
    if worker is not None and settings.workers != 1:
        print("trio-chat: --as-worker is for the workers of --workers N", file=sys.stderr)
        return EXIT_USAGE
    _configure_logging(settings, worker)
    if settings.backplane is not None and args.db is not None and worker is None:
        # Only for the flag: a TRIO_CHAT_DB set for every service is no mistake.
        log.warning(
            "--db %r is not used: with --backplane, history lives in the backplane", settings.db
        )
    try:
        if settings.workers > 1:
            return trio.run(_serve_workers, settings, argv)
        return trio.run(_serve, settings, worker)
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


def _configure_logging(settings: Settings, worker: int | None = None) -> None:
    if settings.log_format == "json":
        # A worker's objects share the parent's stderr: each says whose it is.
        static = {} if worker is None else {"worker": worker, "pid": os.getpid()}
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter(static))
        logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])
        return
    # A worker's lines share the parent's stderr: each says whose it is.
    source = "" if worker is None else f"[worker {worker} pid %(process)d] "
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s {source}%(name)s: %(message)s",
        stream=sys.stderr,
    )


def _cannot_listen(settings: Settings, error: OSError) -> int:
    reason = error.strerror or str(error)
    print(
        f"trio-chat: cannot listen on {settings.host}:{settings.port} (--host/--port): {reason}",
        file=sys.stderr,
    )
    return EXIT_USAGE


class _TellParent:
    """A worker's `task_status`: once it serves, one line on stdout, the
    pipe its parent reads (see server/workers.py)."""

    def started(self, value: int | None = None) -> None:
        try:
            sys.stdout.write(f"serving on port {value}\n")
            sys.stdout.flush()
        except OSError:  # the parent is gone: there is no one to tell
            pass


async def _serve(settings: Settings, worker: int | None = None) -> int:
    try:
        listeners = await open_listeners(settings, reuse_port=worker is not None)
    except OSError as error:
        return _cannot_listen(settings, error)
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
    # Ended early by a second signal; None: no delay, a second signal forces.
    drain_ended = trio.Event() if settings.drain_delay > 0 else None
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            # The watcher stays outside what it may cancel, to keep its deadline.
            force = trio.CancelScope()
            nursery.start_soon(
                partial(
                    watch_signals,
                    signals,
                    shutdown,
                    force,
                    drain_ended=drain_ended,
                    deadline=settings.drain_delay + SHUTDOWN_DEADLINE,
                )
            )
            if worker is not None:
                nursery.start_soon(_watch_parent, shutdown)
            unreachable: BaseException | None = None
            try:
                with force:
                    await serve_chat(
                        settings,
                        shutdown,
                        listeners=listeners,
                        store=store,
                        drain_ended=drain_ended,
                        task_status=trio.TASK_STATUS_IGNORED if worker is None else _TellParent(),
                    )
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


async def _watch_parent(shutdown: trio.Event) -> None:
    """A worker's standard input is a pipe its parent holds open and never
    writes to: its end means the parent is gone (killed), and the worker
    stops rather than keep the port without anyone to restart or stop it."""
    # os.read, not sys.stdin: a thread left blocked in a buffered read holds
    # its lock, and the interpreter aborts when it meets that lock at exit.
    while await trio.to_thread.run_sync(os.read, 0, 4096, abandon_on_cancel=True):
        pass
    log.warning("the parent process is gone: shutting down")
    shutdown.set()


def _worker_command(argv: Sequence[str], number: int, port: int) -> list[str]:
    """Worker `number` of `serve --workers N`: the same program and arguments
    (the same environment too, inherited), as one process on `port`; flags
    given last win."""
    return [
        *(sys.executable, "-m", "trio_chat", *argv),
        *("--workers", "1", "--port", str(port), "--as-worker", str(number)),
    ]


async def _serve_workers(settings: Settings, argv: Sequence[str]) -> int:
    supervisor = Supervisor(
        settings,
        partial(_worker_command, argv),
        stop_deadline=settings.drain_delay + WORKERS_STOP_DEADLINE,
    )
    try:
        await supervisor.reserve_port()
    except OSError as error:
        return _cannot_listen(settings, error)
    shutdown = trio.Event()
    failed: WorkersFailed | None = None
    try:
        async with trio.open_nursery() as nursery:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                nursery.start_soon(relay_signals, signals, shutdown, supervisor.forward_signal)
                try:
                    await supervisor.serve_workers(shutdown)
                finally:
                    nursery.cancel_scope.cancel()
    except* WorkersFailed as group:
        failed = cast("WorkersFailed", _first(group))
    if failed is None:
        return 0
    if failed.reason is not None:
        print(f"trio-chat: {failed.reason}", file=sys.stderr)
    return failed.status


async def relay_signals(
    signals: AsyncIterator[int], shutdown: trio.Event, forward: Callable[[int], None]
) -> None:
    """The parent of workers: the first SIGINT/SIGTERM sets `shutdown` (the
    workers get SIGTERM from there); each later one is passed on at once as
    SIGTERM, the workers' second signal: end the drain delay, or stop now."""
    async for signum in signals:
        name = signal.Signals(signum).name
        if not shutdown.is_set():
            log.info("%s received: stopping the workers", name)
            shutdown.set()
        else:
            log.warning("second %s: telling the workers to stop now", name)
            forward(signal.SIGTERM)


def _exit_now() -> None:
    logging.shutdown()  # flush the log: os._exit skips it
    os._exit(1)


async def watch_signals(
    signals: AsyncIterator[int],
    shutdown: trio.Event,
    force: trio.CancelScope,
    *,
    drain_ended: trio.Event | None = None,
    deadline: float = SHUTDOWN_DEADLINE,
    overrun: Callable[[], None] = _exit_now,
) -> None:
    """First SIGINT/SIGTERM: graceful shutdown. A second one: cancel at once.

    With a drain delay (`drain_ended`, which the server sets when the delay
    is over), a second signal during the delay ends the delay instead (the
    clients are closed gracefully at once); a signal after that cancels.

    Either way, `deadline` seconds after the first signal `overrun` is
    called (by default: exit with status 1), because the graceful path
    includes shielded steps (the last history write) that no cancellation
    can cut short; the caller adds the drain delay to it. The caller cancels
    this task once the server has stopped.
    """
    async for signum in signals:
        log.info("%s received: shutting down", signal.Signals(signum).name)
        shutdown.set()
        break
    with trio.move_on_after(deadline):
        async for signum in signals:
            name = signal.Signals(signum).name
            if drain_ended is not None and not drain_ended.is_set():
                log.warning("second %s: ending the drain delay now", name)
                drain_ended.set()
            else:
                log.warning("%s again: stopping now", name)
                force.cancel()
        return
    log.error("shutdown took over %gs: exiting now", deadline)
    overrun()
