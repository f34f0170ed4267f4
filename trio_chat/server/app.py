"""The server: one port for the web client, health, metrics and `/ws`.

`serve_chat` binds the listener, opens the hub and serves connections until
the `shutdown` event is set. Then `/readyz` answers 503 at once, and for
`--drain-delay` seconds the server goes on serving as before, new
connections included, so that a load balancer that polls `/readyz` stops
sending clients before any is closed. Then, hypercorn-style: stop accepting,
close every WebSocket client with 1001 (reason `shutdown`), give them
`WRITE_WAIT` to finish, and return.

`serve_connections` accepts them, and rides out running short of file
descriptors (or kernel memory): it retries, with a warning now and then,
rather than an error with a traceback ten times a second.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import mimetypes
import os
import platform
import re
import secrets
import socket
import sqlite3
import sys
from collections import Counter
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from importlib import resources
from typing import Final, TypeVar

import trio
import wsproto.connection
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from .. import __version__
from ..config import Settings
from ..core.forwarded import forwarded_client
from ..core.histogram import Histogram
from ..core.history import HistoryStore, MemoryHistoryStore
from ..core.protocol import CloseCode, LeaveReason, RefusalReason
from ..core.rooms import HeldSeat
from ..core.websocket import (
    HostPolicy,
    UpgradeRefused,
    accept_upgrade,
    normalize_origin,
    origin_allowed,
    upgrade_required,
)
from ..stores.sqlite import SqliteHistoryStore
from .debug import DebugEndpoints
from .http import BadRequest, HttpConnection, Request
from .hub import BackplaneCounters, HubFront, HubStatistics, open_hub
from .reuseport import open_shared_listeners
from .session import Session
from .traffic import Flow, Traffic

if sys.platform != "win32":
    import resource

log = logging.getLogger(__name__)

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
SHUTDOWN_GRACE = 3.0  # seconds for clients to answer the 1001 close at shutdown
LINGER = 2.0  # seconds to wait for the client's close after answering and closing
LINGER_BYTES = 1 << 20  # bytes read and dropped meanwhile, at most
ROOMS_LISTED = 100  # rooms `/api/rooms` lists at most
LIMIT_WARNING_INTERVAL = 60.0  # seconds between warnings while --max-connections is reached
# Why a WebSocket upgrade was refused (the `reason` label of /metrics).
REFUSAL_REASONS = ("host", "origin", "connection_limit", "handshake")
_TEXT_TYPES = ("text/", "application/javascript", "application/json", "image/svg+xml")


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str


def load_web_assets() -> dict[str, Asset]:
    """Every file of the packaged `web/` folder, by URL path, read once.

    Serving from this table means no request path ever reaches the file
    system, so `..` and friends have nothing to traverse.
    """
    assets: dict[str, Asset] = {}

    def walk(folder: resources.abc.Traversable, prefix: str) -> Iterator[tuple[str, bytes]]:
        for entry in folder.iterdir():
            if entry.name.startswith((".", "__")):
                continue
            if entry.is_dir():
                yield from walk(entry, f"{prefix}{entry.name}/")
            else:
                yield f"{prefix}{entry.name}", entry.read_bytes()

    for path, body in walk(_web_folder(), "/"):
        content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        if content_type.startswith(_TEXT_TYPES):
            content_type += "; charset=utf-8"
        assets[path] = Asset(body, content_type)
    if "/index.html" in assets:
        assets["/"] = assets["/index.html"]
    return assets


def _web_folder() -> resources.abc.Traversable:
    """The web client: packaged as `trio_chat.web` in the wheel (see
    pyproject.toml), or the checkout's `web/` for an editable install."""
    try:
        return resources.files("trio_chat.web")
    except ModuleNotFoundError:
        return resources.files("trio_chat").joinpath("../web")


class _ChatCollector(Collector):
    """Reads the server's counters at scrape time: nothing on the hot path."""

    def __init__(self, server: ChatServer) -> None:
        self._server = server

    def collect(self) -> Iterator[Metric]:
        stats = self._server.hub.statistics()
        yield GaugeMetricFamily(
            "trio_chat_connections", "Open WebSocket connections.", len(self._server.sessions)
        )
        yield GaugeMetricFamily(
            "trio_chat_open_connections",
            "Connections counted against --max-connections (HTTP or WebSocket).",
            self._server.open_connections,
        )
        yield GaugeMetricFamily("trio_chat_rooms", "Rooms with members.", stats.rooms)
        yield GaugeMetricFamily("trio_chat_members", "Clients joined to a room.", stats.members)
        yield GaugeMetricFamily(
            "trio_chat_held_members",
            "Members whose connection dropped, keeping their place for --presence-grace.",
            stats.held,
        )
        yield GaugeMetricFamily("trio_chat_hub_inbox", "Commands queued for the hub.", stats.inbox)
        yield CounterMetricFamily("trio_chat_events", "Stored events numbered.", stats.events)
        yield CounterMetricFamily(
            "trio_chat_deliveries", "Live events queued to clients.", stats.deliveries
        )
        yield CounterMetricFamily(
            "trio_chat_slow_drops",
            "Members dropped as too slow (a full send queue, or a write over WRITE_WAIT).",
            stats.slow_drops,
        )
        yield from _traffic_metrics(self._server, stats)
        backplane = self._server.hub.backplane_counters()
        if backplane is not None:
            yield from _backplane_metrics(backplane)


def _labelled(
    name: str, help_text: str, label: str, values: Mapping[str, int], every: Iterable[str] = ()
) -> CounterMetricFamily:
    """A counter family with one series per label value; those in `every`
    are shown even at zero, so that a dashboard finds them from the start."""
    family = CounterMetricFamily(name, help_text, labels=[label])
    for value in sorted({*every, *values}):
        family.add_metric([value], values.get(value, 0))
    return family


def _histogram(name: str, help_text: str, histogram: Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(
        name,
        help_text,
        buckets=[
            ("+Inf" if math.isinf(bound) else repr(float(bound)), count)
            for bound, count in histogram.cumulative()
        ],
        sum_value=histogram.sum,
    )


def _traffic_metrics(server: ChatServer, stats: HubStatistics) -> Iterator[Metric]:
    """The series of issue 13: who came and went and why, what was refused,
    what went over the wire, how long deliveries and commits take."""
    build = GaugeMetricFamily(
        "trio_chat_build_info",
        "The running trio-chat: its version and Python's, as labels; always 1.",
        labels=["version", "python"],
    )
    build.add_metric([__version__, platform.python_version()], 1)
    yield build
    yield CounterMetricFamily("trio_chat_joins", "Members that joined a room.", stats.joins)
    yield CounterMetricFamily(
        "trio_chat_resumes",
        "Members that took their held place back with its resume secret (no join).",
        stats.resumes,
    )
    yield _labelled(
        "trio_chat_leaves",
        "Members that left a room (a leave event), by reason.",
        "reason",
        stats.leaves,
        map(str, LeaveReason),
    )
    traffic = server.traffic
    yield _labelled(
        "trio_chat_client_errors",
        "Error events sent to clients, by code.",
        "code",
        traffic.errors,
    )
    yield _labelled(
        "trio_chat_refused_upgrades",
        "WebSocket upgrades refused, by reason: host or origin not allowed (403), "
        "connection_limit (503), handshake (a malformed or non-GET upgrade).",
        "reason",
        server.refused_upgrades,
        REFUSAL_REASONS,
    )
    yield _labelled(
        "trio_chat_refused_hellos",
        "Hellos refused before reaching a room, by reason: token mode's unauthorized "
        "(missing_token, bad_token, expired, not_yet_valid, room_not_granted, name_mismatch) "
        "and open mode's reserved_name.",
        "reason",
        traffic.refused_hellos,
        map(str, RefusalReason),
    )
    yield CounterMetricFamily(
        "trio_chat_token_expiries",
        "Connections closed (1008) because their token expired.",
        traffic.token_expiries,
    )
    yield CounterMetricFamily(
        "trio_chat_ping_timeouts",
        "WebSocket connections dropped for want of a pong within the pong wait.",
        traffic.ping_timeouts,
    )
    flow = Flow()
    flow.add(traffic.ended)
    deepest = 0
    for session in server.sessions:
        flow.add(session.flow())
        deepest = max(deepest, session.queued)
    for direction, frames, nbytes in (
        ("received", flow.frames_in, flow.bytes_in),
        ("sent", flow.frames_out, flow.bytes_out),
    ):
        yield CounterMetricFamily(
            f"trio_chat_websocket_frames_{direction}",
            f"WebSocket frames {direction} (data frames and control frames).",
            frames,
        )
        yield CounterMetricFamily(
            f"trio_chat_websocket_{direction}_bytes",
            f"Bytes {direction} on WebSocket connections (the 101 response included).",
            nbytes,
        )
    yield GaugeMetricFamily(
        "trio_chat_send_queue_max_events",
        "Live events queued for the client with the longest send queue, now.",
        deepest,
    )
    latency = server.hub.delivery_latency()
    if latency is not None:
        yield _histogram(
            "trio_chat_delivery_latency_seconds",
            "From numbering a burst's events to their bytes reaching every idle recipient's "
            "socket (or a busy one's writer task): one value per burst, its slowest.",
            latency,
        )
    if isinstance(server.store, SqliteHistoryStore):
        yield _histogram(
            "trio_chat_history_commit_seconds",
            "Time to commit a batch of events to the SQLite history.",
            server.store.commit_seconds,
        )
        yield _histogram(
            "trio_chat_history_commit_events",
            "Events per commit to the SQLite history.",
            server.store.commit_sizes,
        )


def _backplane_metrics(counters: BackplaneCounters) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "trio_chat_backplane_up",
        "1 while the backplane answers (its last call succeeded), else 0.",
        int(counters.reachable),
    )
    yield SummaryMetricFamily(
        "trio_chat_backplane_publish_seconds",
        "Round trips of the calls that number, store and publish a burst of messages.",
        count_value=counters.publish_round_trips,
        sum_value=counters.publish_seconds,
    )
    for name, help_text, value in (
        ("gap_fills", "Reads of events the subscription missed.", counters.gap_fills),
        ("resubscriptions", "Rooms subscribed again on recovery.", counters.resubscriptions),
        (
            "recoveries",
            "Checks of every room after a failure or a lost lease.",
            counters.recoveries,
        ),
        (
            "refused_posts",
            "Messages answered unavailable (the sender may send them again).",
            counters.refused_posts,
        ),
        (
            "lost_posts",
            "Messages refused because the backplane no longer held their sender.",
            counters.lost_posts,
        ),
        (
            "lost_members",
            "Members closed with 1012 because the backplane no longer held them.",
            counters.lost_members,
        ),
        (
            "restarted_rooms",
            "Rooms whose numbering restarted (a flushed or emptied backplane).",
            counters.restarted_rooms,
        ),
        (
            "overflowed_events",
            "Subscribed events dropped by a full channel (then read from the log).",
            counters.overflowed,
        ),
        (
            "lease_failures",
            "Lease renewals that could not reach the backplane.",
            counters.lease_failures,
        ),
        ("leases_lost", "Lease renewals that found the lease gone.", counters.leases_lost),
    ):
        yield CounterMetricFamily(f"trio_chat_backplane_{name}", help_text, value)


class ChatServer:
    """Routes each accepted TCP connection; tracks the open sessions."""

    def __init__(
        self,
        settings: Settings,
        hub: HubFront,
        store: HistoryStore | None = None,
        *,
        debug: DebugEndpoints | None = None,
    ) -> None:
        self.settings = settings
        self.debug = debug  # debug mode's /debug/ routes; None: they do not exist
        self.hub = hub
        self.store = store
        self.sessions: set[Session] = set()
        self.refused_upgrades: Counter[str] = Counter()  # by REFUSAL_REASONS
        self.traffic = Traffic()
        self.shutting_down = False  # set at the shutdown signal: /readyz fails from then on
        self._limit_warned_at: float | None = None  # last warning that the limit was reached
        self._limit_refused = 0  # connections refused since that warning
        self.open_connections = 0  # served, HTTP or WebSocket: what the limit counts
        self._plain_http: set[trio.CancelScope] = set()
        self.assets = load_web_assets()
        self._host_policy = HostPolicy.for_server(settings.allowed_hosts, settings.host)
        self._allowed_origins = frozenset(
            "*" if origin == "*" else (normalize_origin(origin) or origin)
            for origin in settings.allowed_origins
        )
        self.metrics = CollectorRegistry()
        self.metrics.register(_ChatCollector(self))
        ProcessCollector(registry=self.metrics)

    async def handle_connection(self, stream: trio.SocketStream) -> None:
        """Serve one TCP connection; never raises (but Cancelled).

        Every connection counts against `--max-connections` from accept to
        close, plain HTTP as well as WebSocket: one accepted beyond the limit
        gets its first request answered with 503, and is closed.
        """
        peer = _peer(stream)
        label = _peer_label(peer)
        admitted = self.open_connections < self.settings.max_connections
        if admitted:
            self.open_connections += 1
        try:
            session = await self._serve_http(stream, peer, admitted=admitted)
            if session is not None:
                try:
                    await session.run()
                finally:
                    self.sessions.discard(session)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away
        except Exception:
            log.exception("%s: unexpected error", label)
        finally:
            if admitted:
                self.open_connections -= 1
            await trio.aclose_forcefully(stream)

    async def _serve_http(
        self, stream: trio.SocketStream, peer: tuple[str, int] | None, *, admitted: bool
    ) -> Session | None:
        """Plain HTTP until the client upgrades; then its session.

        Until it upgrades, a connection holds no chat state, so shutdown may
        simply cut it. Its HTTP parser is dropped on return, before the
        session runs. A connection not `admitted` (beyond the connection
        limit) gets 503 for its first request. Each request is logged under
        its client's address (`client_label`), which a trusted proxy may
        give for each request.
        """
        label = _peer_label(peer)
        http = HttpConnection(stream)
        plain_http = trio.CancelScope()
        self._plain_http.add(plain_http)
        try:
            with plain_http:
                try:
                    request = await self._next_request(http, label)
                    if request is not None and not admitted:
                        label = self.client_label(peer, request)
                        await self._refuse_over_limit(http, request, label)
                        request = None
                    while request is not None and request.path != "/ws":
                        if self.debug is not None and request.path.startswith("/debug/"):
                            # Not under the write wait: a profile takes its seconds.
                            answer = await self.debug.answer(request, http.stream)
                            with trio.move_on_after(self.settings.write_wait):
                                await http.respond(
                                    answer.status,
                                    answer.body,
                                    content_type=answer.content_type,
                                    headers=[("Cache-Control", "no-store"), *answer.headers],
                                )
                        else:
                            with trio.move_on_after(self.settings.write_wait):
                                await self._respond(http, request)
                        if not http.can_continue():
                            request = None
                            break
                        request = await self._next_request(http, label)
                    if request is not None:
                        label = self.client_label(peer, request)
                        session = await self._upgrade(http, request, label)
                        if session is not None:
                            return session
                except BadRequest as exc:
                    log.debug("%s: bad request (%d): %s", label, exc.status, exc)
                    with trio.move_on_after(self.settings.write_wait):
                        await http.refuse(exc.status, HTTPStatus(exc.status).phrase.lower())
                if http.answered:
                    await _close_gently(stream)
        finally:
            self._plain_http.discard(plain_http)
        return None

    async def _next_request(self, http: HttpConnection, label: str) -> Request | None:
        """The next request head, or None if the client is gone or too slow.

        The handshake timeout bounds each head; for `/ws` it also bounds the
        `hello` that follows, so the session inherits the deadline.
        """
        http.deadline = trio.current_time() + self.settings.handshake_timeout
        with trio.move_on_at(http.deadline):
            return await http.next_request()
        log.debug("%s: request head not complete in time", label)
        return None

    async def _refuse_over_limit(self, http: HttpConnection, request: Request, label: str) -> None:
        # One warning, then at most one a minute with a count: a flood of
        # refused connections must not become a flood of log lines.
        now = trio.current_time()
        warned_at = self._limit_warned_at
        if warned_at is None or now - warned_at >= LIMIT_WARNING_INTERVAL:
            limit = self.settings.max_connections
            if warned_at is None or not self._limit_refused:
                log.warning("%s: connection limit (%d) reached; refusing with 503", label, limit)
            else:
                log.warning(
                    "connection limit (%d) still reached: %d more connections refused in %.0fs",
                    limit,
                    self._limit_refused,
                    now - warned_at,
                )
            self._limit_warned_at, self._limit_refused = now, 0
        else:
            self._limit_refused += 1
            log.debug("%s: connection limit reached; refused", label)
        if request.path == "/ws":
            self.refused_upgrades["connection_limit"] += 1
        with trio.move_on_after(self.settings.write_wait):
            await http.refuse(503, "too many connections")

    async def _respond(self, http: HttpConnection, request: Request) -> None:
        if request.method not in ("GET", "HEAD"):
            await http.respond(
                405, b"method not allowed\n", headers=[("Allow", "GET, HEAD")], close=True
            )
            return
        if request.path == "/healthz":
            body = json.dumps(
                {
                    "status": "ok",
                    "connections": len(self.sessions),
                    "rooms": self.hub.statistics().rooms,
                }
            ).encode()
            await http.respond(
                200,
                body,
                content_type="application/json",
                headers=[("Cache-Control", "no-store")],
            )
        elif request.path == "/readyz":
            trouble = self.readiness()
            body = json.dumps(
                {"status": "ready"}
                if trouble is None
                else {"status": "unready", "reason": trouble}
            ).encode()
            await http.respond(
                200 if trouble is None else 503,
                body,
                content_type="application/json",
                headers=[("Cache-Control", "no-store")],
            )
        elif request.path == "/api/rooms":
            await http.respond(
                200,
                self.rooms_json(),
                content_type="application/json",
                headers=[("Cache-Control", "no-store")],
            )
        elif request.path == "/metrics":
            await http.respond(
                200,
                generate_latest(self.metrics),
                content_type="text/plain; version=0.0.4; charset=utf-8",
            )
        elif (asset := self.assets.get(request.path)) is not None:
            headers = [("Cache-Control", "no-cache"), ("Referrer-Policy", "no-referrer")]
            if asset.content_type.startswith("text/html"):
                headers.append(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
            await http.respond(200, asset.body, content_type=asset.content_type, headers=headers)
        else:
            await http.respond(404, b"not found\n")

    def rooms_json(self) -> bytes:
        """`/api/rooms`: the busiest `ROOMS_LISTED` rooms with members, and
        how many (held places included), busiest first, then by name."""
        rooms = sorted(self.hub.rooms(), key=lambda room: (-room[1], room[0]))
        listed = [{"name": name, "members": count} for name, count in rooms[:ROOMS_LISTED]]
        return json.dumps({"rooms": listed, "more": len(rooms) > ROOMS_LISTED}).encode()

    def client_label(self, peer: tuple[str, int] | None, request: Request) -> str:
        """How logs name the client of `request`: its address as the
        `--trusted-proxy` that sent it says in `X-Forwarded-For` (no port:
        proxies do not pass it on), else the TCP peer's `address:port`."""
        if peer is None:
            return _peer_label(peer)
        forwarded = forwarded_client(
            peer[0], request.headers.get("x-forwarded-for"), self.settings.trusted_proxies
        )
        return _peer_label(peer) if forwarded is None else str(forwarded)

    def readiness(self) -> str | None:
        """Why this server should not be sent new clients now, or None.

        `/healthz` says the process is alive; this says it is well: that it
        is not shutting down (from the signal on, through `--drain-delay`,
        so that a load balancer stops sending clients before any is
        closed), that its hub can serve new clients (a shared hub reaches
        its backplane), then that history reaches its file (a server whose
        disk is full keeps its clients, but a restart would lose what it
        holds).
        """
        if self.shutting_down:
            return "shutting down"
        trouble = self.hub.trouble()
        if trouble is not None:
            return trouble
        if isinstance(self.store, SqliteHistoryStore):
            return self.store.trouble()
        return None

    async def _upgrade(self, http: HttpConnection, request: Request, label: str) -> Session | None:
        settings = self.settings
        refusal = self._refusal(request, label)
        if isinstance(refusal, UpgradeRefused):
            with trio.move_on_after(settings.write_wait):
                await http.refuse(refusal.status, refusal.reason, refusal.headers)
            return None
        response, trailing = http.accept_websocket(refusal)
        ws = wsproto.connection.Connection(
            wsproto.connection.ConnectionType.SERVER, trailing_data=trailing
        )
        # The session writes the 101 first, like any other queued bytes.
        session = Session(
            http.stream,
            ws,
            self.hub,
            settings,
            hello_deadline=http.deadline,
            label=label,
            preface=response,
            traffic=self.traffic,
        )
        self.sessions.add(session)
        return session

    def _refusal(self, request: Request, label: str) -> UpgradeRefused | list[tuple[str, str]]:
        """Why this upgrade is refused, or else the 101 response headers.

        A HEAD goes through the same checks, so that it gets the status a GET
        with the same headers would get, but it never switches protocols.
        """
        if request.method not in ("GET", "HEAD"):
            self.refused_upgrades["handshake"] += 1
            return UpgradeRefused(405, "WebSocket upgrades use GET", [("Allow", "GET, HEAD")])
        try:
            response_headers = accept_upgrade(request.headers)
        except UpgradeRefused as refused:
            self.refused_upgrades["handshake"] += 1
            return refused
        host = request.headers.get("host")
        if not self._host_policy.allows(host):
            # A page whose name was rebound to our address (DNS rebinding).
            log.info("%s: host %r not allowed", label, host)
            self.refused_upgrades["host"] += 1
            return UpgradeRefused(403, "host not allowed")
        origin = request.headers.get("origin")
        if not origin_allowed(origin, host, self._allowed_origins):
            log.info("%s: origin %r not allowed", label, origin)
            self.refused_upgrades["origin"] += 1
            return UpgradeRefused(403, "origin not allowed")
        if request.method == "HEAD":
            self.refused_upgrades["handshake"] += 1
            return upgrade_required("WebSocket upgrades use GET")
        return response_headers

    def close_all(self) -> None:
        """Cut idle HTTP connections; close every WebSocket client with 1001."""
        for scope in self._plain_http:
            scope.cancel()
        for session in list(self.sessions):
            session.drop(CloseCode.GOING_AWAY, LeaveReason.SHUTDOWN)


# -- accepting connections ----------------------------------------------------

# accept() fails with these when the process or the system is out of file
# descriptors or kernel memory: a passing shortage, not a reason to stop.
ACCEPT_SHORTAGE_ERRNOS: Final = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
)
ACCEPT_RETRY_DELAY = 0.1  # seconds between accepts while the shortage lasts
ACCEPT_WARNING_INTERVAL = 10.0  # seconds between warnings while it lasts
FD_HEADROOM = 64  # descriptors besides connections: listeners, epoll, stdio, the database

StreamT = TypeVar("StreamT", bound=trio.abc.AsyncResource)


async def serve_connections(
    handler: Callable[[StreamT], Awaitable[object]],
    listeners: Sequence[trio.abc.Listener[StreamT]],
    *,
    handler_nursery: trio.Nursery,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept connections on every listener, and start `handler(stream)` for
    each in `handler_nursery`, until cancelled; then close the listeners.

    `trio.serve_listeners` with one difference: when accept() fails for want
    of file descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM), it logs a
    WARNING (no traceback) when that starts and at most every
    ACCEPT_WARNING_INTERVAL seconds while it lasts, retries every
    ACCEPT_RETRY_DELAY seconds, and logs INFO once accepting works again.
    Connections wait in the listen backlog meanwhile. Any other error from
    accept() propagates. The handler owns its stream and must close it.
    """
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(_accept_forever, handler, listener, handler_nursery)
        task_status.started()


async def _accept_forever(
    handler: Callable[[StreamT], Awaitable[object]],
    listener: trio.abc.Listener[StreamT],
    handler_nursery: trio.Nursery,
) -> None:
    async with listener:
        failing_since: float | None = None  # while accept() fails for a shortage
        failed = 0  # accepts failed since the last warning
        total = 0  # accepts failed since the shortage began
        warned_at = 0.0
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in ACCEPT_SHORTAGE_ERRNOS:
                    raise
                now = trio.current_time()
                failed += 1
                total += 1
                if failing_since is None:
                    failing_since = warned_at = now
                    failed = 0
                    log.warning(
                        "cannot accept connections: %s; retrying every %gs",
                        _errno_text(exc),
                        ACCEPT_RETRY_DELAY,
                    )
                elif now - warned_at >= ACCEPT_WARNING_INTERVAL:
                    log.warning(
                        "still cannot accept connections (%s): %d accepts failed in %.0fs",
                        _errno_text(exc),
                        failed,
                        now - warned_at,
                    )
                    failed, warned_at = 0, now
                await trio.sleep(ACCEPT_RETRY_DELAY)
            else:
                if failing_since is not None:
                    log.info(
                        "accepting connections again after %.1fs (%d accepts failed)",
                        trio.current_time() - failing_since,
                        total,
                    )
                    failing_since, failed, total = None, 0, 0
                handler_nursery.start_soon(handler, stream)


def _errno_text(exc: OSError) -> str:
    code = exc.errno or 0
    return f"{errno.errorcode.get(code, code)} ({os.strerror(code)})"


def raise_open_file_limit(max_connections: int) -> None:
    """Let the process hold `max_connections` connections if the system allows.

    Raises the soft RLIMIT_NOFILE to the hard limit when it is below
    `max_connections` plus FD_HEADROOM (many systems start processes at 1024,
    the hard limit far higher), and warns when the limit is still too low:
    beyond it, connections wait unaccepted instead of getting 503.
    """
    if sys.platform == "win32":
        return
    needed = max_connections + FD_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    if soft == unlimited or soft >= needed:
        return
    if hard == unlimited or hard > soft:
        target = needed if hard == unlimited else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
        else:
            log.info("raised the open-file limit from %d to %d", soft, target)
            soft = target
    if soft < needed:
        log.warning(
            "--max-connections is %d but the open-file limit is %d: beyond about %d "
            "connections, new ones wait unaccepted instead of getting 503 (raise ulimit -n)",
            max_connections,
            soft,
            max(soft - FD_HEADROOM, 0),
        )


async def _close_gently(stream: trio.SocketStream) -> None:
    """Close after an answer without losing it to a reset.

    Closing a socket that still holds unread bytes (a pipelined request, a
    body we never read) makes the kernel send a reset, which can destroy
    the answer still on its way. So: send our FIN, then read and drop what
    the client sends until it closes too, for at most `LINGER` seconds and
    `LINGER_BYTES` bytes.
    """
    with trio.move_on_after(LINGER):
        drained = 0
        try:
            await stream.send_eof()
            while drained < LINGER_BYTES:
                data = await stream.receive_some(65536)
                if not data:
                    break
                drained += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


def _peer(stream: trio.SocketStream) -> tuple[str, int] | None:
    """The TCP peer's address and port (None if the socket cannot say)."""
    try:
        host, port, *_ = stream.socket.getpeername()
    except (OSError, ValueError):
        return None
    return str(host), int(port)


def _peer_label(peer: tuple[str, int] | None) -> str:
    return "client" if peer is None else f"{peer[0]}:{peer[1]}"


async def open_listeners(
    settings: Settings, *, reuse_port: bool = False
) -> list[trio.SocketListener]:
    """Bind the server's port (raises OSError if that is impossible).

    `reuse_port`: as one of the workers of `serve --workers N`, which share
    the port with SO_REUSEPORT (see `reuseport`); never for a lone process.
    """
    if reuse_port:
        return await open_shared_listeners(settings.host, settings.port)
    return await trio.open_tcp_listeners(settings.port, host=settings.host)


async def open_store(settings: Settings) -> HistoryStore:
    """Open the history database (raises HistoryError if it is unusable).

    `--db :memory:` keeps windows in process memory only: no database, no
    worker thread.
    """
    if settings.db == ":memory:":
        return MemoryHistoryStore(settings.history_limit)
    return await SqliteHistoryStore.open(settings.db, settings.history_limit)


@asynccontextmanager
async def _writing(store: HistoryStore, path: str) -> AsyncIterator[None]:
    """Run the durable store's writer for the block; flush and close after."""
    if not isinstance(store, SqliteHistoryStore):
        yield
        return
    try:
        async with trio.open_nursery() as writer:
            await writer.start(store.serve_writer)
            yield
            writer.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            failure: sqlite3.OperationalError | None = None
            try:
                await store.flush()
            except sqlite3.OperationalError as error:  # the disk, not a bug: no traceback
                failure = error
            except sqlite3.Error:
                log.exception("could not write the last history to %r", path)
            if failure is not None:
                pending = store.statistics().pending
                log.error("could not write the last %d events to %r: %s", pending, path, failure)
            await store.aclose()


async def serve_chat(
    settings: Settings,
    shutdown: trio.Event,
    *,
    listeners: list[trio.SocketListener] | None = None,
    store: HistoryStore | None = None,
    drain_ended: trio.Event | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the chat on `settings.host:settings.port` until `shutdown` is set.

    From `shutdown` on, `/readyz` answers 503 and the server keeps serving
    for `settings.drain_delay` seconds before it closes its clients. Setting
    `drain_ended` ends that delay early (the CLI does on a second signal);
    the server sets it itself when the delay is over, so whoever holds it
    can tell whether a drain is still under way.

    `listeners` and `store` may be opened beforehand with `open_listeners`
    and `open_store` (the CLI does, to report a busy port or a bad database
    before anything starts); `serve_chat` closes both. With a backplane
    (`settings.backplane`) there is no store: history lives in the
    backplane, and `store` must be None. Reports the bound port through
    `task_status` (useful with port 0). Returns once every client has been
    closed (1001) and all history is written.

    Raises:
        BackplaneError: the backplane could not be reached at start (possibly
            inside an exception group).
    """
    if listeners is None:
        listeners = await open_listeners(settings)
    try:
        if settings.backplane is not None:
            assert store is None, "with a backplane, history lives there"
            # Imported here: the Redis client takes most of a second to load.
            from ..backplane.redis import open_backplane  # noqa: PLC0415
            from .shared_hub import open_shared_hub  # noqa: PLC0415

            node = node_name()
            async with (
                open_backplane(
                    settings.backplane, node, history_limit=settings.history_limit
                ) as backplane,
                open_shared_hub(
                    backplane,
                    replay_limit=settings.history_replay,
                    send_queue_size=settings.send_queue_size,
                    grace=settings.presence_grace,
                ) as hub,
            ):
                log.info("rooms shared through %s as node %s", backplane.url, node)
                await _serve(
                    settings,
                    shutdown,
                    listeners,
                    hub,
                    task_status,
                    store=None,
                    drain_ended=drain_ended,
                )
        else:
            if store is None:
                store = await open_store(settings)
            async with _writing(store, settings.db):
                durable = store if isinstance(store, SqliteHistoryStore) else None
                # Read (and cleared) even with no grace now: those members then
                # leave at once, as they would have when their grace ended.
                held = await _held_seats(durable) if durable else []
                async with open_hub(
                    store,
                    load=durable.load if durable else None,
                    replay_limit=settings.history_replay,
                    send_queue_size=settings.send_queue_size,
                    grace=settings.presence_grace,
                    held=held,
                ) as local_hub:
                    await _serve(
                        settings,
                        shutdown,
                        listeners,
                        local_hub,
                        task_status,
                        store=store,
                        drain_ended=drain_ended,
                    )
                if durable is not None and settings.presence_grace:
                    await _keep_seats(durable, local_hub.hold_all())
    finally:
        # Closed by the acceptor once serving; here if serving never began.
        for listener in listeners:
            await trio.aclose_forcefully(listener)
    log.info("shutdown complete")


async def _held_seats(store: SqliteHistoryStore) -> list[HeldSeat]:
    """The seats the last graceful shutdown kept, for their members to resume."""
    try:
        seats = await store.take_presence()
    except sqlite3.Error as error:  # the chat goes on; they join again, as new
        log.warning("could not read the members kept at the last shutdown: %s", error)
        return []
    if seats:
        log.info("keeping the places of %d members from before the restart", len(seats))
    return seats


async def _keep_seats(store: SqliteHistoryStore, seats: list[HeldSeat]) -> None:
    """Write the members' seats down at shutdown, for the next start."""
    if not seats:
        return
    with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_GRACE):
        try:
            await store.keep_presence(seats)
        except sqlite3.Error as error:
            log.warning("could not keep the places of %d members: %s", len(seats), error)
            return
        log.info("kept the places of %d members for %g s", len(seats), seats[0].remaining)


def node_name() -> str:
    """A name for this process among those sharing a backplane: the host,
    the process id and a random part, so that a restarted process (same host,
    maybe the same pid in a container) is never taken for its predecessor,
    whose members the others must reap."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


async def _serve(
    settings: Settings,
    shutdown: trio.Event,
    listeners: list[trio.SocketListener],
    hub: HubFront,
    task_status: trio.TaskStatus[int],
    *,
    store: HistoryStore | None,
    drain_ended: trio.Event | None,
) -> None:
    port = listeners[0].socket.getsockname()[1]
    debug = DebugEndpoints(settings.debug_token) if settings.debug else None
    server = ChatServer(settings, hub, store, debug=debug)
    raise_open_file_limit(settings.max_connections)
    if debug is not None:
        debug.start()
        log.warning(
            "debug mode: /debug/tasks, /debug/heap and /debug/profile are served %s; "
            "allocations are traced, which slows the server",
            "to clients with the debug token" if settings.debug_token else "to loopback clients",
        )
    try:
        await _serve_connections(
            settings,
            shutdown,
            listeners=listeners,
            server=server,
            port=port,
            task_status=task_status,
            drain_ended=drain_ended,
        )
    finally:
        if debug is not None:
            debug.stop()


async def _serve_connections(
    settings: Settings,
    shutdown: trio.Event,
    *,
    listeners: list[trio.SocketListener],
    server: ChatServer,
    port: int,
    task_status: trio.TaskStatus[int],
    drain_ended: trio.Event | None,
) -> None:
    async with trio.open_nursery() as connections:
        async with trio.open_nursery() as acceptor:
            await acceptor.start(
                partial(serve_connections, handler_nursery=connections),
                server.handle_connection,
                listeners,
            )
            log.info(
                "trio-chat serving on http://%s:%d/ (WebSocket at /ws)",
                _display_host(settings.host),
                port,
            )
            task_status.started(port)
            await shutdown.wait()
            server.shutting_down = True
            await _drain(
                settings.drain_delay, trio.Event() if drain_ended is None else drain_ended
            )
            log.info("shutting down: closing %d connections", len(server.sessions))
            acceptor.cancel_scope.cancel()
        server.close_all()
        # Sessions send their close frame and wait for the answer, but a
        # client that does not answer must not hold the exit for long.
        grace = min(settings.write_wait, SHUTDOWN_GRACE)
        connections.cancel_scope.deadline = trio.current_time() + grace


async def _drain(delay: float, ended: trio.Event) -> None:
    """Serve on for `delay` seconds, or until `ended` is set; then set it.

    `/readyz` already fails: a load balancer that polls it stops sending new
    clients meanwhile. New connections are still accepted and served, since
    requests the balancer sent before it noticed are on their way, and
    refusing them would turn a deploy into errors for their clients.
    """
    if delay > 0 and not ended.is_set():
        log.info("draining: /readyz answers 503; clients are closed in %gs", delay)
        with trio.move_on_after(delay):
            await ended.wait()
            log.info("drain delay cut short")
    ended.set()


def _display_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
