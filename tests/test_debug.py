"""Debug mode: `/debug/tasks`, `/debug/heap` and `/debug/profile`, who may
ask for them, and that they do not exist without `--debug`."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import pytest
import trio
from conftest import RunningServer, StartServer
from wsclient import http_request

TOKEN = "0123456789abcdef-debug"
PATHS = ["/debug/tasks", "/debug/heap", "/debug/profile?seconds=1", "/debug/nothing"]


async def get(
    server: RunningServer, target: str, headers: list[tuple[str, str]] | None = None
) -> tuple[int, bytes, str]:
    with trio.fail_after(30):  # a profile takes its seconds, in real time
        response = await http_request(server.port, target, headers=headers)
    return response.status, response.body, response.headers.get("content-type", "")


@pytest.mark.parametrize("path", PATHS)
async def test_without_debug_mode_there_is_nothing_there(
    start_server: StartServer, path: str
) -> None:
    server = await start_server()
    assert (await get(server, path))[:2] == (404, b"not found\n")
    bearer = [("Authorization", f"Bearer {TOKEN}")]
    assert (await get(server, path, bearer))[0] == 404


async def test_debug_mode_answers_loopback_clients_but_not_through_a_proxy(
    start_server: StartServer,
) -> None:
    server = await start_server(debug=True)
    status, body, content_type = await get(server, "/debug/tasks")
    assert status == 200
    assert content_type.startswith("text/plain")
    assert body.decode().split("\n", 1)[0].endswith(" tasks")
    for header in ("X-Forwarded-For", "Forwarded"):
        status, body, _ = await get(server, "/debug/tasks", [(header, "for=203.0.113.9")])
        assert status == 403
        assert b"loopback clients only" in body
    assert (await get(server, "/debug/nothing"))[0] == 404


async def test_the_token_is_required_when_set(start_server: StartServer) -> None:
    server = await start_server(debug=True, debug_token=TOKEN)
    status, body, _ = await get(server, "/debug/tasks")
    assert status == 401
    assert b"Authorization: Bearer TOKEN" in body
    status, body, _ = await get(server, "/debug/tasks", [("Authorization", "Basic eDp5")])
    assert status == 401
    for wrong in ("Bearer wrong", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer"):
        status, body, _ = await get(server, "/debug/tasks", [("Authorization", wrong)])
        assert (status, body) == (403, b"wrong debug token\n"), wrong
    status, _, _ = await get(server, "/debug/tasks", [("Authorization", f"Bearer {TOKEN}")])
    assert status == 200
    # With a token, forwarded requests are served too: the token is the check.
    status, _, _ = await get(
        server,
        "/debug/heap",
        [("Authorization", f"bearer {TOKEN}"), ("X-Forwarded-For", "203.0.113.9")],
    )
    assert status == 200


def find(node: dict[str, Any], wanted: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Every (task, its parent task) whose `serves` mentions `wanted`."""
    found = []
    for nursery in node["nurseries"]:
        for child in nursery["tasks"]:
            if wanted in (child["serves"] or ""):
                found.append((child, node))
            found += find(child, wanted)
    return found


async def test_tasks_show_each_session_under_its_nursery(start_server: StartServer) -> None:
    server = await start_server(debug=True)
    with trio.fail_after(10):
        await server.joined("alice", "ops")
        await server.joined("bob", "lobby")
    status, body, content_type = await get(server, "/debug/tasks?format=json")
    assert status == 200
    assert content_type == "application/json"
    tree = json.loads(body)
    assert tree["root"]["name"] == "<init>"
    (reader, _), (writer, parent) = find(tree["root"], "'alice' in 'ops'")
    # The connection's task reads (the session nursery's body); the writer is
    # the one task of the nursery that task opened.
    assert reader["name"].endswith("ChatServer.handle_connection")
    assert writer is parent["nurseries"][0]["tasks"][0]
    assert parent is reader
    assert writer["name"].startswith("session writer 127.0.0.1:")
    assert any(frame["function"] == "Session._read_frames" for frame in reader["waiting"])
    assert any(frame["function"] == "Outbox.wait" for frame in writer["waiting"])
    assert writer["serves"].startswith("client 127.0.0.1:")
    assert tree["tasks"] >= 8
    assert len(find(tree["root"], "'bob' in 'lobby'")) == 2

    status, text, _ = await get(server, "/debug/tasks")
    lines = text.decode().splitlines()
    assert lines[0].endswith(" tasks")
    (alice,) = [
        number
        for number, line in enumerate(lines)
        if "ChatServer.handle_connection  [" in line and "'alice' in 'ops'" in line
    ]
    indent = len(lines[alice]) - len(lines[alice].lstrip())
    assert "waiting in Session._read_frames (trio_chat/server/session.py:" in lines[alice + 1]
    writer_line = next(
        line for line in lines[alice + 1 :] if line.lstrip().startswith("task session writer")
    )
    assert "'alice' in 'ops'" in writer_line
    assert len(writer_line) - len(writer_line.lstrip()) == indent + 4  # under its nursery
    assert "running (this request)" in text.decode()


async def test_heap_lists_top_sites_and_their_growth(start_server: StartServer) -> None:
    server = await start_server(debug=True)
    assert tracemalloc.is_tracing()
    status, first, _ = await get(server, "/debug/heap")
    assert status == 200
    text = first.decode()
    assert "allocation sites, by size:" in text
    assert "none yet (this call is the baseline)" in text
    with trio.fail_after(10):
        for number in range(20):
            await server.joined(f"member{number}", "heap")
    status, body, _ = await get(server, "/debug/heap?format=json&limit=5")
    report = json.loads(body)
    assert len(report["top"]) == 5
    assert report["traced_bytes"] > 0
    assert report["growth"], "twenty members take memory"
    assert {"where", "size", "count", "size_diff", "count_diff"} <= set(report["growth"][0])
    for bad in ("limit=0", "limit=101", "limit=x", "format=xml"):
        assert (await get(server, f"/debug/heap?{bad}"))[0] == 400, bad
    await server.stop()
    assert not tracemalloc.is_tracing()  # stopped with the server that started it


async def test_profile_as_html_and_speedscope(start_server: StartServer) -> None:
    server = await start_server(debug=True)
    with trio.fail_after(10):
        alice = await server.joined("alice")
    status, body, content_type = await get(server, "/debug/profile?seconds=1")
    assert status == 200
    assert content_type.startswith("text/html")
    assert body.lstrip().startswith(b"<!DOCTYPE html>")
    status, body, content_type = await get(server, "/debug/profile?seconds=1&format=speedscope")
    assert status == 200
    assert content_type == "application/json"
    assert json.loads(body)["$schema"].startswith("https://www.speedscope.app/")
    # The event loop ran on meanwhile: the server still answers at once.
    await alice.say("still here")
    assert (await alice.next_of("message"))["text"] == "still here"


@pytest.mark.parametrize(
    "query", ["seconds=0", "seconds=61", "seconds=-1", "seconds=abc", "seconds=", "format=pdf"]
)
async def test_profile_refuses_bad_parameters(start_server: StartServer, query: str) -> None:
    server = await start_server(debug=True)
    target = (
        f"/debug/profile?{query}"
        if query.startswith("seconds")
        else (f"/debug/profile?seconds=1&{query}")
    )
    status, body, _ = await get(server, target)
    assert status == 400
    assert body.endswith(b"\n")


async def test_one_profile_at_a_time(start_server: StartServer) -> None:
    server = await start_server(debug=True)
    results: list[int] = []

    async def profile() -> None:
        results.append((await get(server, "/debug/profile?seconds=1&format=speedscope"))[0])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(profile)
        nursery.start_soon(profile)
    assert sorted(results) == [200, 409]
