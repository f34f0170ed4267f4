"""A yardstick, not a chat server: the same minimal relay, the idiomatic trio-websocket way.

    python benchmarks/trio_websocket_relay.py [--port N]

It speaks what `benchmarks/reference_relay.py` speaks (a `hello` answered by
a `welcome` whose `last_id` is the client's own `join`, then `join` and
`message` events with ids per room) and skips the same things (validation,
limits, history, ping deadlines), but is built as a careful trio-websocket
user would build it: `serve_websocket`; per client one nursery holding a
reader task and a writer task; a bounded memory channel (256 lines, trio-chat's
default send queue) that the writer drains with `await ws.send_message(line)`.
A broadcast is `send_nowait` of the encoded line into every member's channel;
a member whose channel is full is dropped (close 1013), as trio-chat drops it.

Every line is its own WebSocket message, so its own frame and its own write:
a plain relay on trio-websocket does not batch what is queued for a client,
where trio-chat sends a client's whole backlog as one frame.

`benchmarks/run.py --reference trio-websocket` measures it like the others.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    WebSocketServer,
    serve_websocket,
)

SEND_QUEUE_SIZE = 256  # trio-chat's default --send-queue-size
CLOSE_WAIT = 2.0  # seconds a dropped client gets to answer the close frame


@dataclass(eq=False)
class _Client:
    outbox: trio.MemorySendChannel[str]
    dropped: bool = False


_rooms: collections.defaultdict[str, set[_Client]] = collections.defaultdict(set)
_last_id: collections.Counter[str] = collections.Counter()


def _encode(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def _timestamp() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def _broadcast(members: set[_Client], line: str) -> None:
    """Queue `line` for every member without waiting; drop those whose queue is full."""
    full = []
    for member in members:
        try:
            member.outbox.send_nowait(line)
        except trio.WouldBlock:
            full.append(member)
    for member in full:
        members.discard(member)
        member.dropped = True  # its writer closes it with 1013 after the current write
        member.outbox.close()


async def _reader(ws: WebSocketConnection, room: str, name: str, scope: trio.CancelScope) -> None:
    members = _rooms[room]
    try:
        while True:
            command = json.loads(await ws.get_message())
            if command.get("type") != "say":
                continue
            _last_id[room] += 1
            event = {
                "type": "message",
                "id": _last_id[room],
                "room": room,
                "name": name,
                "text": command["text"],
                "ts": _timestamp(),
            }
            if "ref" in command:
                event["ref"] = command["ref"]
            _broadcast(members, _encode(event))
    except ConnectionClosed:
        pass
    finally:
        scope.cancel()  # the writer too


async def _writer(
    ws: WebSocketConnection,
    client: _Client,
    queued: trio.MemoryReceiveChannel[str],
    scope: trio.CancelScope,
) -> None:
    try:
        async for line in queued:
            if client.dropped:  # what was still queued is discarded
                break
            await ws.send_message(line)
        if client.dropped:
            with trio.move_on_after(CLOSE_WAIT):
                await ws.aclose(1013, "send queue full")
    except ConnectionClosed:
        pass
    finally:
        scope.cancel()  # the reader too


async def _client(ws: WebSocketConnection) -> None:
    hello = json.loads(await ws.get_message())
    name, room = str(hello["name"]), str(hello.get("room", "lobby"))
    outbox, queued = trio.open_memory_channel[str](SEND_QUEUE_SIZE)
    client = _Client(outbox)
    # No checkpoint from here to the join's broadcast: the welcome is queued
    # first, and no other event of the room can come between it and the join.
    _last_id[room] += 1
    join_id = _last_id[room]
    members = _rooms[room]
    welcome = {"type": "welcome", "room": room, "name": name, "members": [], "last_id": join_id}
    outbox.send_nowait(_encode(welcome))
    members.add(client)
    join = {"type": "join", "id": join_id, "room": room, "name": name, "ts": _timestamp()}
    _broadcast(members, _encode(join))
    try:
        async with outbox, queued, trio.open_nursery() as nursery:
            nursery.start_soon(_reader, ws, room, name, nursery.cancel_scope)
            nursery.start_soon(_writer, ws, client, queued, nursery.cancel_scope)
    finally:
        members.discard(client)


async def _handle(request: WebSocketRequest) -> None:
    # A yardstick: a client's end (closed, reset, malformed) is never news.
    with contextlib.suppress(Exception):
        await _client(await request.accept())


async def _serve(port: int) -> None:
    async with trio.open_nursery() as nursery:
        server: WebSocketServer = await nursery.start(
            serve_websocket, _handle, "127.0.0.1", port, None
        )
        print(
            f"trio-websocket relay serving on http://127.0.0.1:{server.port}/",
            file=sys.stderr,
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: any free one)")
    port = parser.parse_args().port
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(_serve, port)


if __name__ == "__main__":
    main()
