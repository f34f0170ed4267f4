"""Shared fixtures: a real server on 127.0.0.1:0 in the test's own nursery."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
import trio
from wsclient import RawClient

from trio_chat.config import Settings
from trio_chat.server import serve_chat


@dataclass
class RunningServer:
    port: int
    settings: Settings
    shutdown: trio.Event
    stopped: trio.Event
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
        self.shutdown.set()
        await self.stopped.wait()


StartServer = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
async def start_server(nursery: trio.Nursery) -> AsyncIterator[StartServer]:
    """Start a server with settings overridden by keyword; tests pick them."""
    servers: list[RunningServer] = []

    async def start(**overrides: Any) -> RunningServer:
        settings = dataclasses.replace(Settings(host="127.0.0.1", port=0), **overrides)
        shutdown, stopped = trio.Event(), trio.Event()

        async def run(task_status: trio.TaskStatus[int]) -> None:
            try:
                await serve_chat(settings, shutdown, task_status=task_status)
            finally:
                stopped.set()

        port: int = await nursery.start(partial(run))
        servers.append(RunningServer(port, settings, shutdown, stopped))
        return servers[-1]

    yield start
    for running in servers:
        for client in running.clients:
            await client.aclose()


@pytest.fixture
async def server(start_server: StartServer) -> RunningServer:
    """A server on its defaults, but with the rate limit off."""
    return await start_server(rate_limit=0)
