"""The plain-HTTP side of the port: reading requests and writing responses.

A small h11 front, because trio-websocket answers a plain GET with 400 and
the protocol wants one port for the page, its assets, `/healthz`,
`/metrics` and the `/ws` upgrade. Keep-alive is supported; request bodies are
not (every route is GET or HEAD). All timeouts belong to the caller.

Whatever a peer sends, the connection answers it with a well-formed response
or closes: it remembers each request's method and never sends a body in
answer to HEAD (h11 would refuse it), whichever route or refusal answers;
a request head is at most MAX_HEAD_SIZE bytes, counted as it arrives; and a
request that is ambiguous about its own length is refused and the
connection closed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus

import h11
import trio

from .. import __version__
from ..core.errors import TrioChatError

MAX_HEAD_SIZE = 16 * 1024  # request line and headers, the blank line included
SERVER_HEADER = f"trio-chat/{__version__}"


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # the target without its query string, not percent-decoded
    headers: dict[str, str]  # lower-case names; repeated headers joined by ", "
    query: str = ""  # what follows the first "?" of the target, not decoded

    @property
    def head_only(self) -> bool:
        return self.method == "HEAD"


class BadRequest(TrioChatError):
    """The client sent something we do not serve; answer `status` and close.

    `status` is h11's error_status_hint where h11 found the fault: 400 for
    malformed HTTP, 431 for a head over MAX_HEAD_SIZE, 501 for a transfer
    coding other than chunked; 400 for the faults found here.
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status


class HttpConnection:
    """One TCP connection speaking HTTP/1.1 until it upgrades or closes."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.deadline = math.inf  # when the current request head must be complete
        # h11 refuses a buffer *longer* than this while an event is incomplete,
        # and next_request never lets the buffer grow past MAX_HEAD_SIZE: so a
        # head of MAX_HEAD_SIZE bytes passes and one byte more does not.
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_SIZE - 1)
        self._head_only = False  # the request being answered is a HEAD

    async def next_request(self) -> Request | None:
        """Read the next request head and its (empty) body.

        Returns None when the client closed the connection between requests.
        After it returns a request (or raises BadRequest once the head was
        read), `respond` and `refuse` answer that request.

        Raises:
            BadRequest: malformed HTTP, a head over MAX_HEAD_SIZE bytes
                (status 431), a body, or both Content-Length and
                Transfer-Encoding (RFC 9112 6.3: such a request may be
                smuggling a second one, and the connection must close after
                the answer; refusing closes it).
        """
        request: Request | None = None
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise BadRequest(str(exc), exc.error_status_hint) from None
            if event is h11.NEED_DATA:
                # h11 checks the buffer's size only after a read is appended:
                # read no more than the head may still take, so that the
                # buffer never outgrows the limit. (At NEED_DATA h11 has just
                # checked it, so there is room for at least one byte.)
                room = MAX_HEAD_SIZE - len(self._h11.trailing_data[0])
                data = await self.stream.receive_some(room)
                self._h11.receive_data(bytes(data))
            elif isinstance(event, h11.Request):
                request = _to_request(event)
                self._head_only = request.head_only
                if "content-length" in request.headers and "transfer-encoding" in request.headers:
                    raise BadRequest("both Content-Length and Transfer-Encoding")
                if _declares_body(request):
                    # Never wait for a body: a client that sent `Expect:
                    # 100-continue` waits for us first. Answer at once and
                    # close, the body unread (RFC 9110 10.1.1): a GET or HEAD
                    # with a body is refused, any other method gets its 405.
                    if request.method in ("GET", "HEAD"):
                        raise BadRequest("request bodies are not accepted")
                    return request
            elif isinstance(event, h11.EndOfMessage | h11.PAUSED) and request is not None:
                return request
            elif isinstance(event, h11.ConnectionClosed):
                return None
            elif isinstance(event, h11.Data):
                raise BadRequest("request bodies are not accepted")
            else:
                raise BadRequest(f"unexpected {type(event).__name__}")

    async def respond(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "text/plain; charset=utf-8",
        headers: Sequence[tuple[str, str]] = (),
        close: bool = False,
    ) -> None:
        """Send a complete response to the current request.

        The headers are the same whatever the method; the body is not sent
        when the request was a HEAD. With `close`, `Connection: close` is
        sent (the token is added to a `Connection` header among `headers`,
        if there is one) and `can_continue` will say no.
        """
        all_headers = [
            ("Server", SERVER_HEADER),
            ("Date", formatdate(usegmt=True)),
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("X-Content-Type-Options", "nosniff"),
        ]
        connection = "close" if close else None
        for name, value in headers:
            if connection is not None and name.lower() == "connection":
                connection = f"{value}, close"
            else:
                all_headers.append((name, value))
        if connection is not None:
            all_headers.append(("Connection", connection))
        data = self._h11.send(
            h11.Response(status_code=status, headers=all_headers, reason=HTTPStatus(status).phrase)
        )
        if not self._head_only and body:
            data += self._h11.send(h11.Data(data=body))
        data += self._h11.send(h11.EndOfMessage())
        await self.stream.send_all(data)

    @property
    def answered(self) -> bool:
        """Whether the current request's response went out (or began to)."""
        return self._h11.our_state in (h11.SEND_BODY, h11.DONE, h11.MUST_CLOSE)

    def can_continue(self) -> bool:
        """Whether another request may follow on this connection."""
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
            self._head_only = False
            return True
        return False

    def accept_websocket(self, headers: list[tuple[str, str]]) -> tuple[bytes, bytes]:
        """The `101 Switching Protocols` response, and any bytes the client sent
        after its head; this connection speaks no more HTTP.

        The response is formatted here rather than by h11: its headers are
        our own fixed values, and the caller writes it with the session's
        first write, so the upgrade costs no write of its own.
        """
        lines = [f"HTTP/1.1 101 Switching Protocols\r\nServer: {SERVER_HEADER}"]
        lines += [f"{name}: {value}" for name, value in headers]
        trailing, _closed = self._h11.trailing_data
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), trailing

    async def refuse(
        self, status: int, message: str, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        """Answer an error status with a short text body (not for HEAD) and close."""
        if self._h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return  # a response is already (partly) out
        await self.respond(status, (message + "\n").encode("utf-8"), headers=headers, close=True)


def _declares_body(request: Request) -> bool:
    length = request.headers.get("content-length", "0").strip()
    return "transfer-encoding" in request.headers or length != "0"


def _to_request(event: h11.Request) -> Request:
    headers: dict[str, str] = {}
    # raw_items: iterating `Headers` itself goes through Sequence.__getitem__,
    # which is slow enough to show in a profile of many connections.
    for name, value in event.headers.raw_items():
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    path, _, query = event.target.decode("latin-1").partition("?")
    return Request(
        method=event.method.decode("latin-1"),
        path=path,
        headers=headers,
        query=query,
    )
