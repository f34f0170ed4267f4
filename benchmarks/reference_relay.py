"""A yardstick, not a chat server: the smallest relay `trio-chat bench` can measure.

    python benchmarks/reference_relay.py [--port N]

It speaks only what the load generator needs of the protocol (a `hello`
answered by a `welcome` whose `last_id` is the client's own `join`, then
`join` and `message` events with ids per room) on the `websockets` library's
asyncio server, and skips everything trio-chat does beyond that: no
validation, limits, history, ping deadlines or slow-client policy. Every
delivery is `websockets.broadcast`, one write per client without a task
switch, the design the speed issue's websockets column measured.

Run on the same machine, with the same generator and pinning as trio-chat,
it says how much of a number is the machine and how much is the server:

    taskset -c 0 python benchmarks/reference_relay.py --port 8765 &
    taskset -c 1 trio-chat bench ws://127.0.0.1:8765/ws --server-pid $! ...

`benchmarks/run.py --reference` does exactly that. Needs `websockets`
(`pip install websockets`; the test dependency group has it).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import sys
import time
from typing import Any

from websockets.asyncio.server import ServerConnection, broadcast, serve

_rooms: collections.defaultdict[str, set[ServerConnection]] = collections.defaultdict(set)
_last_id: collections.Counter[str] = collections.Counter()


def _encode(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def _timestamp() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


async def _client(ws: ServerConnection) -> None:
    hello = json.loads(await ws.recv())
    name, room = str(hello["name"]), str(hello.get("room", "lobby"))
    _last_id[room] += 1
    join_id = _last_id[room]
    members = _rooms[room]
    welcome = {"type": "welcome", "room": room, "name": name, "members": [], "last_id": join_id}
    await ws.send(_encode(welcome))
    members.add(ws)
    join = {"type": "join", "id": join_id, "room": room, "name": name, "ts": _timestamp()}
    broadcast(members, _encode(join))
    try:
        async for frame in ws:
            command = json.loads(frame)
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
            broadcast(members, _encode(event))
    finally:
        members.discard(ws)


async def _handle(ws: ServerConnection) -> None:
    # A yardstick: a client's end (closed, reset, malformed) is never news.
    with contextlib.suppress(Exception):
        await _client(ws)


async def _serve(port: int) -> None:
    async with serve(_handle, "127.0.0.1", port, compression=None, ping_interval=None) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        print(f"reference relay serving on http://127.0.0.1:{bound}/", file=sys.stderr, flush=True)
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: any free one)")
    port = parser.parse_args().port
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(port))


if __name__ == "__main__":
    main()
