"""Scrollback: the `history` command, from the pure page to a real server.

The pure parts (`RoomHistory.page`, the command's parsing, the answer's
encoding) are checked against a plain list model with hypothesis; the rest
over real sockets: limits, refusals, rate limiting, and that a member who
pages without reading its answers is dropped as slow rather than holding up
anyone else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import RunningServer, StartServer
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.events import TextMessage

from trio_chat.core import protocol
from trio_chat.core.history import RoomHistory, StoredEvent
from trio_chat.core.protocol import ErrorCode, HistoryRequest, ProtocolError

TS = protocol.format_timestamp(1_700_000_000)


def event(event_id: int) -> StoredEvent:
    return StoredEvent(
        event_id, protocol.message_event(event_id, "r", "a", f"m{event_id}", TS, ref=None)
    )


# -- the page (pure) -----------------------------------------------------------


@settings(max_examples=300)
@given(
    limit=st.integers(1, 30),
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.integers(1, 40)),
            st.tuples(st.just("restart"), st.integers(0, 30)),
        ),
        max_size=8,
    ),
    before=st.none() | st.integers(-5, 120),
    page=st.integers(1, 100),
)
def test_a_page_is_exactly_the_retained_events_below_before(
    limit: int, steps: list[tuple[str, int]], before: int | None, page: int
) -> None:
    """For any mix of appends, retention trims and restarts (the window read
    back from storage, possibly with its newest events lost), a page is the
    newest `page` retained events below `before`, gap-free and oldest
    first, and `more` says whether older retained ones exist."""
    history = RoomHistory(limit)
    for kind, amount in steps:
        if kind == "append":
            for _ in range(amount):
                history.append(event(history.last_id + 1))
        else:  # a restart: what storage kept, maybe fewer than the window
            kept = history.tail(amount)
            history = RoomHistory.from_storage(limit, kept, history.last_id)
    retained = history.after(0)
    below = [e for e in retained if before is None or e.id < before]
    events, more = history.page(before, page)
    assert events == below[-page:]
    assert more == (len(below) > page)
    ids = [e.id for e in events]
    assert ids == list(range(ids[0], ids[0] + len(ids))) if ids else True


def test_a_page_of_an_empty_history_is_empty() -> None:
    assert RoomHistory(10).page(None, 5) == ([], False)
    assert RoomHistory(10, last_id=7).page(8, 5) == ([], False)


# -- the command and its answer (pure) ---------------------------------------


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ({"type": "history"}, HistoryRequest(None, protocol.HISTORY_PAGE)),
        ({"type": "history", "before": 7, "limit": 100}, HistoryRequest(7, 100)),
        ({"type": "history", "limit": 1, "ref": "p1"}, HistoryRequest(None, 1, "p1")),
        ({"type": "history", "before": None}, HistoryRequest(None, protocol.HISTORY_PAGE)),
    ],
)
def test_history_requests_parse(frame: dict[str, Any], expected: HistoryRequest) -> None:
    assert protocol.parse_command(json.dumps(frame), joined=True) == expected


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"before": 0}, "'before' must be an integer >= 1"),
        ({"before": -3}, "'before' must be an integer >= 1"),
        ({"before": "9"}, "'before' must be an integer >= 1"),
        ({"before": 1.5}, "'before' must be an integer >= 1"),
        ({"before": True}, "'before' must be an integer >= 1"),
        ({"limit": 0}, "'limit' must be an integer from 1 to 100"),
        ({"limit": 101}, "'limit' must be an integer from 1 to 100"),
        ({"limit": None}, "'limit' must be an integer from 1 to 100"),
        ({"limit": 2.0}, "'limit' must be an integer from 1 to 100"),
    ],
)
def test_bad_history_requests_are_bad_requests(fields: dict[str, Any], message: str) -> None:
    frame = json.dumps({"type": "history", "ref": "p", **fields})
    with pytest.raises(ProtocolError) as caught:
        protocol.parse_command(frame, joined=True)
    assert (caught.value.code, caught.value.message, caught.value.ref) == (
        ErrorCode.BAD_REQUEST,
        message,
        "p",
    )
    with pytest.raises(ProtocolError) as caught:
        protocol.parse_command(frame, joined=False)
    assert caught.value.code is ErrorCode.NOT_JOINED


@given(
    ids=st.lists(st.integers(1, 2**53), max_size=5),
    more=st.booleans(),
    ref=st.none() | st.text(max_size=64),
    room=st.from_regex(r"[A-Za-z0-9_.\-]{1,64}", fullmatch=True),
)
def test_a_history_answer_is_json_holding_the_events_as_they_are(
    ids: list[int], more: bool, ref: str | None, room: str
) -> None:
    ref = None if ref is None else ref.encode("utf-8", "replace").decode("utf-8")
    lines = [event(i).line for i in ids]
    answer = json.loads(protocol.history_event(room, lines, more=more, ref=ref))
    expected = {
        "type": "history",
        "room": room,
        "events": [json.loads(line) for line in lines],
        "more": more,
    }
    if ref is not None:
        expected["ref"] = ref
    assert answer == expected


# -- over real sockets -----------------------------------------------------------


async def test_paging_back_through_a_room(server: RunningServer) -> None:
    talker = await server.joined("talker", "paged")
    for n in range(120):
        await talker.say(f"m{n}")
    reader = await server.joined("reader", "paged")  # id 122: its own join
    await reader.send_json({"type": "history", "ref": "first"})
    newest = await reader.next_of("history")
    assert (newest["room"], newest["more"], newest["ref"]) == ("paged", True, "first")
    assert [e["id"] for e in newest["events"]] == list(range(73, 123))
    seen = newest["events"]
    while True:  # page back to the beginning
        await reader.send_json(
            {"type": "history", "before": seen[0]["id"], "limit": 100, "ref": "older"}
        )
        page = await reader.next_of("history")
        seen = page["events"] + seen
        if not page["more"]:
            break
    assert [e["id"] for e in seen] == list(range(1, 123))
    assert seen[0] == {
        "type": "join",
        "id": 1,
        "room": "paged",
        "name": "talker",
        "ts": seen[0]["ts"],
    }
    assert [e["text"] for e in seen if e["type"] == "message"] == [f"m{n}" for n in range(120)]
    # Below the first id there is nothing; far above the last, the newest.
    await reader.send_json({"type": "history", "before": 1})
    assert await reader.next_of("history") == {
        "type": "history",
        "room": "paged",
        "events": [],
        "more": False,
    }
    await reader.send_json({"type": "history", "before": 10**15, "limit": 2})
    top = await reader.next_of("history")
    assert ([e["id"] for e in top["events"]], top["more"]) == ([121, 122], True)


async def test_paging_reads_only_what_is_retained(start_server: StartServer) -> None:
    server = await start_server(rate_limit=0, history_limit=30)
    talker = await server.joined("talker", "short")
    for n in range(60):
        await talker.say(f"m{n}")
    await talker.send_json({"type": "history", "before": 50, "limit": 100})
    page = await talker.next_of("history")
    assert [e["id"] for e in page["events"]] == list(range(32, 50))  # 32..61 retained
    assert page["more"] is False


async def test_bad_history_requests_are_answered_and_the_session_goes_on(
    server: RunningServer,
) -> None:
    member = await server.joined("member")
    for fields in ({"before": 0}, {"limit": 500}, {"before": "x"}):
        await member.send_json({"type": "history", "ref": "bad", **fields})
        error = await member.next_of("error")
        assert (error["code"], error["ref"]) == ("bad_request", "bad")
    await member.say("still here")
    assert (await member.next_of("message"))["text"] == "still here"


async def test_history_requests_count_toward_the_rate_limit(
    start_server: StartServer, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_server(rate_limit=2.0, rate_burst=3)
    member = await server.joined("member")
    for n in range(5):
        await member.send_json({"type": "history", "limit": 1, "ref": f"p{n}"})
    # Refusals are written by the session at once, pages by the hub: the
    # two kinds may come in either order.
    answers = [await member.next_of("history", "error") for _ in range(5)]
    assert sorted(a["ref"] for a in answers if a["type"] == "history") == ["p0", "p1", "p2"]
    refused = sorted((a["ref"], a["code"]) for a in answers if a["type"] == "error")
    assert refused == [("p3", "rate_limited"), ("p4", "rate_limited")]


async def test_a_member_paging_without_reading_is_dropped_not_waited_for(
    start_server: StartServer,
) -> None:
    """Pages go into the requester's own send queue: one who asks for page
    after page and never reads fills it and is dropped as slow (1013); the
    others' events keep coming meanwhile."""
    server = await start_server(rate_limit=0, send_queue_size=16)
    talker = await server.joined("talker", "busy")
    for n in range(100):
        await talker.say(f"long enough to fill a page {n} " + "x" * 200)
    pager = await server.joined("pager", "busy", receive_buffer=4096)
    listener = await server.joined("listener", "busy")
    request = TextMessage(json.dumps({"type": "history", "limit": 100}))
    frames = b"".join(pager.ws.send(request) for _ in range(400))
    with trio.move_on_after(5):  # the server stops reading once it drops the pager
        await pager.send_raw(frames)
    with trio.fail_after(10):
        closed = await pager.closed()
    assert closed.code == 1013
    await talker.say("after")
    heard: list[dict[str, Any]] = []
    with trio.fail_after(10):
        while not (heard and heard[-1].get("text") == "after"):
            heard.append(await listener.next_event())
    leaves = [(e["name"], e["reason"]) for e in heard if e["type"] == "leave"]
    assert leaves == [("pager", "slow")]


async def test_pages_after_a_restart_are_what_the_file_retained(
    start_server: StartServer, tmp_path: Path
) -> None:
    db = str(tmp_path / "history.db")
    first = await start_server(rate_limit=0, history_limit=30, db=db)
    talker = await first.joined("talker", "kept")
    for n in range(40):
        await talker.say(f"m{n}")
    while (await talker.next_event()).get("text") != "m39":
        pass
    await talker.send_json({"type": "history", "limit": 100})
    before_restart = await talker.next_of("history")
    await first.stop()
    second = await start_server(rate_limit=0, history_limit=30, db=db)
    reader = await second.joined("reader", "kept")  # id 43, after talker's leave (42)
    await reader.send_json({"type": "history", "before": 42, "limit": 100})
    after_restart = await reader.next_of("history")
    assert [e["id"] for e in before_restart["events"]] == list(range(12, 42))
    # 30 retained: 14..43 now (the talker's leave at shutdown is 42, the
    # reader's join 43), so below 42 the file gives back 14..41, unchanged.
    assert after_restart["events"] == before_restart["events"][2:]
    assert after_restart["more"] is False
