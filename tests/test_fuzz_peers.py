"""Fuzzing over real sockets: several hostile clients at once beside two witnesses.

Hypothesis draws, for each hostile client, a sequence of valid and invalid
frames, fragments with pings between them, binary frames, raw junk, and an
ending (a close frame, a FIN, a reset, or nothing); the clients run
concurrently with random checkpoints, so the server sees their frames
interleaved in varying orders. Whatever they do, the witnesses' streams stay
complete and in order (the same gap-free sequence for both, their own
messages included) and nothing is logged at ERROR.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import trio
import trio.lowlevel
from conftest import RunningServer, server_starter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsclient import Closed, RawClient, reset_on_close
from wsproto.events import CloseConnection
from wsproto.frame_protocol import FrameProtocol

Action = tuple[Any, ...]

texts = st.text(max_size=60)
actions = st.one_of(
    texts.map(lambda t: ("say", t)),
    st.just(("typing",)),
    st.one_of(texts, st.from_regex(r"\{.*\}", fullmatch=True)).map(lambda t: ("text", t)),
    st.lists(texts, min_size=1, max_size=6).map(lambda parts: ("fragments", parts)),
    st.binary(max_size=125).map(lambda p: ("ping", p)),
    st.binary(max_size=40).map(lambda p: ("binary", p)),
    st.binary(min_size=1, max_size=64).map(lambda b: ("raw", b)),
    st.booleans().map(lambda b: ("checkpoint", b)),
)
endings = st.sampled_from(["close", "fin", "reset", "stay"])
scripts = st.tuples(st.lists(actions, max_size=12), endings)


def frames_for(action: Action, frames: FrameProtocol) -> bytes:
    kind = action[0]
    if kind == "say":
        return bytes(frames.send_data(json.dumps({"type": "say", "text": action[1]}), fin=True))
    if kind == "typing":
        return bytes(frames.send_data('{"type":"typing"}', fin=True))
    if kind == "text":
        return bytes(frames.send_data(action[1], fin=True))
    if kind == "fragments":
        text = json.dumps({"type": "say", "text": "".join(action[1])})
        cuts = sorted({min(len(text), len(part)) for part in action[1]})
        out, start = b"", 0
        for cut in [*cuts, len(text)]:
            if cut <= start and cut != len(text):
                continue
            last = cut == len(text)
            out += bytes(frames.send_data(text[start:cut], fin=last))
            if not last:
                out += bytes(frames.ping(b"between"))  # control frames may interleave
            start = cut
            if last:
                break
        return out
    if kind == "ping":
        return bytes(frames.ping(action[1]))
    if kind == "binary":
        return bytes(frames.send_data(action[1], fin=True))
    if kind == "raw":
        return bytes(action[1])
    return b""


async def run_hostile(
    server: RunningServer, number: int, script: tuple[list[Action], str]
) -> None:
    steps, ending = script
    client = await server.client()
    frames = FrameProtocol(client=True, extensions=[])
    try:
        await client.send_raw(
            bytes(frames.send_data(json.dumps({"type": "hello", "name": f"h{number}"}), fin=True))
        )
        for action in steps:
            if action[0] == "checkpoint":
                if action[1]:
                    await trio.lowlevel.checkpoint()
                continue
            await client.send_raw(frames_for(action, frames))
        if ending == "close":
            await client.send_raw(bytes(client.ws.send(CloseConnection(code=1000))))
        elif ending == "reset":
            reset_on_close(client.stream)
            await client.aclose()
        elif ending == "fin":
            await client.aclose()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the server closed it: its business


async def read_all(client: RawClient, into: list[dict[str, Any]]) -> None:
    try:
        while True:
            into.append(await client.next_event())
    except Closed:
        return


def stored(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if "id" in e]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(hostile=st.lists(scripts, min_size=1, max_size=4))
async def test_hostile_clients_never_disturb_the_witnesses(
    hostile: list[tuple[list[Action], str]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.clear()
    async with server_starter() as start_server:
        server = await start_server(rate_limit=0)
        witnesses = {name: await server.joined(name) for name in ("w1", "w2")}
        heard: dict[str, list[dict[str, Any]]] = {name: [] for name in witnesses}
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for name, client in witnesses.items():
                    nursery.start_soon(read_all, client, heard[name])
                async with trio.open_nursery() as attackers:
                    for number, script in enumerate(hostile):
                        attackers.start_soon(run_hostile, server, number, script)
                    for n in range(3):
                        for name, client in witnesses.items():
                            await client.say(f"{name}-{n}")
                        await trio.lowlevel.checkpoint()
                for name, client in witnesses.items():
                    await client.say(f"{name}-done")
                while True:  # until each witness heard both markers
                    if all(
                        {"w1-done", "w2-done"} <= {e.get("text") for e in events}
                        for events in heard.values()
                    ):
                        break
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
    first, second = (stored(heard[name]) for name in ("w1", "w2"))
    for events in (first, second):
        ids = [e["id"] for e in events]
        assert ids == list(range(ids[0], ids[0] + len(ids))), ids
        texts_seen = [e.get("text") for e in events if e.get("name") in witnesses]
        for name in witnesses:
            mine = [t for t in texts_seen if isinstance(t, str) and t.startswith(name)]
            assert mine == [f"{name}-0", f"{name}-1", f"{name}-2", f"{name}-done"]
    # w2 joined after w1: from its join on, both saw exactly the same events.
    start = second[0]["id"]
    assert [e for e in first if e["id"] >= start] == second
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
