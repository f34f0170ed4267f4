"""Hostile peers: arbitrary bytes after the upgrade never hurt anyone else."""

from __future__ import annotations

import logging

import pytest
import trio
from conftest import server_starter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.events import Message

# Raw bytes a client might send after the handshake: random junk, and junk
# glued to well-formed frames so that the parser gets past the first header.
junk = st.binary(max_size=2048)
frames = st.lists(
    st.one_of(
        junk,
        st.text(max_size=300).map(lambda t: ("T", t)),
        st.binary(max_size=300).map(lambda b: ("B", b)),
    ),
    max_size=6,
)


# caplog is cleared at the start of every example.
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(parts=frames)
async def test_any_bytes_only_affect_their_sender(
    parts: list[bytes | tuple[str, object]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.clear()
    async with server_starter() as start_server:
        server = await start_server(rate_limit=0)
        witness = await server.joined("witness")
        hostile = await server.joined("hostile")
        await witness.next_of("join")
        with trio.fail_after(20):
            for part in parts:
                if isinstance(part, bytes):
                    data = part
                elif part[0] == "T":
                    data = hostile.ws.send(Message(data=str(part[1])))
                else:
                    assert isinstance(part[1], bytes)
                    data = hostile.ws.send(Message(data=part[1]))
                try:
                    await hostile.send_raw(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break  # the server already closed it: fine
            # Everyone else carries on, in order.
            await witness.say("still here")
            event = await witness.next_of("message")
            assert (event["name"], event["text"]) == ("witness", "still here")
    # A hostile peer is a client problem, never an internal error.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
