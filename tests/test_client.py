"""The pure client core: URLs, client framing, frame splitting, the transcript.

No server, no sockets: these are the rules every trio-chat client shares
(the terminal client, the load generator, the tests' raw client), checked
directly, the transcript with hypothesis.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode

from trio_chat.client.events import split_frame
from trio_chat.client.lineedit import (
    DIM,
    MAX_PENDING_SHOWN,
    NORMAL,
    PROMPT,
    EndOfInput,
    LineEditor,
    Submitted,
    cell_width,
    fit,
    live_rows,
    repaint,
)
from trio_chat.client.outbox import Outbox
from trio_chat.client.pacing import RECONNECT_CAP, Pacer, reconnect_delay
from trio_chat.client.transcript import MISSING_LIMIT, Transcript
from trio_chat.client.url import ServerUrl, ServerUrlError, parse_server_url
from trio_chat.client.websocket import (
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_TEXT,
    ConnectFailure,
    FrameReader,
    FramingError,
    check_handshake,
    close_code,
    encode_frame,
    handshake_request,
)

# -- the server's URL ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("ws://127.0.0.1:8080/ws", ServerUrl("127.0.0.1", 8080, "/ws")),
        ("ws://chat.example", ServerUrl("chat.example", 80, "/ws")),
        (
            "wss://chat.example/custom/socket",
            ServerUrl("chat.example", 443, "/custom/socket", True),
        ),
        ("https://chat.example/team/", ServerUrl("chat.example", 443, "/team/ws", True)),
        ("http://Chat.Example:9000/", ServerUrl("chat.example", 9000, "/ws")),
        ("localhost", ServerUrl("localhost", 8080, "/ws")),
        (":9000", ServerUrl("127.0.0.1", 9000, "/ws")),
        ("[::1]:9000", ServerUrl("::1", 9000, "/ws")),
        ("ws://a:1/ws?x=1", ServerUrl("a", 1, "/ws", query="x=1")),
    ],
)
def test_server_urls(text: str, parsed: ServerUrl) -> None:
    assert parse_server_url(text) == parsed


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("ftp://a/", "use a ws://"),
        ("ws://:8080/ws", "no host"),
        ("ws://a:99999/ws", "port"),
        ("a:http", "port"),
    ],
)
def test_bad_server_urls(text: str, says: str) -> None:
    with pytest.raises(ServerUrlError, match=says):
        parse_server_url(text)
    assert issubclass(ServerUrlError, ValueError)  # argparse-friendly


def test_url_leaves_out_the_default_port() -> None:
    assert ServerUrl("chat.example", 443, "/ws", secure=True).url == "wss://chat.example/ws"
    assert ServerUrl("chat.example", 80).url == "ws://chat.example/ws"
    assert ServerUrl("chat.example", 443).url == "ws://chat.example:443/ws"
    assert ServerUrl("a", 1, "/ws", query="x=1").url == "ws://a:1/ws?x=1"
    assert ServerUrl("a", 1, "/ws", query="x=1").resource == "/ws?x=1"


# -- the WebSocket handshake and frames ----------------------------------------


def test_ipv6_hosts_are_bracketed() -> None:
    assert ServerUrl("::1", 8080).url == "ws://[::1]:8080/ws"
    assert handshake_request(ServerUrl("::1", 8080), b"k").startswith(
        b"GET /ws HTTP/1.1\r\nHost: [::1]:8080\r\n"
    )
    assert handshake_request(ServerUrl("a", 1, query="k=v"), b"k").startswith(
        b"GET /ws?k=v HTTP/1.1\r\nHost: a:1\r\n"
    )


def server_frame(opcode: int, payload: bytes, *, final: bool = True) -> bytes:
    """A frame as a server sends it: unmasked."""
    first = (0x80 if final else 0) | opcode
    if len(payload) < 126:
        head = bytes((first, len(payload)))
    elif len(payload) < 65536:
        head = bytes((first, 126)) + len(payload).to_bytes(2, "big")
    else:
        head = bytes((first, 127)) + len(payload).to_bytes(8, "big")
    return head + payload


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_client_frames_are_masked_and_decode(size: int) -> None:
    payload = bytes(97 + i % 26 for i in range(size))
    data = encode_frame(OP_TEXT, payload)
    assert data[1] & 0x80  # the mask bit
    decoder = FrameProtocol(client=False, extensions=[])  # wsproto, as the server uses it
    decoder.receive_bytes(data)
    frames = list(decoder.received_frames())
    assert len(frames) == 1
    assert frames[0].opcode is Opcode.TEXT
    assert frames[0].payload == payload.decode("ascii")


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000, 10**6])
def test_frame_reader_splits_and_reassembles(chunk: int) -> None:
    big = b"x" * 70_000
    stream = (
        server_frame(OP_TEXT, b"one")
        + server_frame(OP_TEXT, b"tw", final=False)
        + server_frame(OP_PING, b"p")  # a control frame between fragments
        + server_frame(OP_CONTINUATION, b"o")
        + server_frame(OP_TEXT, big)
        + server_frame(OP_TEXT, b"")
        + server_frame(OP_CLOSE, (1013).to_bytes(2, "big") + b"slow")
    )
    reader = FrameReader()
    out: list[tuple[int, bytes]] = []
    for at in range(0, len(stream), chunk):
        out.extend(reader.feed(stream[at : at + chunk]))
    assert out == [
        (OP_TEXT, b"one"),
        (OP_PING, b"p"),
        (OP_TEXT, b"two"),
        (OP_TEXT, big),
        (OP_TEXT, b""),
        (OP_CLOSE, (1013).to_bytes(2, "big") + b"slow"),
    ]
    assert close_code(out[-1][1]) == 1013
    assert close_code(b"") == 1005


@pytest.mark.parametrize(
    "data",
    [
        encode_frame(OP_TEXT, b"masked"),
        bytes((0x81 | 0x40, 1)) + b"x",  # RSV1 without an extension
        server_frame(OP_CONTINUATION, b"x"),
        server_frame(OP_TEXT, b"a", final=False) + server_frame(OP_TEXT, b"b"),
    ],
)
def test_frame_reader_refuses_broken_framing(data: bytes) -> None:
    with pytest.raises(FramingError):
        FrameReader().feed(data)


def test_handshake_checks() -> None:
    key = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's example
    check_handshake(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
        key,
    )
    with pytest.raises(ConnectFailure, match="HTTP 503"):
        check_handshake(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0", key)
    with pytest.raises(ConnectFailure, match="Accept"):
        check_handshake(b"HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: nope", key)
    with pytest.raises(ConnectFailure, match="not an HTTP response"):
        check_handshake(b"SSH-2.0-OpenSSH", key)


# -- the transcript ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ids", "fresh", "duplicates", "violations", "missing"),
    [
        ([11, 12, 13], [True] * 3, 0, 0, 0),
        ([11, 11, 12], [True, False, True], 1, 0, 0),
        ([11, 13, 14], [True] * 3, 0, 1, 1),  # 12 skipped: a gap
        ([11, 13, 12, 14], [True] * 4, 0, 2, 0),  # 12 late: the gap, then out of order
        ([11, 13, 12, 12], [True, True, True, False], 1, 2, 0),
        ([9, 10], [False, False], 2, 0, 0),  # at or before the join: seen already
    ],
)
def test_transcript_counts(
    ids: list[int], fresh: list[bool], duplicates: int, violations: int, missing: int
) -> None:
    check = Transcript(10)
    assert [check.observe(i) for i in ids] == fresh
    assert (check.duplicates, check.order_violations, check.skipped) == (
        duplicates,
        violations,
        missing,
    )


@given(st.lists(st.integers(1, 30), max_size=60))
def test_transcript_properties(ids: list[int]) -> None:
    check = Transcript(0)
    fresh = [check.observe(i) for i in ids]
    first_seen = [i not in ids[:k] for k, i in enumerate(ids)]
    assert fresh == first_seen  # new exactly on first sight
    assert check.duplicates == len(ids) - len(set(ids))
    in_order = [i for i, new in zip(ids, fresh, strict=True) if new]
    assert (check.order_violations == 0) == (in_order == list(range(1, len(in_order) + 1)))
    assert check.skipped == (max(ids, default=0) - len(set(ids)))


def test_a_transcript_without_since_takes_the_first_id_as_it_comes() -> None:
    assert Transcript().since is None
    transcript = Transcript()
    assert transcript.observe(951)  # a replay starts wherever the history does
    assert transcript.observe(952)
    assert not transcript.observe(951)
    assert (transcript.since, transcript.order_violations, transcript.skipped) == (952, 0, 0)


def test_unnumbered_events_are_always_new() -> None:
    transcript = Transcript(5)
    assert transcript.observe_event({"type": "typing", "name": "a"})
    assert transcript.observe_event({"type": "error", "code": "rate_limited"})
    assert not transcript.observe_event({"type": "message", "id": 5})
    assert transcript.observe_event({"type": "message", "id": 6})
    assert not transcript.observe_event({"type": "message", "id": 6})
    assert transcript.observe_event({"type": "message", "id": True})  # not a number
    assert transcript.since == 6


@pytest.mark.parametrize(
    ("room_last_id", "renumbered", "since"),
    [
        (13, False, 12),  # our own join follows what we saw
        (12, True, None),  # at or below what we saw: the room started over
        (3, True, None),
        (None, False, 12),
        ("3", False, 12),
    ],
)
def test_a_room_that_started_over_resets_the_transcript(
    room_last_id: object, renumbered: bool, since: int | None
) -> None:
    transcript = Transcript(10)
    transcript.observe(12)  # 11 missing
    assert transcript.renumbered(room_last_id) is renumbered
    if renumbered:
        assert (transcript.since, transcript.missing) == (None, set())
        assert transcript.observe(1)
    else:
        assert (transcript.since, transcript.missing) == (since, {11})


@pytest.mark.parametrize(
    ("epoch", "room_last_id", "renumbered"),
    [
        ("e1", 13, False),  # the same numbering, carrying on
        ("e2", 13, True),  # a new numbering, whatever its ids
        ("e1", 12, True),  # no newer than what we saw: started over
        (None, 13, False),  # a server that sends no epoch
        (7, 13, False),  # not an epoch: ignored
    ],
)
def test_a_new_epoch_is_a_new_numbering(
    epoch: object, room_last_id: int, renumbered: bool
) -> None:
    transcript = Transcript(12, "e1")
    assert transcript.renumbered(room_last_id, epoch) is renumbered
    assert transcript.since == (None if renumbered else 12)
    assert transcript.epoch == (epoch if isinstance(epoch, str) else "e1")


def test_the_first_welcome_names_the_epoch() -> None:
    transcript = Transcript()
    assert not transcript.renumbered(5, "e9")
    assert transcript.epoch == "e9"


def test_a_transcript_before_any_event_is_never_renumbered() -> None:
    transcript = Transcript()
    assert not transcript.renumbered(1)
    assert transcript.since is None


def test_missing_ids_are_bounded() -> None:
    transcript = Transcript(0)
    assert transcript.observe(MISSING_LIMIT + 10)
    assert transcript.missing == set()  # too many to remember
    assert transcript.skipped == MISSING_LIMIT + 9
    assert transcript.observe(MISSING_LIMIT + 12)
    assert transcript.missing == {MISSING_LIMIT + 11}


@given(st.integers(0, 50), st.lists(st.integers(1, 60), max_size=60))
def test_since_is_the_highest_id_seen(since: int, ids: list[int]) -> None:
    transcript = Transcript(since)
    for ident in ids:
        transcript.observe(ident)
    assert transcript.since == max([since, *ids])


# -- splitting a frame into events ---------------------------------------------


def test_a_frame_splits_into_its_events_in_order() -> None:
    lines = [{"type": "message", "id": i, "text": "a\nb"} for i in range(1, 4)]
    frame = "\n".join(json.dumps(line) for line in lines)
    assert split_frame(frame) == (lines, [])


def test_lines_that_are_not_json_objects_are_set_apart() -> None:
    frame = '{"type": "join", "id": 1}\nnot json\n[1, 2]\n\n{"type": "leave", "id": 2}'
    events, bad = split_frame(frame)
    assert events == [{"type": "join", "id": 1}, {"type": "leave", "id": 2}]
    assert bad == ["not json", "[1, 2]", ""]


# -- the line editor and the live area -----------------------------------------

KEYS = st.sampled_from(
    [
        *("a", "b", " ", "é", "語", "\x7f", "\x01", "\x05", "\x0b", "\x15", "\x17", "\x04"),
        *("\x1b[D", "\x1b[C", "\x1b[A", "\x1b[B", "\x1b[3~", "\x1bOH", "\x1b[F", "\r", "\x1b"),
    ]
)


@given(st.lists(KEYS, max_size=40), st.data())
def test_line_editor_is_the_same_however_the_keys_are_split(
    keys: list[str], data: st.DataObject
) -> None:
    typed = "".join(keys)
    whole, pieces = LineEditor(), LineEditor()
    expected = whole.feed(typed)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(typed)), max_size=6)))
    actions = []
    for start, end in zip([0, *cuts], [*cuts, len(typed)], strict=True):
        actions += pieces.feed(typed[start:end])
    assert actions == expected
    assert (pieces.text, pieces.cursor) == (whole.text, whole.cursor)
    assert 0 <= whole.cursor <= len(whole.text)


@given(st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=200), st.data())
def test_input_line_fits_the_terminal_and_shows_the_cursor(text: str, data: st.DataObject) -> None:
    editor = LineEditor()
    editor.feed(text)
    editor.cursor = data.draw(st.integers(0, len(editor.text)))
    width = data.draw(st.integers(10, 120))
    line, column = editor.render(width)
    assert sum(cell_width(char) for char in line) < width
    assert len(PROMPT) <= column < width


def test_line_editor_keys() -> None:
    editor = LineEditor()
    assert editor.feed("hello wrld\x1b[D\x1b[D\x1b[Do") == []
    assert (editor.text, editor.cursor) == ("hello world", 8)
    editor.feed("\x7f\x7f")  # backspace twice: "wo" goes
    assert (editor.text, editor.cursor) == ("hello rld", 6)
    editor.feed("wo")
    assert editor.feed("\x05 again\x17\x17") == []
    assert editor.text == "hello "
    assert editor.feed("there\r") == [Submitted("hello there")]
    assert (editor.text, editor.cursor) == ("", 0)
    assert editor.feed("\x1b[A") == []  # up: the line typed before
    assert editor.text == "hello there"
    assert editor.feed("\x1b[B\x04") == [EndOfInput()]  # Ctrl-D on an empty line


def test_repaint_prints_above_the_live_area() -> None:
    rows = live_rows(["first", "second"], "> half", 80)
    assert rows == [f"{DIM}(pending) first{NORMAL}", f"{DIM}(pending) second{NORMAL}", "> half"]
    # From an input line alone: erase it, print the line, draw the area again.
    assert repaint(1, ["12:00:00 dave: hi"], rows, 6) == (
        "\r\x1b[J12:00:00 dave: hi\n" + "\n".join(rows) + "\r\x1b[6C"
    )
    assert repaint(3, [], ["> "], 2) == "\r\x1b[2A\x1b[J> \r\x1b[2C"
    many = live_rows([str(n) for n in range(10)], "> ", 80)
    assert len(many) == MAX_PENDING_SHOWN + 2
    assert "(and 7 more pending)" in many[-2]
    assert fit("x" * 100, 20) == "x" * 18 + "…"


# -- the outbox, the pacer and the reconnect schedule ---------------------------


def test_outbox_keeps_refs_and_confirms_once() -> None:
    outbox = Outbox("p")
    one, two = outbox.add("one"), outbox.add("two")
    assert (one.ref, two.ref) == ("p-1", "p-2")
    assert outbox.head is one
    one.sent = True
    outbox.connection_lost()  # in flight on a connection that ended: it goes again
    assert outbox.head is one
    assert (one.sent, one.ref) == (False, "p-1")
    assert outbox.confirm("p-1") is one
    assert outbox.confirm("p-1") is None  # a repeated echo confirms nothing
    assert outbox.confirm("someone else's") is None
    assert [line.text for line in outbox] == ["two"]
    assert (outbox.confirmed, len(outbox)) == (1, 1)
    assert two.retry_later(10.0) == 0.25
    assert two.retry_later(10.0) == 0.5
    assert (two.sent, two.not_before) == (False, 10.5)


def send_all_paced(lines: int, rate: float, burst: int) -> tuple[float, int]:
    """A stop-and-wait sender with a `Pacer` against a server's token bucket
    (`rate`, `burst`), 1 ms round trips: the time all lines took, and the
    refusals."""
    pacer, now = Pacer(), 0.0
    tokens, updated = float(burst), 0.0
    sent = 0
    while sent < lines:
        now = pacer.ready_at(now)
        pacer.spend(now)
        arrival = now + 0.0005
        tokens = min(float(burst), tokens + (arrival - updated) * rate)
        updated = arrival
        now += 0.001
        if tokens >= 1.0:
            tokens -= 1.0
            sent += 1
        else:
            pacer.refused(now)
    return now, pacer.refusals


def test_pacer_sends_at_the_default_limit_with_one_refusal() -> None:
    elapsed, refusals = send_all_paced(200, 10.0, 20)
    assert refusals == 1
    assert 18.0 <= elapsed < 18.5  # 20 at once, then 180 at 10/s: the floor


@pytest.mark.parametrize(("rate", "burst"), [(1.0, 1), (3.0, 5), (0.5, 2)])
def test_pacer_finds_a_stricter_limit_in_a_few_refusals(rate: float, burst: int) -> None:
    elapsed, refusals = send_all_paced(60, rate, burst)
    assert refusals <= 8
    assert elapsed < (60 - burst) / rate * 2.5


def test_pacer_is_free_until_the_first_refusal() -> None:
    pacer = Pacer()
    for now in range(100):
        assert pacer.ready_at(now / 1000) == now / 1000
        pacer.spend(now / 1000)


@given(st.integers(1, 100), st.floats(0.0, 1.0))
def test_reconnect_schedule(failures: int, fraction: float) -> None:
    def uniform(low: float, high: float) -> float:
        return low + (high - low) * fraction

    delay = reconnect_delay(failures, uniform)
    assert 0 < delay <= RECONNECT_CAP
    if failures == 1:
        assert delay <= 0.5  # the first attempt comes at once, give or take jitter
    else:
        assert delay >= reconnect_delay(failures - 1, lambda low, _high: low)


def test_reconnect_schedule_in_numbers() -> None:
    highest = [reconnect_delay(n, lambda _low, high: high) for n in range(1, 8)]
    assert highest == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    lowest = [reconnect_delay(n, lambda low, _high: low) for n in range(1, 5)]
    assert lowest == [0.05, 0.5, 1.0, 2.0]


def test_transcript_takes_a_resumed_welcome_with_nothing_new() -> None:
    transcript = Transcript()
    transcript.renumbered(5, "e1")
    assert all(transcript.observe(ident) for ident in range(1, 6))
    assert not transcript.renumbered(5, "e1", resuming=True)  # nothing happened meanwhile
    assert transcript.since == 5
    assert transcript.renumbered(5, "e1")  # a join that is not above ours: history lost
