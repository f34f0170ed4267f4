"""The plain-HTTP side of the port and the upgrade checks, over real sockets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
import trio.testing
from conftest import RunningServer, StartServer
from wsclient import Rejected, http_request

from trio_chat.server.http import MAX_HEAD_SIZE, BadRequest, HttpConnection


async def test_index_page_with_security_headers(server: RunningServer) -> None:
    response = await http_request(server.port, "/")
    assert response.status == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert b'role="log"' in response.body


@pytest.mark.parametrize(
    ("path", "content_type"),
    [("/app.js", "text/javascript; charset=utf-8"), ("/style.css", "text/css; charset=utf-8")],
)
async def test_assets_with_their_content_type(
    server: RunningServer, path: str, content_type: str
) -> None:
    response = await http_request(server.port, path)
    assert response.status == 200
    assert response.headers["content-type"] == content_type
    assert response.body


async def test_head_sends_headers_only(server: RunningServer) -> None:
    get = await http_request(server.port, "/")
    head = await http_request(server.port, "/", method="HEAD")
    assert head.status == 200
    assert head.body == b""
    assert head.headers["content-length"] == str(len(get.body))


async def test_healthz_counts_connections_and_rooms(server: RunningServer) -> None:
    alice = await server.joined("alice", "one")
    bob = await server.joined("bob", "two")
    response = await http_request(server.port, "/healthz")
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert json.loads(response.body) == {"status": "ok", "connections": 2, "rooms": 2}
    await alice.aclose()
    await bob.aclose()


async def test_readyz_says_ready_while_history_is_written(
    start_server: StartServer, tmp_path: Path
) -> None:
    for db in (":memory:", str(tmp_path / "chat.db")):
        server = await start_server(db=db)
        response = await http_request(server.port, "/readyz")
        assert response.status == 200
        assert response.headers["content-type"] == "application/json"
        assert response.headers["cache-control"] == "no-store"
        assert json.loads(response.body) == {"status": "ready"}
        await server.stop()


async def test_metrics_in_prometheus_format(server: RunningServer) -> None:
    alice = await server.joined("alice")
    await alice.say("hi")
    await alice.next_of("message")
    response = await http_request(server.port, "/metrics")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = response.body.decode().splitlines()
    assert "trio_chat_connections 1.0" in lines
    assert "trio_chat_members 1.0" in lines
    assert "trio_chat_events_total 2.0" in lines  # alice's join and message
    assert any(line.startswith("process_resident_memory_bytes ") for line in lines)


@pytest.mark.parametrize(
    "path", ["/nope", "/../pyproject.toml", "/%2e%2e/etc/passwd", "/..%2fetc%2fpasswd", "//etc"]
)
async def test_unknown_paths_are_404_never_outside_web(server: RunningServer, path: str) -> None:
    response = await http_request(server.port, path)
    assert response.status == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
async def test_other_methods_are_405(server: RunningServer, method: str) -> None:
    response = await http_request(server.port, "/", method=method)
    assert response.status == 405
    assert response.headers["allow"] == "GET, HEAD"


async def test_plain_get_on_ws_asks_for_an_upgrade(server: RunningServer) -> None:
    response = await http_request(server.port, "/ws")
    assert response.status == 426
    assert response.headers["upgrade"] == "websocket"


async def test_other_methods_on_ws_are_405_with_allow(server: RunningServer) -> None:
    response = await http_request(server.port, "/ws", method="POST")
    assert response.status == 405
    assert response.headers["allow"] == "GET, HEAD"


async def test_garbage_gets_400_and_the_server_carries_on(server: RunningServer) -> None:
    async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
        await stream.send_all(b"\x16\x03\x01 this is not HTTP\r\n\r\n")
        reply = await stream.receive_some(1024)
        assert reply.startswith(b"HTTP/1.1 400 ")
    assert (await http_request(server.port, "/healthz")).status == 200


async def test_keep_alive_serves_several_requests(server: RunningServer) -> None:
    request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode()
    async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
        await stream.send_all(request + request)
        received = b""
        with trio.fail_after(5):
            while received.count(b"HTTP/1.1 200 OK") < 2:
                received += await stream.receive_some(4096)


# -- the upgrade: origin policy and connection limit -------------------------


async def test_foreign_origin_is_refused_with_403(server: RunningServer) -> None:
    with pytest.raises(Rejected) as refused:
        await server.client(headers=[(b"Origin", b"http://evil.example")])
    assert refused.value.status == 403


async def test_same_origin_and_no_origin_are_allowed(server: RunningServer) -> None:
    same = await server.client(headers=[(b"Origin", f"http://127.0.0.1:{server.port}".encode())])
    bare = await server.client()
    await same.hello("same")
    await bare.hello("bare")


async def test_same_host_other_port_is_refused(server: RunningServer) -> None:
    with pytest.raises(Rejected) as refused:
        await server.client(headers=[(b"Origin", f"http://127.0.0.1:{server.port + 1}".encode())])
    assert refused.value.status == 403


async def test_allowed_origins_setting(start_server: StartServer) -> None:
    server = await start_server(allowed_origins=("https://chat.example",))
    await server.client(headers=[(b"Origin", b"https://chat.example")])
    with pytest.raises(Rejected):
        await server.client(headers=[(b"Origin", b"https://other.example")])
    anyone = await start_server(allowed_origins=("*",))
    await anyone.client(headers=[(b"Origin", b"https://other.example")])


async def test_connection_limit_gives_503(start_server: StartServer) -> None:
    server = await start_server(max_connections=2)
    first = await server.client()
    await server.client()
    with pytest.raises(Rejected) as refused:
        await server.client()
    assert refused.value.status == 503
    # A slot frees up when a client leaves.
    await first.aclose()
    with trio.fail_after(5):
        while True:
            try:
                await server.client()
            except Rejected:
                await trio.sleep(0.01)
            else:
                break


# -- the handshake timeout covers the HTTP head -------------------------------


async def test_incomplete_request_head_is_cut_at_the_handshake_timeout(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server(handshake_timeout=10.0)
    async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
        await stream.send_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")  # never finished
        start = trio.current_time()
        assert await stream.receive_some(1024) == b""
    assert trio.current_time() - start == pytest.approx(10.0, abs=0.01)


# -- the HTTP connection alone, over a memory stream --------------------------


def padded_head(size: int, method: str = "GET") -> bytes:
    """A complete request head of exactly `size` bytes."""
    start, end = f"{method} / HTTP/1.1\r\nHost: x\r\nX-Pad: ".encode(), b"\r\n\r\n"
    return start + b"a" * (size - len(start) - len(end)) + end


async def test_a_head_of_exactly_max_head_size_is_read() -> None:
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(padded_head(MAX_HEAD_SIZE))
    request = await HttpConnection(server).next_request()
    assert request is not None
    assert request.headers["x-pad"].startswith("aaa")


@pytest.mark.parametrize("sent", [MAX_HEAD_SIZE + 1, 40 * 1024])
async def test_a_longer_head_is_431_after_reading_max_head_size_bytes(sent: int) -> None:
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(padded_head(MAX_HEAD_SIZE + 1)[:sent].ljust(sent, b"a"))
    with pytest.raises(BadRequest) as info:
        await HttpConnection(server).next_request()
    assert info.value.status == 431
    left = await server.receive_some()  # what the connection did not read
    assert len(left) == sent - MAX_HEAD_SIZE


async def test_no_body_goes_out_for_head_whatever_answers() -> None:
    client, server = trio.testing.memory_stream_pair()
    http = HttpConnection(server)
    await client.send_all(b"HEAD /ws HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await http.next_request() is not None
    await http.refuse(426, "upgrade required", [("Upgrade", "websocket")])
    sent = await client.receive_some()
    assert sent.endswith(b"\r\n\r\n")
    assert b"\r\nContent-Length: 17\r\n" in sent
    assert b"\r\nConnection: close\r\n" in sent
    assert not http.can_continue()
