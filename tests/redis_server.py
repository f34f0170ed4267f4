"""A real `redis-server` for the backplane tests, as a child process.

It runs in a temporary directory on a free loopback port, with persistence
off, for the whole test session; each test starts from an empty server
(`FLUSHALL`). Without `redis-server` the tests are skipped, except under CI
(env `CI` set), where that is a failure: `.ci/run` installs it.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from system_programs import system_program

START_WAIT = 10.0  # seconds for the server to answer PING


def redis_server_binary() -> str:
    """The path of `redis-server`, or skip (fail under CI) when it is missing."""
    return system_program("redis-server", "redis-server")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def command(port: int, *args: str) -> bytes:
    """Send one command over a fresh connection; the first reply line."""
    request = b"*%d\r\n" % len(args) + b"".join(
        b"$%d\r\n%s\r\n" % (len(arg.encode()), arg.encode()) for arg in args
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(request)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = conn.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply.strip()


def _answers(process: subprocess.Popen[bytes], port: int) -> bool:
    """Whether the server answers PING before it exits or `START_WAIT` passes."""
    deadline = time.monotonic() + START_WAIT
    while process.poll() is None and time.monotonic() < deadline:
        try:
            if command(port, "PING") == b"+PONG":
                return True
        except OSError:
            time.sleep(0.02)  # a child process starting to listen: not timing logic
    return False


def _spawn(
    binary: str, port: int, directory: Path, *, persistent: bool = False
) -> subprocess.Popen[bytes]:
    persistence = ["--appendonly", "no"]
    if persistent:  # every write on disk before its reply
        persistence = ["--appendonly", "yes", "--appendfsync", "always"]
    return subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", *persistence],
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def running_redis(directory: Path) -> Iterator[int]:
    """A `redis-server` on a free port; yields the port and stops it on exit."""
    binary = redis_server_binary()
    for _attempt in range(5):  # another program may take the free port first
        port = free_port()
        process = _spawn(binary, port, directory)
        if _answers(process, port):
            break
        process.kill()
        process.wait()
    else:
        pytest.fail("redis-server did not start")
    try:
        yield port
    finally:
        _stop(process)


class RedisProcess:
    """A `redis-server` of one test's own, which it can stop (or kill) and
    start again on the same port: an outage, then the server back, empty or,
    when `persistent`, with what its append-only file kept.

    `start`, `stop` and `kill` block for a moment (a child process starting
    or ending): call them through `trio.to_thread.run_sync` from async tests.
    """

    def __init__(self, directory: Path, *, persistent: bool = False) -> None:
        self.directory = directory
        self.persistent = persistent
        self.port = 0  # chosen by the first start, kept by every restart
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None

    def start(self) -> None:
        """Start it: on a free port the first time, then on the same one."""
        assert self._process is None, "already running"
        binary = redis_server_binary()
        first = self.port == 0
        for _attempt in range(5 if first else 1):
            port = free_port() if first else self.port
            process = _spawn(binary, port, self.directory, persistent=self.persistent)
            if _answers(process, port):
                self._process, self.port = process, port
                return
            process.kill()
            process.wait()
        pytest.fail(f"redis-server did not start on port {self.port or 'any'}")

    def stop(self) -> None:
        """SIGTERM, as an operator's restart would (it saves what it must)."""
        assert self._process is not None, "not running"
        process, self._process = self._process, None
        _stop(process)

    def kill(self) -> None:
        """SIGKILL: the server is gone at once, as in a crash."""
        if self._process is not None:
            process, self._process = self._process, None
            process.kill()
            process.wait()
