"""Fuzzing the HTTP front over real sockets: requests built from risky parts.

Hypothesis combines methods, paths, HTTP versions and headers that have
broken HTTP servers before (HEAD on the upgrade path, both Content-Length and
Transfer-Encoding, bad WebSocket versions and keys, foreign Host and Origin,
bodies on GET), pipelines a few of them on one connection, and checks that
every answer is well-formed HTTP (or a clean close) and that nothing a peer
sends is logged at ERROR.
"""

from __future__ import annotations

import logging
import re

import pytest
import trio
from conftest import server_starter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

STATUS_LINE = re.compile(rb"HTTP/1\.1 [1-5][0-9][0-9] [^\r\n]*\r\n")

methods = st.sampled_from(["GET", "HEAD", "POST", "PUT", "OPTIONS", "DELETE", "BREW"])
paths = st.sampled_from(["/", "/ws", "/ws?x=1", "/healthz", "/metrics", "/app.js", "/nope", "*"])
versions = st.sampled_from(["HTTP/1.1", "HTTP/1.0"])
header_choices = st.sampled_from(
    [
        ("Upgrade", "websocket"),
        ("Upgrade", "h2c"),
        ("Connection", "Upgrade"),
        ("Connection", "keep-alive"),
        ("Connection", "close"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Key", "short"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Version", "8"),
        ("Origin", "http://evil.example"),
        ("Origin", "null"),
        ("Content-Length", "0"),
        ("Content-Length", "5"),
        ("Transfer-Encoding", "chunked"),
        ("Transfer-Encoding", "gzip"),
        ("Expect", "100-continue"),
    ]
)
hosts = st.sampled_from(["127.0.0.1", "localhost", "evil.example", None])
requests = st.tuples(
    methods, paths, versions, hosts, st.lists(header_choices, max_size=6), st.binary(max_size=8)
)


def encode(request: tuple[str, str, str, str | None, list[tuple[str, str]], bytes]) -> bytes:
    method, path, version, host, headers, body = request
    lines = [f"{method} {path} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_all(stream: trio.SocketStream) -> bytes:
    """Everything the server sends until it closes (or goes quiet for 5 s)."""
    received = b""
    with trio.move_on_after(5):
        while True:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                break  # reset after answering, with requests left unread: fine
            if not data:
                break
            received += data
    return received


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(batch=st.lists(requests, min_size=1, max_size=3))
async def test_any_request_gets_a_well_formed_answer(
    batch: list[tuple[str, str, str, str | None, list[tuple[str, str]], bytes]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.clear()
    async with server_starter() as start_server:
        server = await start_server(handshake_timeout=2.0)
        with trio.fail_after(20):
            async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
                await stream.send_all(b"".join(encode(request) for request in batch))
                answer = await read_all(stream)
    # Each answer starts with a status line (an upgrade's 101 may be followed
    # by WebSocket frames, which are not HTTP).
    assert not answer or STATUS_LINE.match(answer), answer[:200]
    for line in STATUS_LINE.findall(answer):
        assert line.startswith(b"HTTP/1.1 ")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
