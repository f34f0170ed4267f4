"""Clients written with other WebSocket libraries: `websockets` and trio-websocket."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from conftest import RunningServer
from trio_websocket import ConnectionClosed, open_websocket_url
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import ClientConnection, connect


def events_of(connection: ClientConnection) -> list[dict[str, Any]]:
    frame = connection.recv(timeout=10)
    assert isinstance(frame, str)
    return [json.loads(line) for line in frame.split("\n")]


def next_event(connection: ClientConnection, pending: list[dict[str, Any]]) -> dict[str, Any]:
    while not pending:
        pending.extend(events_of(connection))
    return pending.pop(0)


def websockets_session(port: int) -> list[str]:
    """A whole conversation with the `websockets` package's sync client."""
    url = f"ws://127.0.0.1:{port}/ws"
    log: list[str] = []
    with connect(url) as alice, connect(url) as bob:
        a: list[dict[str, Any]] = []
        b: list[dict[str, Any]] = []
        alice.send(json.dumps({"type": "say", "text": "too early"}))
        log.append(next_event(alice, a)["code"])
        alice.send(json.dumps({"type": "hello", "name": "alice", "room": "interop"}))
        welcome = next_event(alice, a)
        log.append(f"{welcome['type']} {welcome['members']}")
        next_event(alice, a)  # own join
        bob.send(json.dumps({"type": "hello", "name": "bob", "room": "interop", "since": 0}))
        log.append(f"recovered={next_event(bob, b)['recovered']}")
        log.append(next_event(bob, b)["name"])  # alice's join, replayed
        log.append(next_event(bob, b)["name"])  # bob's own join
        log.append(next_event(alice, a)["type"])  # bob's join, live
        bob.send(json.dumps({"type": "typing"}))
        log.append(next_event(alice, a)["type"])
        alice.send(json.dumps({"type": "say", "text": "héllo 🌍", "ref": "x1"}))
        for events in (a, b):
            message = next_event(alice if events is a else bob, events)
            log.append(f"{message['name']}: {message['text']} ({message['ref']})")
        bob.send(b"binary")
        with pytest.raises(ConnectionClosedError) as closed:
            next_event(bob, b)
        assert closed.value.rcvd is not None
        log.append(f"bob closed {closed.value.rcvd.code}")
        leave = next_event(alice, a)
        log.append(f"{leave['type']} {leave['name']} {leave['reason']}")
    return log


async def test_websockets_client_does_the_whole_protocol(server: RunningServer) -> None:
    log = await trio.to_thread.run_sync(websockets_session, server.port)
    assert log == [
        "not_joined",
        "welcome ['alice']",
        "recovered=True",
        "alice",
        "bob",
        "join",
        "typing",
        "alice: héllo 🌍 (x1)",
        "alice: héllo 🌍 (x1)",
        "bob closed 1003",
        "leave bob error",
    ]


async def test_trio_websocket_client_and_normal_close(server: RunningServer) -> None:
    witness = await server.joined("witness")
    url = f"ws://127.0.0.1:{server.port}/ws"
    async with open_websocket_url(url) as ws:
        await ws.send_message(json.dumps({"type": "hello", "name": "tw"}))
        frame = await ws.get_message()
        assert isinstance(frame, str)
        first = json.loads(frame.split("\n")[0])
        assert first["type"] == "welcome"
    # Leaving the block closed with 1000; the server saw a normal quit.
    leave = await witness.next_of("leave")
    assert (leave["name"], leave["reason"]) == ("tw", "quit")
    with pytest.raises(ConnectionClosed):
        await ws.get_message()
