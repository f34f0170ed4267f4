"""The one write path: direct writes check their preconditions in code."""

from __future__ import annotations

import pytest
import trio
from conftest import RunningServer, wait_until
from wsclient import RawClient, reset_on_close

from trio_chat.server.socket_writer import SocketWriter


async def connected_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """Two ends of a real TCP connection on loopback."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listeners[0].accept()
    await listeners[0].aclose()
    return client, server


async def test_a_direct_write_while_send_all_is_in_progress_is_refused() -> None:
    reader, stream = await connected_pair()
    writer = SocketWriter(stream)
    big = b"x" * (32 * 1024 * 1024)  # more than any socket buffer: send_all must wait
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.send_all, big)
            await wait_until(lambda: writer.sending)
            with pytest.raises(trio.BusyResourceError):
                writer.send_nowait(b"interleaved")
            received = 0
            while received < len(big):
                received += len(await reader.receive_some(1 << 20))
    assert writer.send_nowait(b"now fine") == len(b"now fine")  # done sending
    await reader.aclose()
    await stream.aclose()


async def test_a_reset_connection_is_a_broken_stream_not_a_full_one() -> None:
    peer, stream = await connected_pair()
    writer = SocketWriter(stream)
    reset_on_close(peer)
    await peer.aclose()  # a TCP reset
    with trio.fail_after(10), pytest.raises(trio.BrokenResourceError):  # noqa: PT012
        while True:  # the first write may still be accepted before the reset lands
            writer.send_nowait(b"hello?")
            await trio.sleep(0.01)
    await stream.aclose()


async def test_no_direct_write_after_close() -> None:
    peer, stream = await connected_pair()
    writer = SocketWriter(stream)
    writer.close_nowait()
    assert not writer.direct
    with pytest.raises(trio.ClosedResourceError):
        writer.send_nowait(b"late")
    await peer.aclose()
    await stream.aclose()


async def test_a_reset_found_by_the_hubs_write_ends_the_member_with_quit(
    server: RunningServer,
) -> None:
    witness = await server.joined("witness")
    gone = await server.joined("gone")
    await witness.next_of("join")
    reset_on_close(gone.stream)
    await gone.aclose()
    with trio.fail_after(10):
        for n in range(20):  # the hub writes to it directly until it notices
            await witness.say(f"are you there {n}")
        leave = await witness.next_of("leave")
    assert (leave["name"], leave["reason"]) == ("gone", "quit")
    assert isinstance(witness, RawClient)
