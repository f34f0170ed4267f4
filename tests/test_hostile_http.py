"""Hostile HTTP against the default settings, over real sockets.

One regression test (or a few) per weakness an attacker found in the HTTP
front. Requests are written as raw bytes where the exact bytes matter, and
nothing a peer does may be logged as an error.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Iterator
from functools import partial

import processes
import pytest
import trio
import trio.lowlevel
import trio.testing
from conftest import RunningServer, StartServer
from wsclient import Rejected, http_request

from trio_chat.server.app import serve_connections
from trio_chat.server.http import MAX_HEAD_SIZE

if sys.platform != "win32":
    import resource

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 section 1.3
UPGRADE = (
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Version: 13",
    f"Sec-WebSocket-Key: {KEY}",
)


@pytest.fixture(autouse=True)
def no_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Whatever the test's peer did, the server logged no error."""
    caplog.set_level(logging.INFO, logger="trio_chat")
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, caplog.text


def request(method: str, target: str, port: int, *headers: str, body: bytes = b"") -> bytes:
    """The bytes of one HTTP/1.1 request with a Host header."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def exchange(port: int, data: bytes) -> bytes:
    """Send `data` on a new connection; everything received until the server closes."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(data)
        received = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                received += chunk
    return received


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names, Date dropped) and the bytes after the head."""
    head, separator, rest = raw.partition(b"\r\n\r\n")
    assert separator, raw
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    headers.pop("date", None)
    return int(status_line.split()[1]), headers, rest


# -- 1. HEAD never gets a body, whatever answers it ---------------------------


@pytest.mark.parametrize(
    ("target", "headers", "status"),
    [
        pytest.param("/", ("Connection: close",), 200, id="page"),
        pytest.param("/healthz", ("Connection: close",), 200, id="healthz"),
        pytest.param("/nope", ("Connection: close",), 404, id="not-found"),
        pytest.param("/ws", (), 426, id="ws-without-upgrade"),
        pytest.param("/ws", (*UPGRADE[:2], "Sec-WebSocket-Version: 8"), 426, id="ws-version-8"),
        pytest.param("/ws", UPGRADE[:3], 400, id="ws-without-key"),
        pytest.param("/ws", (*UPGRADE, "Origin: http://evil.example"), 403, id="ws-bad-origin"),
    ],
)
async def test_head_gets_the_status_and_headers_of_get_without_a_body(
    server: RunningServer, target: str, headers: tuple[str, ...], status: int
) -> None:
    get = parse(await exchange(server.port, request("GET", target, server.port, *headers)))
    head = parse(await exchange(server.port, request("HEAD", target, server.port, *headers)))
    assert get[0] == head[0] == status
    assert head[1] == get[1]
    assert int(head[1]["content-length"]) == len(get[2]) > 0
    assert head[2] == b""  # and the server closed: nothing else came


async def test_head_upgrade_is_answered_like_get_without_an_upgrade(
    server: RunningServer,
) -> None:
    """A HEAD cannot switch protocols: it gets the 426 of a GET that does not upgrade."""
    status, headers, rest = parse(
        await exchange(server.port, request("HEAD", "/ws", server.port, *UPGRADE))
    )
    assert status == 426
    assert int(headers["content-length"]) > 0
    assert rest == b""
    alice = await server.joined("alice")  # and upgrades still work
    await alice.say("hi")
    assert (await alice.next_of("message"))["text"] == "hi"


async def test_head_with_a_body_gets_400_without_a_body(server: RunningServer) -> None:
    data = request("HEAD", "/", server.port, "Content-Length: 5", body=b"hello")
    status, headers, rest = parse(await exchange(server.port, data))
    assert status == 400
    assert headers["connection"] == "close"
    assert rest == b""


# -- 2. a 426 says which upgrade it wants -------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param((), id="no-upgrade"),
        pytest.param((*UPGRADE[:2], "Sec-WebSocket-Version: 8", UPGRADE[3]), id="version-8"),
        pytest.param((*UPGRADE[:2], UPGRADE[3]), id="no-version"),
    ],
)
async def test_426_names_websocket_13_and_closes(
    server: RunningServer, headers: tuple[str, ...]
) -> None:
    raw = await exchange(server.port, request("GET", "/ws", server.port, *headers))
    status, response_headers, _ = parse(raw)
    assert status == 426
    assert response_headers["upgrade"] == "websocket"  # RFC 9110 15.5.22
    assert response_headers["sec-websocket-version"] == "13"  # RFC 6455 4.2.2
    connection = {token.strip().lower() for token in response_headers["connection"].split(",")}
    assert connection == {"upgrade", "close"}  # RFC 9110 7.8: Upgrade is a connection option


# -- 3. a request with both Content-Length and Transfer-Encoding --------------


async def test_content_length_and_transfer_encoding_get_400_and_close(
    server: RunningServer,
) -> None:
    """RFC 9112 6.3: the server must close after answering such a request, so
    that nothing a front proxy took for the body is read as a next request."""
    data = request(
        "GET",
        "/healthz",
        server.port,
        "Content-Length: 5",
        "Transfer-Encoding: chunked",
        body=b"0\r\n\r\n",
    )
    status, headers, rest = parse(await exchange(server.port, data))  # reads until closed
    assert status == 400
    assert headers["connection"] == "close"
    assert rest == b"bad request\n"


# -- 4. the request head limit is MAX_HEAD_SIZE, and answered with 431 --------


def head_of_size(port: int, size: int) -> bytes:
    """A GET /healthz head of exactly `size` bytes (the blank line included)."""
    start = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nX-Pad: "
    end = "\r\n\r\n"
    head = (start + "a" * (size - len(start) - len(end)) + end).encode()
    assert len(head) == size
    return head


async def test_a_head_of_max_head_size_is_served(server: RunningServer) -> None:
    raw = await exchange(server.port, head_of_size(server.port, MAX_HEAD_SIZE))
    assert parse(raw)[0] == 200


async def test_a_longer_head_gets_431_after_max_head_size_bytes(server: RunningServer) -> None:
    """Once MAX_HEAD_SIZE bytes hold no complete head, the answer is 431 at
    once (it used to take about twice that, and then the answer was 400).
    Only those bytes are sent: the server must not wait for more."""
    data = head_of_size(server.port, MAX_HEAD_SIZE + 1)[:MAX_HEAD_SIZE]
    status, headers, _ = parse(await exchange(server.port, data))
    assert status == 431
    assert headers["connection"] == "close"


# -- 5. DNS rebinding: the Host of an upgrade ---------------------------------


def refused_upgrades(metrics: bytes) -> float:
    """Refused upgrades, summed over their reasons."""
    total = None
    for line in metrics.decode().splitlines():
        if line.startswith("trio_chat_refused_upgrades_total{"):
            total = (total or 0.0) + float(line.split()[1])
    assert total is not None, metrics
    return total


async def test_a_rebound_name_cannot_upgrade_on_loopback(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A page on evil.example that rebinds its name to 127.0.0.1 sends a Host
    and an Origin that agree: only the Host gives it away."""
    evil = f"evil.example:{server.port}"
    with pytest.raises(Rejected) as refused:
        await server.client(host="evil.example", headers=[(b"Origin", f"http://{evil}".encode())])
    assert (refused.value.status, refused.value.body) == (403, b"host not allowed\n")
    (record,) = [r for r in caplog.records if "not allowed" in r.getMessage()]
    assert record.levelno == logging.INFO
    assert f"host {evil!r} not allowed" in record.getMessage()
    metrics = await http_request(server.port, "/metrics")
    assert refused_upgrades(metrics.body) == 1
    # The loopback names still upgrade, with their own origin.
    for name in ("localhost", "127.0.0.1", "chat.localhost"):
        origin = f"http://{name}:{server.port}".encode()
        await server.client(host=name, headers=[(b"Origin", origin)])
    # Plain HTTP is served whatever the Host: only upgrades are guarded.
    page = f"GET / HTTP/1.1\r\nHost: {evil}\r\nConnection: close\r\n\r\n".encode()
    assert parse(await exchange(server.port, page))[0] == 200


async def test_an_upgrade_without_host_is_refused_on_loopback(server: RunningServer) -> None:
    data = ("GET /ws HTTP/1.0\r\n" + "\r\n".join(UPGRADE) + "\r\n\r\n").encode()  # no Host
    status, _, body = parse(await exchange(server.port, data))
    assert (status, body) == (403, b"host not allowed\n")


async def test_allowed_host_setting(start_server: StartServer) -> None:
    server = await start_server(allowed_hosts=("chat.example", ".example.org"))
    for name in ("chat.example", "example.org", "a.example.org"):
        await server.client(host=name)
    for name in ("localhost", "127.0.0.1", "evil.example"):
        with pytest.raises(Rejected) as refused:
            await server.client(host=name)
        assert refused.value.status == 403
    anyone = await start_server(allowed_hosts=("*",))
    await anyone.client(host="evil.example")


# -- 6. out of file descriptors: a warning now and then, no traceback ---------


class ShortOfFiles(trio.abc.Listener[trio.abc.Stream]):
    """A listener whose accept() fails with EMFILE until `until`, then
    returns one stream (and then waits for ever)."""

    def __init__(self, until: float) -> None:
        self.until = until
        self.failures = 0
        self.accepted = False

    async def accept(self) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        if trio.current_time() < self.until:
            self.failures += 1
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        if self.accepted:
            await trio.sleep_forever()
        self.accepted = True
        return trio.testing.memory_stream_pair()[0]

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_emfile_is_a_rate_limited_warning_then_recovery(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    listener = ShortOfFiles(until=trio.current_time() + 25.0)
    handled: list[trio.abc.Stream] = []
    accepted = trio.Event()

    async def handler(stream: trio.abc.Stream) -> None:
        handled.append(stream)
        accepted.set()
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(serve_connections, handler_nursery=nursery), handler, [listener]
        )
        await accepted.wait()
        nursery.cancel_scope.cancel()

    records = [r for r in caplog.records if r.name == "trio_chat.server.app"]
    assert all(r.exc_info is None for r in records)  # no traceback
    levels = [r.levelno for r in records]
    assert levels == [logging.WARNING] * 3 + [logging.INFO]  # at 0 s, ~10 s, ~20 s; at 25 s
    first, second, third, recovered = (r.getMessage() for r in records)
    assert first == "cannot accept connections: EMFILE (Too many open files); retrying every 0.1s"
    for later in (second, third):
        assert later.startswith("still cannot accept connections (EMFILE (Too many open files)): ")
        count = int(later.split(": ")[1].split()[0])
        assert 95 <= count <= 101  # one attempt every 0.1 s for 10 s
    assert recovered.startswith("accepting connections again after 25.0s (")
    assert f"({listener.failures} accepts failed)" in recovered
    assert 245 <= listener.failures <= 252
    assert len(handled) == 1


LIMITED_SERVER = (
    "import resource, sys\n"
    "resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))\n"
    "from trio_chat.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def with_open_file_limit(monkeypatch: pytest.MonkeyPatch, soft: int, hard: int) -> None:
    """Make `serving` start the server with this RLIMIT_NOFILE."""
    code = LIMITED_SERVER.format(soft=soft, hard=hard)
    monkeypatch.setattr(processes, "TRIO_CHAT", [sys.executable, "-c", code])


async def wait_for(output: list[bytes], text: bytes) -> None:
    """Wait until the server's stderr holds `text`."""
    with trio.fail_after(10):
        # `serving` appends to `output` from a task of its own, which sets no event.
        while text not in b"".join(output):  # noqa: ASYNC110
            await trio.sleep(0.02)


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_NOFILE is POSIX")
async def test_a_real_emfile_is_ridden_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with_open_file_limit(monkeypatch, 40, 40)
    async with processes.serving("--handshake-timeout", "60s") as (_, port, output):
        # The limit cannot be raised: the server says so at start.
        await wait_for(output, b"WARNING trio_chat.server.app: --max-connections is 10000 but")
        clients = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(60)]
        await wait_for(output, b"WARNING trio_chat.server.app: cannot accept connections: EMFILE")
        for client in clients:
            await client.aclose()
        await wait_for(output, b"INFO trio_chat.server.app: accepting connections again")
        response = await http_request(port, "/healthz")
        assert response.status == 200
    text = b"".join(output).decode()
    assert "Traceback" not in text
    assert " ERROR " not in text


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_NOFILE is POSIX")
async def test_the_open_file_limit_is_raised_for_max_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hard = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 2048)
    with_open_file_limit(monkeypatch, 64, hard)
    async with processes.serving("--max-connections", "100") as (_, port, output):
        await wait_for(output, f"raised the open-file limit from 64 to {hard}".encode())
        assert (await http_request(port, "/healthz")).status == 200
    assert b"WARNING" not in b"".join(output)


# -- 7. the connection limit counts plain HTTP too ----------------------------


async def test_plain_http_connections_count_against_the_limit(
    start_server: StartServer,
) -> None:
    """Idle keep-alive connections used to be free: a peer could hold any
    number of them (each a file descriptor) without touching the limit."""
    server = await start_server(max_connections=2)
    port = server.port
    idle = []
    for _ in range(2):  # two keep-alive connections, answered once, then idle
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(request("GET", "/healthz", port))
        with trio.fail_after(5):
            assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 200 ")
        idle.append(stream)

    status, headers, body = parse(await exchange(port, request("GET", "/healthz", port)))
    assert (status, headers["connection"], body) == (503, "close", b"too many connections\n")
    status, _, body = parse(await exchange(port, request("HEAD", "/healthz", port)))
    assert (status, body) == (503, b"")
    with pytest.raises(Rejected) as refused:
        await server.client()
    assert refused.value.status == 503

    await idle[0].aclose()  # a slot frees up when a connection ends
    metrics = request("GET", "/metrics", port, "Connection: close")
    with trio.fail_after(5):
        for _ in range(100):
            response = await exchange(port, metrics)
            if not response.startswith(b"HTTP/1.1 503 "):
                break
            await trio.sleep(0.01)  # until the server has seen the close
    assert parse(response)[0] == 200
    assert refused_upgrades(parse(response)[2]) == 1  # the upgrade, not the plain requests
    await idle[1].aclose()


async def test_refusals_at_the_limit_are_one_warning_a_minute(
    start_server: StartServer,
    mock_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A flood of connections beyond the limit used to log one warning each."""
    mock_clock.autojump_threshold = 0.01
    server = await start_server(max_connections=1, handshake_timeout=3600.0)
    port = server.port
    held = await trio.open_tcp_stream("127.0.0.1", port)  # the one slot, kept busy
    await held.send_all(request("GET", "/healthz", port))
    assert (await held.receive_some(65536)).startswith(b"HTTP/1.1 200 ")

    def warnings() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == "trio_chat.server.app" and r.levelno == logging.WARNING
        ]

    for _ in range(20):
        assert parse(await exchange(port, request("GET", "/healthz", port)))[0] == 503
    assert len(warnings()) == 1
    assert "connection limit (1) reached" in warnings()[0]
    await trio.sleep(61)
    assert parse(await exchange(port, request("GET", "/healthz", port)))[0] == 503
    assert len(warnings()) == 2
    assert "19 more connections refused in 61s" in warnings()[1]
    await held.aclose()


@pytest.mark.parametrize(
    ("method", "headers", "status"),
    [
        ("POST", ("Content-Length: 10", "Expect: 100-continue"), 405),
        ("PUT", ("Transfer-Encoding: chunked", "Expect: 100-continue"), 405),
        ("POST", ("Content-Length: 10",), 405),  # the body never comes
        ("GET", ("Content-Length: 10", "Expect: 100-continue"), 400),
        ("HEAD", ("Content-Length: 10",), 400),
    ],
)
async def test_a_request_with_a_body_is_answered_without_waiting_for_it(
    start_server: StartServer,
    mock_clock: trio.testing.MockClock,
    method: str,
    headers: tuple[str, ...],
    status: int,
) -> None:
    """A client that sent `Expect: 100-continue` waits for the server before
    sending its body; the server used to wait for the body, so both waited
    until the handshake timeout cut the connection with no answer."""
    mock_clock.autojump_threshold = 0.01  # a wait for the body would jump to the timeout
    server = await start_server(handshake_timeout=3600.0)
    start = trio.current_time()
    raw = await exchange(server.port, request(method, "/ws", server.port, *headers))
    assert trio.current_time() - start < 1  # not the handshake timeout (MockClock)
    answer, answer_headers, _ = parse(raw)
    assert (answer, answer_headers["connection"]) == (status, "close")


@pytest.mark.parametrize("extra", [b"x" * 200_000, b"GET /healthz HTTP/1.1\r\n" * 2000])
async def test_an_answer_that_closes_is_not_lost_to_a_reset(
    start_server: StartServer, extra: bytes
) -> None:
    """The server answers at the head and closes while the client is still
    sending (a body, pipelined requests). Closing a socket with unread bytes
    makes the kernel send a reset, which used to destroy the answer before
    the client could read it."""
    server = await start_server()
    head = request("POST", "/ws", server.port, f"Content-Length: {len(extra)}")
    for _ in range(20):
        status, headers, _ = parse(await exchange(server.port, head + extra))
        assert (status, headers["connection"]) == (405, "close")
