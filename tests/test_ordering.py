"""Several clients sending as fast as they can: one identical, gap-free order."""

from __future__ import annotations

from typing import Any

import trio
from conftest import StartServer
from wsclient import RawClient

CLIENTS = 6
MESSAGES = 300


async def test_fast_senders_all_see_the_same_gap_free_sequence(
    start_server: StartServer,
) -> None:
    # A queue large enough that no client is dropped as slow: this test is
    # about order, and the writer batches what a reader falls behind on.
    server = await start_server(rate_limit=0, send_queue_size=CLIENTS * MESSAGES * 2)
    clients = [await server.joined(f"c{n}") for n in range(CLIENTS)]
    received: dict[str, list[dict[str, Any]]] = {}

    async def read_all(client: RawClient, name: str) -> None:
        events: list[dict[str, Any]] = []
        while sum(e["type"] == "message" for e in events) < CLIENTS * MESSAGES:
            events.append(await client.next_event())
        received[name] = events

    async def send_all(client: RawClient, name: str) -> None:
        for n in range(MESSAGES):
            await client.say(f"{name}:{n}")

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for n, client in enumerate(clients):
                nursery.start_soon(read_all, client, f"c{n}")
                nursery.start_soon(send_all, client, f"c{n}")

    # Members that joined later missed the earlier joins; compare from the
    # first message on, which every member received live.
    streams = {
        name: [e for e in events if e["type"] == "message"] for name, events in received.items()
    }
    reference = streams["c0"]
    ids = [e["id"] for e in reference]
    assert ids == list(range(ids[0], ids[0] + CLIENTS * MESSAGES))
    for name, stream in streams.items():
        assert stream == reference, f"{name} saw another sequence"
    for n in range(CLIENTS):
        own = [e["text"] for e in reference if e["name"] == f"c{n}"]
        assert own == [f"c{n}:{i}" for i in range(MESSAGES)]
    # Bursts were batched: far fewer frames than events.
    assert all(client.frames < CLIENTS * MESSAGES for client in clients)
