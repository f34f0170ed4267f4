"""One port served by several processes (`serve --workers N`): SO_REUSEPORT.

Every process that binds the same address and port with SO_REUSEPORT (as
the same user) gets a listening socket of its own, and the kernel spreads
new connections over the listening ones by a hash of each connection's
addresses. The parent first binds the port itself without listening
(:func:`reserve_port`): that picks the port for ``--port 0``, refuses a port
another program holds with the same error a single process gives, and keeps
the port ours while every worker happens to be restarting. A socket that is
bound but not listening takes no connections. Each worker then listens with
:func:`open_shared_listeners`.

A single process never uses SO_REUSEPORT: a second server started on its
port by mistake must be refused, not handed half of the connections.
"""

from __future__ import annotations

import errno
import socket
import sys

import trio

BACKLOG = 0xFFFF  # what trio.open_tcp_listeners asks for: the system's maximum


def reuse_port_supported() -> bool:
    """Whether this system can share a port between processes (not Windows)."""
    return hasattr(socket, "SO_REUSEPORT")


async def _bind(host: str, port: int, *, reuse_port: bool) -> list[trio.socket.SocketType]:
    """Sockets bound to every address of `host` on `port`, as
    `trio.open_tcp_listeners` binds them, not yet listening.

    With port 0 every address gets the port the first one got, where
    open_tcp_listeners would give each its own.
    """
    addresses = await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[trio.socket.SocketType] = []
    try:
        for family, type_, proto, _, resolved in addresses:
            try:
                sock = trio.socket.socket(family, type_, proto)
            except OSError as error:
                if error.errno == errno.EAFNOSUPPORT:
                    continue  # an IPv6 address on a host without IPv6
                raise
            sockets.append(sock)
            if sys.platform != "win32":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            address = resolved
            if port == 0 and len(sockets) > 1:
                address = (resolved[0], sockets[0].getsockname()[1], *resolved[2:])
            await sock.bind(address)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    if not sockets:
        raise OSError(errno.EAFNOSUPPORT, "no address of this kind works on this system")
    return sockets


async def reserve_port(host: str, port: int) -> tuple[list[trio.socket.SocketType], int]:
    """Bind `host:port` for workers to share; returns the sockets and the port.

    The caller keeps the sockets open (bound, never listening) while it has
    workers, and closes them at the end.

    Raises:
        OSError: the port is taken (by any other socket, SO_REUSEPORT or not)
            or cannot be bound.
    """
    # First without SO_REUSEPORT, which any socket already on the port
    # refuses, so that another program's port (even another --workers
    # parent's) is reported busy instead of silently shared.
    probes = await _bind(host, port, reuse_port=False)
    chosen = probes[0].getsockname()[1]
    for probe in probes:
        probe.close()
    sockets = await _bind(host, chosen, reuse_port=True)
    return sockets, chosen


async def open_shared_listeners(host: str, port: int) -> list[trio.SocketListener]:
    """Listen on `host:port` (not 0) together with the other workers."""
    sockets = await _bind(host, port, reuse_port=True)
    try:
        for sock in sockets:
            sock.listen(BACKLOG)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return [trio.SocketListener(sock) for sock in sockets]
