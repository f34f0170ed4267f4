"""Shared fixtures: a real server on 127.0.0.1:0 in the test's own nursery."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from redis_server import command, running_redis
from wsclient import RawClient

from trio_chat.config import Settings
from trio_chat.server.app import serve_chat


@dataclass
class RunningServer:
    port: int
    settings: Settings
    shutdown: trio.Event
    stopped: trio.Event
    # Set it to cut --drain-delay short (if the starter passed it to serve_chat).
    drain_ended: trio.Event = field(default_factory=trio.Event)
    clients: list[RawClient] = field(default_factory=list)

    async def client(self, **kwargs: Any) -> RawClient:
        client = await RawClient.connect(self.port, **kwargs)
        self.clients.append(client)  # closed when the test ends
        return client

    async def joined(self, name: str, room: str = "lobby", **kwargs: Any) -> RawClient:
        """A client that has joined and consumed its welcome and replay."""
        client = await self.client(**kwargs)
        welcome = await client.hello(name, room)
        while True:  # the replay ends with our own join
            event = await client.next_event()
            if event["id"] == welcome["last_id"]:
                return client

    async def stop(self) -> None:
        """Shut the server down, with every open client answering its close."""
        self.shutdown.set()
        for client in self.clients:
            await client.closed()
        await self.stopped.wait()


StartServer = Callable[..., Awaitable[RunningServer]]


async def wait_until(done: Callable[[], bool], period: float = 0.01) -> None:
    """Poll `done` (state that reader tasks fill in) until it holds."""
    while True:
        if done():
            return
        await trio.sleep(period)


@asynccontextmanager
async def server_starter() -> AsyncIterator[StartServer]:
    """A function that starts servers (settings overridden by keyword) in a
    nursery of its own; their clients are closed and servers stopped on exit.

    Hypothesis tests use this directly: each example runs in a new Trio run,
    where the function-scoped `nursery` fixture does not exist.
    """
    servers: list[RunningServer] = []
    async with trio.open_nursery() as nursery:

        async def start(**overrides: Any) -> RunningServer:
            # No presence grace unless a test asks: a closed client leaves at once.
            base = Settings(host="127.0.0.1", port=0, db=":memory:", presence_grace=0.0)
            settings = dataclasses.replace(base, **overrides)
            shutdown, stopped, drain_ended = trio.Event(), trio.Event(), trio.Event()

            async def run(task_status: trio.TaskStatus[int]) -> None:
                try:
                    await serve_chat(
                        settings, shutdown, drain_ended=drain_ended, task_status=task_status
                    )
                finally:
                    stopped.set()

            port: int = await nursery.start(partial(run))
            servers.append(RunningServer(port, settings, shutdown, stopped, drain_ended))
            return servers[-1]

        try:
            yield start
        finally:
            for running in servers:
                for client in running.clients:
                    await client.aclose()
            nursery.cancel_scope.cancel()


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """Start a server with settings overridden by keyword; tests pick them."""
    async with server_starter() as start:
        yield start


@pytest.fixture
async def server(start_server: StartServer) -> RunningServer:
    """A server on its defaults, but with the rate limit off."""
    return await start_server(rate_limit=0)


# -- a real redis-server, for the backplane tests ------------------------------


@pytest.fixture(scope="session")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    directory: Path = tmp_path_factory.mktemp("redis")
    with running_redis(directory) as port:
        yield port


@pytest.fixture
def redis_url(redis_port: int) -> str:
    """The server, emptied for this test."""
    assert command(redis_port, "FLUSHALL") == b"+OK"
    return f"redis://127.0.0.1:{redis_port}/0"
