"""Test clients that talk to a real server over real sockets.

`RawClient` is a WebSocket client on wsproto with full control over what it
sends and when it reads (binary frames, fragments, silence, no pongs), which
hostile-input and timing tests need; it splits frames into events with the
client core's `split_frame`, as every trio-chat client does. `http_request`
is a one-shot HTTP/1.1 request to the local server (the load generator's).
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from trio_chat.bench.metrics import HttpResponse, parse_metrics
from trio_chat.bench.metrics import http_request as _http_request
from trio_chat.client.events import split_frame
from trio_chat.client.url import ServerUrl

Event = dict[str, Any]


class Rejected(Exception):
    """The server refused the upgrade with an HTTP status."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body!r}")
        self.status = status
        self.body = body


class Closed(Exception):
    """The connection ended; `code` is None when no close frame came."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"closed with {code} {reason!r}")
        self.code = code
        self.reason = reason


@dataclass
class RawClient:
    stream: trio.SocketStream
    ws: WSConnection
    auto_pong: bool = True
    pings: int = 0
    frames: int = 0  # text frames received
    close_code: int | None = None
    close_reason: str = ""
    _pending: deque[Event] = field(default_factory=deque)
    _parts: list[str] = field(default_factory=list)
    _closed: bool = False

    @classmethod
    async def connect(
        cls,
        port: int,
        *,
        headers: list[tuple[bytes, bytes]] | None = None,
        host: str = "127.0.0.1",
        auto_pong: bool = True,
        receive_buffer: int | None = None,
    ) -> RawClient:
        """Connect and upgrade; `receive_buffer` shrinks the socket's SO_RCVBUF
        (set before connecting, so that the TCP window is small from the start)."""
        if receive_buffer is None:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        else:
            sock = trio.socket.socket()
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, receive_buffer)
            try:
                await sock.connect(("127.0.0.1", port))
            except BaseException:
                sock.close()
                raise
            stream = trio.SocketStream(sock)
        try:
            return await cls._handshake(stream, port, host, headers or [], auto_pong=auto_pong)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise

    @classmethod
    async def _handshake(
        cls,
        stream: trio.SocketStream,
        port: int,
        host: str,
        headers: list[tuple[bytes, bytes]],
        *,
        auto_pong: bool,
    ) -> RawClient:
        ws = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(
            ws.send(Request(host=f"{host}:{port}", target="/ws", extra_headers=headers))
        )
        status, body = 0, b""
        while True:
            data = await stream.receive_some(65536)
            if not data:
                raise Closed(None, "closed during handshake")
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    return cls(stream, ws, auto_pong=auto_pong)
                if isinstance(event, RejectConnection):
                    status = event.status_code
                    if not event.has_body:
                        raise Rejected(status, b"")
                elif isinstance(event, RejectData):
                    body += event.data
                    if event.body_finished:
                        raise Rejected(status, body)

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send_text(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(Message(data=text)))

    async def send_json(self, obj: object) -> None:
        await self.send_text(json.dumps(obj))

    async def hello(self, name: str, room: str = "lobby", **extra: object) -> Event:
        """Join and return the welcome (history events stay queued)."""
        await self.send_json({"type": "hello", "name": name, "room": room, **extra})
        welcome = await self.next_event()
        assert welcome["type"] == "welcome", welcome
        return welcome

    async def say(self, text: str, **extra: object) -> None:
        await self.send_json({"type": "say", "text": text, **extra})

    async def next_event(self) -> Event:
        """The next event from the server; raises Closed once it is over."""
        while not self._pending:
            await self._receive()
        return self._pending.popleft()

    async def next_of(self, *types: str) -> Event:
        """The next event of one of `types`, skipping others."""
        while True:
            event = await self.next_event()
            if event["type"] in types:
                return event

    async def events_until_closed(self) -> list[Event]:
        """Every event until the connection ends (see `close_code`)."""
        events: list[Event] = []
        with contextlib.suppress(Closed):
            while True:
                events.append(await self.next_event())
        return events

    async def closed(self) -> Closed:
        """Read until the connection ends; return how it ended."""
        try:
            while True:
                await self.next_event()
        except Closed as closed:
            return closed

    async def _receive(self) -> None:
        if self._closed or self.stream.socket.fileno() == -1:  # ended, or closed by us
            raise Closed(self.close_code, self.close_reason)
        try:
            data = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:
            data = b""
        if not data:
            self._closed = True
            raise Closed(self.close_code, self.close_reason)
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, TextMessage):
                self._parts.append(event.data)
                if event.message_finished:
                    self.frames += 1
                    frame, self._parts = "".join(self._parts), []
                    events, bad = split_frame(frame)
                    assert not bad, f"not a JSON object: {bad[0]!r}"
                    self._pending.extend(events)
            elif isinstance(event, BytesMessage):
                raise TypeError("the server sent a binary frame")
            elif isinstance(event, Ping):
                self.pings += 1
                if self.auto_pong:
                    await self.stream.send_all(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.close_code = event.code
                self.close_reason = event.reason or ""
                if self.ws.state is ConnectionState.REMOTE_CLOSING:
                    # Answer the close handshake like a polite client.
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await self.stream.send_all(self.ws.send(event.response()))
                if not self._pending:
                    self._closed = True
                    raise Closed(event.code, event.reason or "")

    async def aclose(self) -> None:
        """Drop the connection: no close frame (the server holds the place)."""
        self._closed = True
        await trio.aclose_forcefully(self.stream)

    async def goodbye(self, code: int = 1000) -> None:
        """Close with a close frame (a member leaving), then drop the socket."""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.stream.send_all(self.ws.send(CloseConnection(code)))
        await self.aclose()


async def http_request(
    port: int, target: str, *, method: str = "GET", headers: list[tuple[str, str]] | None = None
) -> HttpResponse:
    """Send one request to the local server and read the whole response."""
    return await _http_request(
        ServerUrl("127.0.0.1", port), target, method=method, headers=headers or ()
    )


def reset_on_close(stream: trio.SocketStream) -> None:
    """Make closing `stream` send a TCP reset instead of a FIN."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def metric(port: int, name: str) -> float:
    """The value of one unlabelled sample of the server's `/metrics` (e.g. a `_total`)."""
    body = (await http_request(port, "/metrics")).body.decode()
    values = parse_metrics(body)
    assert name in values, f"{name} not in /metrics"
    return values[name]
