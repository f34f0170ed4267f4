"""Logs and metrics that explain: JSON log lines, the line each connection
leaves when it ends, and the `/metrics` series an operator watches."""

from __future__ import annotations

import json
import logging
import re
import signal
import sys

import pytest
import trio
from conftest import RunningServer, StartServer, wait_until
from processes import serving
from system_programs import system_program
from wsclient import RawClient, http_request
from wsproto.events import CloseConnection

from trio_chat import __version__
from trio_chat.core.histogram import Histogram
from trio_chat.server.logs import JsonFormatter, utc_timestamp

SECRET_TEXT = "the launch code is 0000"
TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
END_FIELDS = {
    "event",
    "client",
    "member",
    "room",
    "duration_s",
    "frames_in",
    "bytes_in",
    "frames_out",
    "bytes_out",
    "reason",
    "close_code",
}


# -- the JSON formatter --------------------------------------------------------------------


def record(text: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("trio_chat.test", logging.WARNING, __file__, 1, text, args, None)
    made.__dict__.update(extra)
    made.created = 1_800_000_000.0425
    return made


def test_json_lines_have_the_stable_keys_first() -> None:
    line = JsonFormatter().format(record("%d clients", 3, client="1.2.3.4:5"))
    assert "\n" not in line
    parsed = json.loads(line)
    assert list(parsed)[:4] == ["ts", "level", "logger", "message"]
    assert parsed == {
        "ts": "2027-01-15T08:00:00.042Z",
        "level": "WARNING",
        "logger": "trio_chat.test",
        "message": "3 clients",
        "client": "1.2.3.4:5",
    }


def test_json_lines_carry_exceptions_as_one_string_and_odd_values_as_text() -> None:
    def fail() -> None:
        raise ValueError("boom\nsecond line")

    try:
        fail()
    except ValueError:
        made = record("failed", level=object, ts="shadow")
        made.exc_info = sys.exc_info()
    parsed = json.loads(JsonFormatter({"worker": 2}).format(made))
    assert parsed["message"] == "failed"
    assert parsed["extra_level"].startswith("<class")  # neither shadows a stable key
    assert parsed["extra_ts"] == "shadow"
    assert parsed["worker"] == 2
    assert parsed["exc"].startswith("Traceback")
    assert "ValueError: boom" in parsed["exc"]


def test_timestamps_are_utc_with_milliseconds() -> None:
    assert utc_timestamp(0.0) == "1970-01-01T00:00:00.000Z"
    assert utc_timestamp(86399.9999) == "1970-01-01T23:59:59.999Z"


# -- the connection's last line -------------------------------------------------------------


async def goodbye(client: RawClient) -> None:
    """Close with 1000, as a client that leaves does."""
    await client.send_raw(client.ws.send(CloseConnection(code=1000)))


async def test_a_connection_ends_with_one_info_line_and_no_message_text(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_chat")
    with trio.fail_after(10):
        alice = await server.joined("alice", "ops")
        await alice.say(SECRET_TEXT)
        assert (await alice.next_of("message"))["text"] == SECRET_TEXT
        await goodbye(alice)

        def ended() -> list[logging.LogRecord]:
            return [r for r in caplog.records if getattr(r, "event", "") == "connection_end"]

        await wait_until(lambda: bool(ended()))
    (line,) = ended()
    assert line.levelno == logging.INFO
    fields = {key: getattr(line, key) for key in END_FIELDS}
    assert fields["member"] == "alice"
    assert fields["room"] == "ops"
    assert fields["reason"] == "quit"
    assert fields["close_code"] == 1000
    assert fields["client"].startswith("127.0.0.1:")
    assert fields["duration_s"] >= 0
    assert fields["frames_in"] >= 3  # hello, say, close
    assert fields["frames_out"] >= 2  # events, close
    assert fields["bytes_in"] > len(SECRET_TEXT)
    assert fields["bytes_out"] > len(SECRET_TEXT)
    message = line.getMessage()
    assert "'alice'@ops: connection ended (quit, close 1000)" in message
    assert f"in {fields['frames_in']} frames, {fields['bytes_in']} bytes" in message
    info = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert not [r for r in info if SECRET_TEXT in r.getMessage()]


async def test_json_logs_of_the_program() -> None:
    """`serve --log-format json`: every stderr line is one object with the
    stable keys, the connection's end included."""
    async with serving("--log-format", "json") as (process, port, output):
        with trio.fail_after(10):
            client = await RawClient.connect(port)
            await client.hello("bob", "json-room")
            await client.say(SECRET_TEXT)
            await client.next_of("message")
            await goodbye(client)
            await wait_until(lambda: b"connection_end" in b"".join(output))
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
        await client.aclose()
    text = b"".join(output).decode()
    lines = [json.loads(line) for line in text.splitlines()]
    for line in lines:
        assert list(line)[:4] == ["ts", "level", "logger", "message"]
        assert TS.fullmatch(line["ts"])
    (end,) = [line for line in lines if line.get("event") == "connection_end"]
    assert set(end) >= END_FIELDS
    assert (end["member"], end["room"], end["reason"]) == ("bob", "json-room", "quit")
    assert SECRET_TEXT not in text
    assert any("shutdown complete" in line["message"] for line in lines)


# -- metrics ---------------------------------------------------------------------------------


def samples(body: bytes) -> dict[str, float]:
    """Every sample of a scrape, by its full name with labels."""
    found: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


async def scrape(server: RunningServer) -> dict[str, float]:
    return samples((await http_request(server.port, "/metrics")).body)


async def scrape_until(server: RunningServer, name: str, least: float) -> dict[str, float]:
    """Scrape until the series `name` reaches `least` (state the server's
    tasks fill in between scrapes)."""
    while True:
        found = await scrape(server)
        if found.get(name, 0) >= least:
            return found
        await trio.sleep(0.05)


async def test_new_series_move_with_a_join_a_say_and_a_leave(
    start_server: StartServer, tmp_path: object
) -> None:
    server = await start_server(rate_limit=0, db=str(tmp_path) + "/chat.db")
    before = await scrape(server)
    assert before[f'trio_chat_build_info{{python="{_python()}",version="{__version__}"}}'] == 1
    assert before["trio_chat_joins_total"] == 0
    assert before['trio_chat_leaves_total{reason="quit"}'] == 0
    assert before['trio_chat_refused_upgrades_total{reason="origin"}'] == 0
    with trio.fail_after(10):
        alice = await server.joined("alice")
        bob = await server.joined("bob")
        await alice.send_json({"type": "say", "text": ""})  # refused: empty_text
        assert (await alice.next_of("error"))["code"] == "empty_text"
        await alice.say("hello")
        await bob.next_of("message")
        await goodbye(alice)
        await bob.next_of("leave")
        with pytest.raises(Exception, match="403"):
            await server.client(headers=[(b"Origin", b"http://elsewhere.example")])
        # The store commits within its batch delay: wait for the commit to show.
        after = await scrape_until(server, "trio_chat_history_commit_seconds_count", 1)
    assert after["trio_chat_joins_total"] == 2
    assert after['trio_chat_leaves_total{reason="quit"}'] == 1
    assert after['trio_chat_client_errors_total{code="empty_text"}'] == 1
    assert after['trio_chat_refused_upgrades_total{reason="origin"}'] == 1
    for series in (
        "trio_chat_websocket_frames_sent_total",
        "trio_chat_websocket_sent_bytes_total",
        "trio_chat_websocket_frames_received_total",
        "trio_chat_websocket_received_bytes_total",
        "trio_chat_delivery_latency_seconds_count",
        'trio_chat_delivery_latency_seconds_bucket{le="+Inf"}',
        "trio_chat_history_commit_events_sum",
    ):
        assert after[series] > before.get(series, 0), series
    assert after["trio_chat_ping_timeouts_total"] == 0
    assert "trio_chat_send_queue_max_events" in after
    assert after["trio_chat_history_commit_events_sum"] >= 4  # 2 joins, a message, a leave


def _python() -> str:
    import platform  # noqa: PLC0415 (only this helper needs it)

    return platform.python_version()


async def test_a_ping_timeout_is_counted(
    start_server: StartServer, mock_clock: trio.testing.MockClock
) -> None:
    mock_clock.autojump_threshold = 0.01
    server = await start_server(ping_period=1.0, pong_wait=2.0)
    with trio.fail_after(30):
        await server.joined("mute", auto_pong=False)
        await scrape_until(server, "trio_chat_ping_timeouts_total", 1)
    assert (await scrape(server))['trio_chat_leaves_total{reason="timeout"}'] == 1


def promtool() -> str:
    """The path of `promtool`, or skip (fail under CI) when it is missing."""
    return system_program("promtool", "prometheus")


async def test_promtool_accepts_the_scrape(start_server: StartServer, tmp_path: object) -> None:
    checker = promtool()
    server = await start_server(rate_limit=0, db=str(tmp_path) + "/chat.db")
    with trio.fail_after(10):
        alice = await server.joined("alice")
        await alice.say("hi")
        await alice.next_of("message")
        await alice.send_json({"type": "say", "text": ""})
        await alice.next_of("error")
    body = (await http_request(server.port, "/metrics")).body
    with trio.fail_after(30):
        result = await trio.run_process(
            [checker, "check", "metrics"],
            stdin=body,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


def test_histogram_buckets_are_cumulative_upper_bounds() -> None:
    histogram = Histogram([1, 5, 10])
    for value in (0.5, 1, 3, 10, 11):
        histogram.observe(value)
    assert histogram.cumulative() == [(1, 2), (5, 3), (10, 4), (float("inf"), 5)]
    assert histogram.total == 5
    assert histogram.sum == 25.5
