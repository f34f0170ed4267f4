"""The deployment in `deploy/`: real nginx, with TLS, in front of `trio-chat serve`.

The test renders the committed site file (`deploy/nginx/trio-chat.conf`)
with its own ports, certificate and upstream, and starts Debian's nginx on
it as a plain foreground process (its own prefix and main configuration in
a temporary folder), then drives Chromium and raw `wss://` clients through
it. The certificate is made here by `trustme`; Chromium trusts exactly that
key (`--ignore-certificate-errors-spki-list`), so TLS is checked, not
switched off.

Everything runs on loopback, where nginx (connecting from 127.0.0.1) and a
browser look alike. So the client address is checked with a raw client that
binds 127.0.0.2 before connecting to nginx: with `--trusted-proxy
127.0.0.1`, what trio-chat logs must be 127.0.0.2 (what nginx appended to
`X-Forwarded-For`), neither nginx's 127.0.0.1 nor the address the client
forged in its own `X-Forwarded-For`. The browser's connections are logged
as the bare `127.0.0.1` of `X-Forwarded-For`, not the `address:port` of a
direct peer.

Without nginx or Chromium the tests are skipped with the reason, except
under CI, where that is an error (`.ci/run` installs both).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from system_programs import system_program

try:
    import trustme
    from playwright.sync_api import Browser, expect
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import ClientConnection, connect
    from websockets.typing import Origin
except ImportError:  # the `deploy` dependency group is not installed
    if os.environ.get("CI"):
        raise
    pytest.skip("trustme or playwright is not installed (nox -s deploy)", allow_module_level=True)

from browser_helpers import (
    TIMEOUT_MS,
    ErrorLog,
    Pages,
    ServerProcess,
    chromium,
    connection,
    join,
    log,
    message_texts,
    say,
)
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from trio_chat.client.events import split_frame

SITE = Path(__file__).resolve().parent.parent / "deploy" / "nginx" / "trio-chat.conf"
WAIT = 10.0  # seconds for any condition to come true
expect.set_options(timeout=TIMEOUT_MS)


def nginx_binary() -> str:
    return system_program("nginx", "nginx", also_at=("/usr/sbin/nginx",))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll `condition` until it holds, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what}")
        time.sleep(0.02)


# -- the committed site file, rendered for the test ---------------------------


def render_site(
    text: str, *, https_port: int, http_port: int, upstream_port: int, cert: Path, key: Path
) -> str:
    """The site file with the test's ports, certificate and one upstream.

    Each replacement must find what it replaces, so that the test fails
    loudly, rather than testing something else, when the file changes.
    """

    def sub(pattern: str, replacement: str | Callable[[re.Match[str]], str], text: str) -> str:
        result, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        assert count, f"the site file no longer has {pattern!r}"
        return result

    servers = iter(range(1000))
    text = sub(
        r"^\s*server 127\.0\.0\.1:\d+;\n",
        lambda m: f"    server 127.0.0.1:{upstream_port};\n" if next(servers) == 0 else "",
        text,
    )
    text = sub(r"^\s*listen \[::\]:\d+( ssl)?;\n", "", text)  # loopback IPv4 only here
    text = sub(r"listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;", text)
    text = sub(r"listen 80;", f"listen 127.0.0.1:{http_port};", text)
    text = sub(r"ssl_certificate\s+/\S+;", f"ssl_certificate {cert};", text)
    return sub(r"ssl_certificate_key\s+/\S+;", f"ssl_certificate_key {key};", text)


MAIN_CONF = """\
{user}worker_processes 1;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/site.conf;
}}
"""


class PortTaken(Exception):
    """Another process took a port between `free_port` and nginx binding it."""


@dataclass
class Nginx:
    """Debian's nginx in the foreground, in a prefix of its own."""

    prefix: Path
    site: str  # the rendered site file
    https_port: int
    http_port: int
    process: subprocess.Popen[bytes] | None = None

    def command(self, *extra: str) -> list[str]:
        return [
            nginx_binary(),
            *("-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf")),
            *("-e", str(self.prefix / "error.log")),
            *("-g", f"daemon off; pid {self.prefix}/nginx.pid;"),
            *extra,
        ]

    def start(self) -> None:
        self.prefix.mkdir(parents=True, exist_ok=True)
        # As root (CI), nginx's workers would switch to an unprivileged
        # user that cannot enter the test's private temporary folder; as
        # anyone else the directive is ignored with a warning, so only then.
        user = "user root;\n" if os.geteuid() == 0 else ""
        (self.prefix / "nginx.conf").write_text(MAIN_CONF.format(user=user, prefix=self.prefix))
        (self.prefix / "site.conf").write_text(self.site)
        check = subprocess.run(
            self.command("-t"), capture_output=True, text=True, timeout=30, check=False
        )
        assert check.returncode == 0, check.stderr
        self.process = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

        def listening() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                return True  # reported below
            try:
                socket.create_connection(("127.0.0.1", self.https_port), timeout=1).close()
            except OSError:
                return False
            return True

        wait_for(listening, "nginx listens")
        if self.process.poll() is not None:
            self.stop()
            if "Address already in use" in self.errors():
                raise PortTaken(self.errors())
            raise AssertionError(f"nginx stopped at start:\n{self.errors()}")

    def errors(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()  # fast shutdown: upgraded connections do not hold it
        try:
            self.process.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        assert self.process.stderr is not None
        self.process.stderr.close()
        self.process = None


# -- fixtures ------------------------------------------------------------------


@dataclass(frozen=True)
class Tls:
    ca: trustme.CA
    cert: Path
    key: Path
    spki: str  # base64 SHA-256 of the server key, as Chromium's flag takes it

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    issued = ca.issue_cert("localhost", "127.0.0.1")
    cert, key = folder / "fullchain.pem", folder / "privkey.pem"
    issued.private_key_pem.write_to_path(str(key))
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    leaf = x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes())
    spki = leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Tls(ca, cert, key, base64.b64encode(hashlib.sha256(spki).digest()).decode())


@pytest.fixture(scope="module")
def browser(tls: Tls) -> Iterator[Browser]:
    with chromium(f"--ignore-certificate-errors-spki-list={tls.spki}") as launched:
        yield launched


def stop_draining(server: ServerProcess) -> int | None:
    """Stop a server that has a drain delay: SIGTERM, and once it drains
    (the signals must not arrive together: Trio merges a repeated signal
    that is still pending), a second SIGTERM to end the delay."""
    server.send_signal(signal.SIGTERM)
    wait_for(lambda: any("draining" in line for line in server.output), "the drain began")
    server.send_signal(signal.SIGTERM)
    return server.wait()


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[ServerProcess]:
    """trio-chat as the systemd unit runs it behind nginx: on loopback,
    trusting nginx's X-Forwarded-For, for the one Host browsers use."""
    server = ServerProcess(
        *("--trusted-proxy", "127.0.0.1", "--allowed-host", "localhost"),
        *("--drain-delay", "1h", "--log-level", "debug", "--rate-limit", "0"),
        db=tmp_path / "chat.db",
    )
    server.start()
    yield server
    if server.running:
        assert stop_draining(server) == 0, "\n".join(server.output)


@pytest.fixture
def proxy(tmp_path: Path, tls: Tls, chat: ServerProcess) -> Iterator[Nginx]:
    for attempt in range(3):  # the ports are free when chosen, not reserved
        nginx = Nginx(tmp_path / f"nginx-{attempt}", "", free_port(), free_port())
        nginx.site = render_site(
            SITE.read_text(),
            https_port=nginx.https_port,
            http_port=nginx.http_port,
            upstream_port=chat.port,
            cert=tls.cert,
            key=tls.key,
        )
        try:
            nginx.start()
        except PortTaken:
            continue
        break
    else:
        raise AssertionError("no free ports for nginx in 3 attempts")
    yield nginx
    nginx.stop()


@pytest.fixture
def errors() -> Iterator[ErrorLog]:
    recorded = ErrorLog()
    yield recorded
    recorded.check()


@pytest.fixture
def pages(browser: Browser, errors: ErrorLog, proxy: Nginx) -> Iterator[Pages]:
    opened = Pages(browser, errors)  # closed before nginx and the server stop
    yield opened
    opened.close()


# -- clients -------------------------------------------------------------------


def https_get(tls: Tls, port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    client = http.client.HTTPSConnection(
        "localhost", port, context=tls.client_context(), timeout=WAIT
    )
    try:
        client.request("GET", path)
        response = client.getresponse()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, headers, response.read()
    finally:
        client.close()


def raw_client(
    tls: Tls,
    port: int,
    *,
    source: str = "127.0.0.2",
    host: str = "localhost",
    origin: str | None = None,
    forwarded_for: str | None = None,
) -> ClientConnection:
    """A `wss://` client connected to nginx from `source` (any 127.x address
    is this machine's), sending `Host: {host}:{port}` and `Origin`."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT, source_address=(source, 0))
    headers = {} if forwarded_for is None else {"X-Forwarded-For": forwarded_for}
    try:
        return connect(
            f"wss://{host}:{port}/ws",
            sock=sock,
            ssl=tls.client_context(),
            server_hostname="localhost",
            origin=None if origin is None else Origin(origin),
            additional_headers=headers,
            open_timeout=WAIT,
        )
    except BaseException:
        sock.close()
        raise


def events(client: ClientConnection) -> Iterator[dict[str, Any]]:
    """The events `client` receives, each waited for at most WAIT seconds."""
    while True:
        frame = client.recv(timeout=WAIT)
        assert isinstance(frame, str)
        parsed, bad = split_frame(frame)
        assert not bad, bad
        yield from parsed


def hello(client: ClientConnection, name: str, room: str) -> Iterator[dict[str, Any]]:
    client.send(json.dumps({"type": "hello", "name": name, "room": room}))
    received = events(client)
    welcome = next(received)
    assert welcome["type"] == "welcome", welcome
    return received


def logged(server: ServerProcess, pattern: str) -> Callable[[], bool]:
    return lambda: any(re.search(pattern, line) for line in server.output)


# -- the tests -----------------------------------------------------------------


def test_chromium_chats_over_wss_through_nginx(
    pages: Pages, proxy: Nginx, chat: ServerProcess
) -> None:
    url = f"https://localhost:{proxy.https_port}/#ops"
    sockets: list[str] = []
    alice = pages.open(url, who="alice")
    alice.on("websocket", lambda ws: sockets.append(ws.url))
    assert alice.evaluate("location.protocol") == "https:"
    join(alice, "alice")
    bob = pages.open(url, who="bob")
    join(bob, "bob")
    expect(log(alice).locator(".system").last).to_have_text(re.compile(r"^bob joined"))
    say(alice, "over TLS, through nginx")
    expect(message_texts(bob).last).to_have_text("over TLS, through nginx")
    say(bob, "and back")
    expect(message_texts(alice).last).to_have_text("and back")
    assert sockets
    assert set(sockets) == {f"wss://localhost:{proxy.https_port}/ws"}
    # Logged by the address nginx put in X-Forwarded-For: no port, unlike a
    # direct peer's `127.0.0.1:PORT` (see the module docstring).
    wait_for(logged(chat, r": 127\.0\.0\.1 'bob'@ops joined"), "bob's join logged")
    assert "127.0.0.1:" not in "\n".join(line for line in chat.output if "'bob'@ops" in line)


def test_origin_host_and_client_address_through_nginx(
    tls: Tls, proxy: Nginx, chat: ServerProcess
) -> None:
    port = proxy.https_port
    # A page of another site: refused as the server refuses it directly.
    with pytest.raises(InvalidStatus) as refused:
        raw_client(tls, port, origin="https://evil.example", forwarded_for="203.0.113.9")
    assert refused.value.response.status_code == 403
    assert refused.value.response.body == b"origin not allowed\n"
    # Logged under the address nginx saw, not its own nor the forged one.
    wait_for(logged(chat, r"127\.0\.0\.2: origin 'https://evil\.example' not allowed"), "logged")
    assert not any("203.0.113.9" in line for line in chat.output)

    # A page whose name was rebound to this server (DNS rebinding): Host
    # and Origin agree, but the Host is not ours.
    rebound = f"https://evil.example:{port}"
    with pytest.raises(InvalidStatus) as refused:
        raw_client(tls, port, host="evil.example", origin=rebound)
    assert refused.value.response.status_code == 403
    assert refused.value.response.body == b"host not allowed\n"

    # The page's own origin passes: nginx hands on Host with its port.
    same = raw_client(tls, port, origin=f"https://localhost:{port}", forwarded_for="203.0.113.9")
    with same:
        received = hello(same, "probe", "ops")
        assert next(received)["name"] == "probe"  # the replay ends with our join
    wait_for(logged(chat, r"127\.0\.0\.2 'probe'@ops joined"), "the join logged")
    assert not any("203.0.113.9" in line for line in chat.output)

    # Plain HTTP is sent to HTTPS; the debug pages are not for the internet.
    plain = http.client.HTTPConnection("127.0.0.1", proxy.http_port, timeout=WAIT)
    try:
        plain.request("GET", "/#lobby")
        response = plain.getresponse()
        assert response.status == 301
        assert (response.getheader("location") or "").startswith("https://")
    finally:
        plain.close()
    assert https_get(tls, port, "/debug/tasks")[0] == 404
    assert https_get(tls, port, "/healthz")[0] == 200


def test_sigterm_fails_readyz_through_nginx_before_any_client_is_closed(
    pages: Pages, errors: ErrorLog, tls: Tls, proxy: Nginx, chat: ServerProcess
) -> None:
    port = proxy.https_port
    alice = pages.open(f"https://localhost:{port}/#ops", who="alice")
    join(alice, "alice")
    watcher = raw_client(tls, port, origin=f"https://localhost:{port}")
    with watcher:
        received = hello(watcher, "watcher", "ops")
        status, _, body = https_get(tls, port, "/readyz")
        assert (status, json.loads(body)) == (200, {"status": "ready"})

        chat.send_signal(signal.SIGTERM)

        def unready() -> bool:
            return https_get(tls, port, "/readyz")[0] == 503

        wait_for(unready, "/readyz answers 503 through nginx")
        status, _, body = https_get(tls, port, "/readyz")
        assert status == 503
        assert json.loads(body) == {"status": "unready", "reason": "shutting down"}
        # Nobody was closed: both still chat, through nginx.
        expect(connection(alice)).to_have_text("Connected")
        say(alice, "still served while draining")
        assert any(
            event.get("text") == "still served while draining"
            for event in _until(received, "message")
        )

        # Once the browser is closed and reconnects, nginx answers 502
        # while no server is up, and Chromium logs that.
        errors.allowed.append(re.compile(r"^WebSocket connection to 'wss://localhost:\d+/ws'"))
        errors.allowed.append(re.compile(r"^Failed to load resource: .*502"))
        chat.send_signal(signal.SIGTERM)  # a second signal ends the delay
        with pytest.raises(ConnectionClosed) as closed:
            for _ in received:
                pass
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1001
        expect(connection(alice)).not_to_have_text("Connected")
        assert chat.wait() == 0, "\n".join(chat.output)
    output = "\n".join(chat.output)
    assert output.index("draining: /readyz answers 503") < output.index("shutting down: closing")


def _until(received: Iterator[dict[str, Any]], kind: str) -> Iterator[dict[str, Any]]:
    """Events up to and including the first of type `kind`."""
    for event in received:
        yield event
        if event["type"] == kind:
            return
