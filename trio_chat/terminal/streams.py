"""What the terminal client reads from: standard input in a thread, and the
server's frames split into events; and two small task helpers."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, BinaryIO, Protocol, TypeVar

import trio
from trio_websocket import WebSocketConnection

from ..client.events import split_frame

_T = TypeVar("_T")


class ByteSource(Protocol):
    """What the client reads its input from: a Trio `ReceiveStream` will do."""

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray: ...


class ThreadedFile:
    """A binary file read by a worker thread, for standard input.

    The thread is abandoned on cancellation (it stays blocked in `read` until
    the process exits), which is what lets Ctrl-C end a client waiting for
    terminal input. The file itself is never closed: it belongs to the caller.
    """

    def __init__(self, file: BinaryIO) -> None:
        self._fd = file.fileno()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await trio.to_thread.run_sync(
            os.read, self._fd, max_bytes or 65536, abandon_on_cancel=True
        )


class EventReader:
    """Splits the server's frames into events (one JSON object per line)."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws
        self._pending: deque[dict[str, Any]] = deque()

    async def next(self) -> dict[str, Any]:
        """The next event; raises ConnectionClosed once the connection is over."""
        while not self._pending:
            frame = await self._ws.get_message()
            if isinstance(frame, bytes):
                continue  # the protocol has none; nothing to show
            self._pending.extend(split_frame(frame)[0])
        return self._pending.popleft()


async def close_transport(ws: WebSocketConnection) -> None:
    """Close the TCP (or TLS) stream under a finished `ws`.

    trio-websocket 0.12 closes it only when *we* start the closing handshake:
    after the server's close frame, or a broken connection, it leaves the
    socket open until garbage collection (a ResourceWarning, and one file
    descriptor per reconnect meanwhile). It has no public handle on the
    stream, hence the private attribute, looked up defensively.
    """
    stream = getattr(ws, "_stream", None)
    if isinstance(stream, trio.abc.AsyncResource):
        await trio.aclose_forcefully(stream)


async def first_of(*tasks: Callable[[], Awaitable[_T]]) -> _T:
    """Run `tasks` side by side; the first to return wins, the rest are cancelled."""
    results: list[_T] = []
    async with trio.open_nursery() as nursery:
        for task in tasks:
            nursery.start_soon(_run_and_cancel, task, results, nursery.cancel_scope)
    return results[0]


async def _run_and_cancel(
    task: Callable[[], Awaitable[_T]], results: list[_T], scope: trio.CancelScope
) -> None:
    results.append(await task())
    scope.cancel()
