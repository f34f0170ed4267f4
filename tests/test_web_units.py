"""Unit tests of the web client's pure modules, run in Chromium.

`web/transcript.js` (event ids, `since`, dedupe of replays, gaps, members,
our messages not echoed yet) and `web/protocol.js` (the checks the client
makes before the server does) use no DOM and no socket, so a test imports
them as the page does, from a real `trio-chat serve`, calls them on cases
with `page.evaluate`, and checks what they return. One server and one page
serve the whole module. Like the browser tests, these are skipped without
Playwright or Chromium, except under CI; `nox -s browser` runs them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    from playwright.sync_api import Page
except ImportError:  # the `browser` dependency group is not installed
    if os.environ.get("CI"):
        raise
    pytest.skip(
        "playwright is not installed (pip install playwright, or nox -s browser)",
        allow_module_level=True,
    )
from browser_helpers import DESKTOP, TIMEOUT_MS, ErrorLog, ServerProcess, chromium
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_chat.core.protocol import ProtocolError, normalize_name


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    """A page of the client, from which the tests import its modules."""
    server = ServerProcess(db=tmp_path_factory.mktemp("units") / "chat.db")
    server.start()
    errors = ErrorLog()
    try:
        with chromium() as browser:
            context = browser.new_context(viewport=DESKTOP)
            context.set_default_timeout(TIMEOUT_MS)
            opened = context.new_page()
            errors.watch(opened, "units")
            response = opened.goto(server.url)
            assert response is not None
            assert response.ok, response.status
            yield opened
            context.close()
    finally:
        assert server.stop() == 0, "\n".join(server.output)
    errors.check()


WEB = Path(__file__).resolve().parents[1] / "web"


def test_every_module_is_served_as_javascript(page: Page) -> None:
    """The installed server serves each module of the checkout's `web/`."""
    modules = sorted(path.name for path in WEB.glob("*.js"))
    assert {"app.js", "transcript.js", "protocol.js"} <= set(modules), modules
    for module in modules:
        response = page.request.get(page.url + module)
        assert response.ok, (module, response.status)
        assert re.match(r"(text|application)/javascript\b", response.headers["content-type"]), (
            module,
            response.headers["content-type"],
        )
        assert response.body() == (WEB / module).read_bytes(), module


# ---------------------------------------------------------------------------
# transcript.js: Transcript


def welcome(
    last_id: int, members: list[str], recovered: bool | None = None, epoch: str | None = None
) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "welcome", "room": "lobby", "name": "alice"}
    event |= {"members": members, "last_id": last_id}
    if epoch is not None:
        event["epoch"] = epoch
    if recovered is not None:
        event["recovered"] = recovered
    return event


def message(event_id: Any, name: str = "bob", text: str = "hi") -> dict[str, Any]:
    return {"type": "message", "id": event_id, "room": "lobby", "name": name, "text": text}


def joined(event_id: int, name: str) -> dict[str, Any]:
    return {"type": "join", "id": event_id, "room": "lobby", "name": name}


def left(event_id: int, name: str) -> dict[str, Any]:
    return {"type": "leave", "id": event_id, "room": "lobby", "name": name, "reason": "quit"}


def shown(**changes: Any) -> dict[str, Any]:
    """A decision to show an event: nothing special unless `changes` say so."""
    decision = {
        "show": True,
        "notice": None,
        "live": False,
        "replayEnd": False,
        "ownJoin": False,
        "initial": False,
        "pendingLost": False,
    }
    for key in changes:
        assert key in decision, key
    if changes.get("ownJoin"):
        decision["replayEnd"] = True  # our own join ends the replay
    return decision | changes


DUPLICATE = {"show": False, "why": "duplicate"}
NO_ID = {"show": False, "why": "no id"}
FIRST = {"first": True, "resumed": False, "recovered": True, "replayOver": False}
RESUMED = {"first": False, "resumed": True, "recovered": True, "replayOver": False}
NOT_RECOVERED = {"first": False, "resumed": True, "recovered": False, "replayOver": False}


def run_transcript(page: Page, *steps: Any) -> list[Any]:
    """Feed one new Transcript `steps`, and return what each returned.

    A step is an event (its type says whether it goes to `welcome()` or to
    `stored()`), or the name of what to read: "since", "epoch", "resume",
    "dedupes" or "members", or "forget" (forgetResume).
    """
    results: list[Any] = page.evaluate(
        """async (steps) => {
            const { Transcript } = await import("/transcript.js");
            const transcript = new Transcript();
            return steps.map((step) => {
                if (step === "since") return transcript.since();
                if (step === "epoch") return transcript.epoch();
                if (step === "resume") return transcript.resume();
                if (step === "dedupes") return transcript.dedupesRefs;
                if (step === "forget") return transcript.forgetResume() ?? null;
                if (step === "members") return transcript.members;
                if (step.type === "welcome") return transcript.welcome(step);
                return transcript.stored(step);
            });
        }""",
        list(steps),
    )
    return results


def test_first_welcome_shows_history_and_keeps_the_member_snapshot(page: Page) -> None:
    results = run_transcript(
        page,
        "since",
        welcome(7, ["bob", "alice"]),
        message(4),
        joined(5, "dave"),  # history: members come from the welcome only
        left(6, "bob"),
        joined(7, "alice"),  # our own join ends the replay
        "since",
        "members",
    )
    assert results == [
        None,  # the first hello carries no `since`
        FIRST,
        shown(initial=True),
        shown(initial=True),
        shown(initial=True),
        shown(initial=True, ownJoin=True),
        7,
        ["bob", "alice"],
    ]


def test_live_joins_and_leaves_change_the_members(page: Page) -> None:
    results = run_transcript(
        page,
        welcome(3, ["alice"]),
        joined(3, "alice"),
        joined(4, "bob"),
        "members",
        joined(5, "bob"),  # already listed: listed once
        message(6),
        left(7, "alice-not-here"),
        "members",
        left(8, "bob"),
        "members",
    )
    assert results == [
        FIRST,
        shown(initial=True, ownJoin=True),
        shown(live=True),
        ["alice", "bob"],
        shown(live=True),
        shown(live=True),
        shown(live=True),
        ["alice", "bob"],
        shown(live=True),
        ["alice"],
    ]


def test_resume_skips_what_was_shown_and_ends_the_replay_at_our_join(page: Page) -> None:
    results = run_transcript(
        page,
        welcome(3, ["alice", "bob"]),
        joined(3, "alice"),
        message(4),
        message(5),
        "since",
        # Reconnected with since=5; the replay overlaps what was shown.
        welcome(9, ["bob", "alice"], recovered=True),
        message(4),
        message(5),
        message(6),
        left(7, "alice"),  # our previous connection, noticed gone: history
        message(8),
        joined(9, "alice"),
        "since",
        "members",
        message(9),  # a repeat on the live path is a duplicate too
        message(10),
        "since",
    )
    assert results == [
        FIRST,
        shown(initial=True, ownJoin=True),
        shown(live=True),
        shown(live=True),
        5,
        RESUMED,
        DUPLICATE,
        DUPLICATE,
        shown(),
        shown(),
        shown(),
        shown(ownJoin=True, pendingLost=True),
        9,
        ["bob", "alice"],
        DUPLICATE,
        shown(live=True),
        10,
    ]


def test_a_jump_in_ids_comes_with_a_gap_notice(page: Page) -> None:
    results = run_transcript(
        page,
        welcome(2, ["alice"]),
        joined(2, "alice"),
        message(3),
        message(6),
        message(7),
        "since",
    )
    assert results == [
        FIRST,
        shown(initial=True, ownJoin=True),
        shown(live=True),
        shown(live=True, notice="gap"),
        shown(live=True),
        7,
    ]


def test_a_resume_that_lost_events_says_so_once(page: Page) -> None:
    results = run_transcript(
        page,
        welcome(2, ["alice"]),
        joined(2, "alice"),
        message(3),
        welcome(40, ["alice"], recovered=False),
        message(30),  # 4 to 29 are no longer retained
        message(31),
        joined(40, "alice"),  # a gap after the notice is a gap again
        "since",
    )
    assert results == [
        FIRST,
        shown(initial=True, ownJoin=True),
        shown(live=True),
        NOT_RECOVERED,
        shown(notice="lost"),
        shown(),
        # Not recovered: our unechoed messages may have been stored and lost.
        shown(notice="gap", ownJoin=True),
        40,
    ]


def test_ids_that_began_again_mean_the_server_lost_its_history(page: Page) -> None:
    results = run_transcript(
        page,
        welcome(20, ["alice"]),
        joined(20, "alice"),
        message(21),
        "since",
        welcome(2, ["bob", "alice"], recovered=False),
        joined(1, "bob"),
        joined(2, "alice"),
        message(3),
        "since",
        "members",
    )
    assert results == [
        FIRST,
        shown(initial=True, ownJoin=True),
        shown(live=True),
        21,
        NOT_RECOVERED,
        shown(notice="restarted"),
        shown(ownJoin=True),
        shown(live=True),
        3,
        ["bob", "alice"],
    ]


def test_a_new_epoch_means_the_server_lost_its_history(page: Page) -> None:
    results = run_transcript(
        page,
        "epoch",
        welcome(20, ["alice"], epoch="e1"),
        joined(20, "alice"),
        message(21),
        "epoch",
        welcome(30, ["bob", "alice"], recovered=False, epoch="e2"),
        joined(29, "bob"),  # above what we saw, yet of another numbering
        joined(30, "alice"),
        "since",
        "epoch",
    )
    assert results == [
        None,
        FIRST,
        shown(initial=True, ownJoin=True),
        shown(live=True),
        "e1",
        NOT_RECOVERED,
        shown(notice="restarted"),
        shown(ownJoin=True),
        30,
        "e2",
    ]


def test_the_same_epoch_and_lost_events_is_a_loss_not_a_restart(page: Page) -> None:
    results = run_transcript(
        page,
        welcome(20, ["alice"], epoch="e1"),
        joined(20, "alice"),
        welcome(90, ["alice"], recovered=False, epoch="e1"),
        message(80),
    )
    assert results[2:] == [
        NOT_RECOVERED,
        shown(notice="lost"),
    ]


def test_a_first_welcome_never_reports_a_loss(page: Page) -> None:
    results = run_transcript(page, welcome(5, ["alice"], recovered=False), joined(5, "alice"))
    assert results == [
        {"first": True, "resumed": False, "recovered": False, "replayOver": False},
        shown(initial=True, ownJoin=True),
    ]


def test_the_resume_secret_is_kept_from_the_last_welcome(page: Page) -> None:
    results = run_transcript(
        page,
        "resume",
        welcome(1, ["alice"]) | {"resume": "r-1"},
        "resume",
        "dedupes",
        welcome(1, ["alice"]) | {"resume": "r-2"},
        "resume",
        "forget",  # a hello carrying it was refused
        "resume",
        "dedupes",
        welcome(1, ["alice"]) | {"resume": "x" * 65},  # longer than a server takes
        "resume",
        "dedupes",
        welcome(1, ["alice"]),  # a server without resumes
        "resume",
        "dedupes",
    )
    assert results[:4] == [None, FIRST, "r-1", True]
    assert results[5:8] == ["r-2", None, None]
    assert results[8] is True
    assert results[10:12] == [None, True]
    assert results[13:] == [None, False]


def test_a_place_given_back_ends_the_replay_at_the_rooms_last_event(page: Page) -> None:
    """With `resume`, the server adds no join of ours: the replay ends with
    the event whose id is `last_id`, whatever it is, or at once when we saw
    it already."""
    results = run_transcript(
        page,
        welcome(3, ["alice", "bob"]) | {"resume": "r-1"},
        joined(3, "alice"),
        message(4),
        # Our place back, having seen everything: nothing to replay.
        welcome(4, ["alice", "bob"], recovered=True) | {"resume": "r-2"},
        message(5),
        "members",
        # Our place back after bob spoke and carol came: they are the replay.
        welcome(7, ["alice", "bob", "carol"], recovered=True) | {"resume": "r-3"},
        message(6),
        joined(7, "carol"),
        joined(8, "dave"),
        "members",
        # A loss: the replay still ends at `last_id`, with nothing to claim.
        welcome(20, ["alice"], recovered=False) | {"resume": "r-4"},
        message(19),
        message(20, name="alice"),
    )
    assert results == [
        FIRST,
        shown(initial=True, ownJoin=True),
        shown(live=True),
        RESUMED | {"replayOver": True},
        shown(live=True),
        ["alice", "bob"],
        RESUMED,
        shown(),
        shown(replayEnd=True, pendingLost=True),  # not our join: no "You are back"
        shown(live=True),
        ["alice", "bob", "carol", "dave"],
        NOT_RECOVERED,
        shown(notice="lost"),
        shown(replayEnd=True),
    ]


@pytest.mark.parametrize("event_id", [None, "7", 7.5, True, [7]])
def test_an_event_without_an_integer_id_is_not_shown(page: Page, event_id: Any) -> None:
    results = run_transcript(
        page,
        welcome(1, ["alice"]),
        joined(1, "alice"),
        message(event_id),
        {"type": "message", "name": "bob", "text": "no id at all"},
        "since",
        message(2),
    )
    assert results == [FIRST, shown(initial=True, ownJoin=True), NO_ID, NO_ID, 1, shown(live=True)]


@settings(max_examples=60, deadline=None)
@given(ids=st.lists(st.integers(min_value=1, max_value=30), max_size=25))
def test_since_is_always_the_highest_id_shown(page: Page, ids: list[int]) -> None:
    """Whatever order ids come in, each is shown at most once, in rising order."""
    results = run_transcript(page, welcome(1, ["alice"]), *[message(i) for i in ids], "since")
    decisions, since = results[1:-1], results[-1]
    highest = None
    for event_id, decision in zip(ids, decisions, strict=True):
        if highest is not None and event_id <= highest:
            assert decision == DUPLICATE, (ids, event_id)
            continue
        gap = highest is not None and event_id > highest + 1
        assert decision["show"], (ids, event_id)
        assert decision["notice"] == ("gap" if gap else None), (ids, event_id)
        assert decision["live"] == (event_id > 1), (ids, event_id)
        highest = event_id
    assert since == highest


# ---------------------------------------------------------------------------
# transcript.js: splitFrame and Pending


@pytest.mark.parametrize(
    ("frame", "events"),
    [
        ('{"type":"join","id":1}', [{"type": "join", "id": 1}]),
        # The server batches what is queued for a client: one event per line.
        ('{"id":1}\n{"id":2}\n{"id":3}', [{"id": 1}, {"id": 2}, {"id": 3}]),
        ('\n{"id":1}\n\n{"id":2}\n', [{"id": 1}, {"id": 2}]),
        ('{"id":1}\nnot json\n{"id":2}\n{"id":3', [{"id": 1}, {"id": 2}]),
        ('null\n1\n"text"\ntrue\n[{"id":1}]\n{"id":2}', [{"id": 2}]),
        ("", []),
    ],
)
def test_split_frame_keeps_the_json_objects_in_order(
    page: Page, frame: str, events: list[dict[str, Any]]
) -> None:
    parsed = page.evaluate(
        """async (frame) => (await import("/transcript.js")).splitFrame(frame)""", frame
    )
    assert parsed == events


def test_split_frame_ignores_binary_data(page: Page) -> None:
    parsed = page.evaluate(
        """async () => {
            const { splitFrame } = await import("/transcript.js");
            return [splitFrame(new ArrayBuffer(4)), splitFrame(new Blob(["{}"]))];
        }"""
    )
    assert parsed == [[], []]


def test_pending_keeps_our_messages_until_echoed_or_refused(page: Page) -> None:
    results = page.evaluate(
        """async () => {
            const { Pending } = await import("/transcript.js");
            const pending = new Pending("p");
            const out = [];
            const [one, two, three, four] = [1, 2, 3, 4].map(() => pending.nextRef());
            out.push([one, two, three, four]);
            pending.sent(one, "first");
            pending.sent(two, "second");  // three never went out
            pending.sent(four, "fourth");
            out.push(pending.size);
            out.push(pending.echoed(one), pending.echoed("other-1"), pending.size);
            out.push(pending.refused(four) ?? null, pending.refused(four) ?? null);
            out.push(pending.refused(three) ?? null, pending.size);
            pending.sent(pending.nextRef(), "fifth");
            // Sent on the current connection: a replay's end leaves them be.
            out.push(pending.rejoined({ unechoedLost: true }), pending.size);
            pending.sent(pending.nextRef(), "sixth");
            pending.clear();
            out.push(pending.size, pending.nextRef());
            return out;
        }"""
    )
    assert results == [
        ["p-1", "p-2", "p-3", "p-4"],
        3,
        True,  # echoed: ours, from this page
        False,  # someone else's ref (our name in another tab)
        2,
        "fourth",
        None,  # refused once only
        None,
        1,
        {"resend": [], "lost": []},
        2,
        0,
        "p-7",  # refs never repeat within a page
    ]


def run_pending(page: Page, script: str) -> Any:
    """Run `script` (a function body) with `pending`, a new Pending("p"), and
    `random`, a fixed jitter for its backoff; returns what the script returns."""
    return page.evaluate(
        """async () => {
            const { Pending, RESEND_BACKOFF } = await import("/transcript.js");
            const pending = new Pending("p");
            const random = () => 0;  // the shortest delay of each round
        """
        + script
        + "}"
    )


def test_unavailable_messages_go_again_after_a_backoff_until_echoed(page: Page) -> None:
    results = run_pending(
        page,
        """
        const out = [];
        const [one, two, three] = [1, 2, 3].map(() => pending.nextRef());
        pending.sent(one, "first");
        pending.sent(two, "second");
        out.push(pending.held(), pending.retryAt);
        out.push(pending.unavailable(one, 1000, random), pending.retryAt, pending.held());
        // The second answer of the same round keeps the first's time.
        out.push(pending.unavailable(two, 1100, random), pending.retryAt);
        out.push(pending.unavailable("p-99", 1100, random) ?? null);  // not pending
        // Sent while those wait: queued behind them, not sent.
        pending.hold(three, "third");
        out.push(pending.resend(1499), pending.resend(1500), pending.retryAt, pending.held());
        out.push(pending.resend(5000));  // once per round
        // Refused again: the next round waits longer (1 s, 2 s... up to a cap).
        for (const ref of [one, two, three]) pending.unavailable(ref, 2000, random);
        out.push(pending.retryAt);
        out.push(pending.resend(3000), pending.resend(3000).length);
        // The first is confirmed; the backoff starts over for the others.
        out.push(pending.echoed(one), pending.size);
        pending.unavailable(two, 4000, random);
        out.push(pending.retryAt);
        out.push(pending.resend(4500).map(({ ref }) => ref));
        // A confirmed message never goes again, even if an answer comes late.
        out.push(pending.echoed(two), pending.unavailable(two, 5000, random) ?? null);
        out.push(pending.refused(three), pending.size, pending.retryAt, pending.held());
        return out;
        """,
    )
    first, second, third = (
        {"ref": "p-1", "text": "first"},
        {"ref": "p-2", "text": "second"},
        {"ref": "p-3", "text": "third"},
    )
    assert results == [
        False,
        None,
        "first",
        1500,  # now + half of the first round's 1 s ceiling
        True,
        "second",
        1500,
        None,
        [],
        [first, second, third],  # oldest first, the queued one last
        None,
        False,
        [],
        3000,  # the second round: half of 2 s
        [first, second, third],
        0,
        True,
        2,
        4500,
        ["p-2"],  # the third is on its way (no answer yet): not again
        True,
        None,
        "third",  # another error: given back, not sent again
        0,
        None,
        False,
    ]


def test_the_resend_backoff_is_jittered_and_capped(page: Page) -> None:
    results = run_pending(
        page,
        """
        const delays = [];
        const ref = pending.nextRef();
        pending.sent(ref, "text");
        for (let round = 0; round < 8; round += 1) {
            pending.unavailable(ref, 0, () => 0.999999);
            delays.push(pending.retryAt);
            pending.resend(pending.retryAt);
        }
        return [delays, RESEND_BACKOFF];
        """,
    )
    delays, backoff = results
    ceilings = [min(backoff["cap"], backoff["base"] * 2**n) for n in range(8)]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 < delay < ceiling
    assert ceilings[-1] == backoff["cap"] <= 10_000


def test_messages_waiting_or_unanswered_go_again_after_our_next_join(page: Page) -> None:
    results = run_pending(
        page,
        """
        const out = [];
        const [one, two, three, four] = [1, 2, 3, 4].map(() => pending.nextRef());
        pending.sent(one, "first");
        pending.sent(two, "second");
        pending.sent(three, "third");
        pending.unavailable(one, 0, random);
        pending.unavailable(two, 0, random);
        out.push(pending.resend(500).length);  // both on their way again...
        pending.unavailable(two, 600, random);  // ...the second refused again, waiting
        // The connection drops: the first and third were on their way (they
        // may have been stored), the second waits (it was not). All show.
        out.push(pending.disconnected().map(({ ref }) => ref), pending.retryAt);
        pending.hold(four, "fourth");  // typed while the connection is down
        out.push(pending.held(), pending.resend(10_000));  // no timer: after the replay
        // The replay of the next connection recovered everything and echoed
        // none of them: none was stored, all go, oldest first.
        out.push(pending.rejoined({ unechoedLost: true }));
        out.push(pending.retryAt, pending.held(), pending.size);
        // The first's echo comes; it comes again (a server that takes a ref
        // once sends the original back): nothing changes the second time.
        out.push(pending.echoed(one), pending.echoed(one), pending.size);
        // Another drop, and a resume that could not recover everything: what
        // was on its way may have been stored, and goes back to the box...
        const five = pending.nextRef();
        pending.hold(five, "fifth");  // ...but what never went out goes.
        pending.disconnected();
        out.push(pending.rejoined({ unechoedLost: false }));
        out.push(pending.size);
        pending.clear();
        out.push(pending.size, pending.retryAt, pending.rejoined({ unechoedLost: true }));
        return out;
        """,
    )
    first, second, third, fourth, fifth = (
        {"ref": f"p-{n}", "text": text}
        for n, text in enumerate(["first", "second", "third", "fourth", "fifth"], start=1)
    )
    assert results == [
        2,
        ["p-1", "p-2", "p-3"],
        None,
        True,
        [],
        {"resend": [first, second, third, fourth], "lost": []},
        None,
        False,
        4,
        True,
        True,
        3,
        {"resend": [fifth], "lost": [second, third, fourth]},
        1,
        0,
        None,
        {"resend": [], "lost": []},
    ]


def test_a_server_that_takes_a_ref_once_gets_every_unconfirmed_message_again(
    page: Page,
) -> None:
    results = run_pending(
        page,
        """
        const out = [];
        const [one, two, three] = [1, 2, 3].map(() => pending.nextRef());
        pending.sent(one, "first");
        pending.sent(two, "second");
        pending.disconnected();
        pending.hold(three, "third");
        // Events were lost, yet a repeat of a stored ref is not stored again.
        out.push(pending.rejoined({ unechoedLost: false, dedupesRefs: true }));
        // Sent on this connection since: a later replay's end leaves them.
        out.push(pending.rejoined({ unechoedLost: false, dedupesRefs: true }));
        // The original of the first comes back (it had been stored).
        out.push(pending.echoed(one), pending.size);
        return out;
        """,
    )
    assert results == [
        {
            "resend": [
                {"ref": "p-1", "text": "first"},
                {"ref": "p-2", "text": "second"},
                {"ref": "p-3", "text": "third"},
            ],
            "lost": [],
        },
        {"resend": [], "lost": []},
        True,
        2,
    ]


# ---------------------------------------------------------------------------
# links.js


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("no link here", [{"text": "no link here"}]),
        ("", [{"text": ""}]),
        (
            "see https://example.com/docs.",
            [
                {"text": "see "},
                {"text": "https://example.com/docs", "href": "https://example.com/docs"},
                {"text": "."},
            ],
        ),
        (
            "www.example.org",
            [{"text": "www.example.org", "href": "https://www.example.org/"}],
        ),
        (
            "(at www.example.org/a?b=1#c), ok",
            [
                {"text": "(at "},
                {"text": "www.example.org/a?b=1#c", "href": "https://www.example.org/a?b=1#c"},
                {"text": "), ok"},
            ],
        ),
        (
            "WWW.Example.org:8080/x!",
            [
                {"text": "WWW.Example.org:8080/x", "href": "https://www.example.org:8080/x"},
                {"text": "!"},
            ],
        ),
        # Not links: other schemes, a user part, hosts glued to something before.
        ("javascript:alert(1)", [{"text": "javascript:alert(1)"}]),
        ("www.example.org:x@evil.example", [{"text": "www.example.org:x@evil.example"}]),
        ("me@www.example.org", [{"text": "me@www.example.org"}]),
        ("a.www.example.org", [{"text": "a.www.example.org"}]),
        ("files/www.example.org", [{"text": "files/www.example.org"}]),
        ("www.", [{"text": "www."}]),
        ("www.localhost", [{"text": "www.localhost"}]),
        ("www.exa mple.org", [{"text": "www.exa mple.org"}]),
        ("www.<b>.org", [{"text": "www.<b>.org"}]),
        (
            "https://www.example.org/x and www.example.net",
            [
                {"text": "https://www.example.org/x", "href": "https://www.example.org/x"},
                {"text": " and "},
                {"text": "www.example.net", "href": "https://www.example.net/"},
            ],
        ),
    ],
)
def test_link_parts(page: Page, text: str, parts: list[dict[str, str]]) -> None:
    result = page.evaluate("""async (text) => (await import("/links.js")).linkParts(text)""", text)
    assert result == parts
    assert "".join(part["text"] for part in result) == text


# ---------------------------------------------------------------------------
# protocol.js


def check(page: Page, function: str, *args: Any) -> Any:
    """Call one function of protocol.js."""
    return page.evaluate(
        """async ([name, args]) => (await import("/protocol.js"))[name](...args)""",
        [function, list(args)],
    )


NAMES = [
    # (typed, as the server keeps it, or None: refused by the client and the server)
    (" Alice ", "Alice"),
    ("e\u0301tienne", "\u00e9tienne"),  # NFC
    ("x" * 32, "x" * 32),
    ("\U0001f600" * 32, "\U0001f600" * 32),  # counted in code points
    ("\u05de\u05dc\u05d5\u05e8\u05d9", "\u05de\u05dc\u05d5\u05e8\u05d9"),  # right-to-left
    ("\u0915\u094d\u200d\u0937", "\u0915\u094d\u200d\u0937"),  # KA VIRAMA ZWJ SSA
    ("\u2764\ufe0f\u200d\U0001f525", "\u2764\ufe0f\u200d\U0001f525"),  # emoji sequence
    ("a\u200cb", "a\u200cb"),  # ZWNJ between letters
    ("\uff21lice", "\uff21lice"),  # fullwidth: a look-alike, refused only as taken
    ("", None),
    ("   ", None),
    ("x" * 33, None),
    ("a\u0007b", None),  # control
    ("\ue000", None),  # private use
    ("ali\u202ece", None),  # right-to-left override
    ("a\u200bb", None),  # zero-width space
    ("a\u200d", None),  # ZWJ with nothing to join
    ("\u200da", None),
    ("\ufe0fa", None),  # variation selector after nothing
    ("a\u2066b", None),  # bidi isolate
    ("\u0301abc", None),  # starts with a combining mark
    ("\u2800", None),  # a blank filler only
    ("a\u3164b", None),  # blank filler inside
    ("--", "--"),  # punctuation is visible
]


@pytest.mark.parametrize(("typed", "kept"), NAMES)
def test_check_name_agrees_with_the_server(page: Page, typed: str, kept: str | None) -> None:
    result = check(page, "checkName", typed)
    try:
        server = normalize_name(typed)
    except ProtocolError:
        server = None
    assert server == kept  # the case itself is right
    if kept is None:
        assert set(result) == {"error"}, result
    else:
        assert result == {"value": kept}


@pytest.mark.parametrize(
    ("typed", "error"),
    [
        ("", "Enter a name."),
        ("x" * 33, "at most 32 characters"),
        ("a\u0007b", "control characters"),
        ("\ue000", "unassigned or private-use"),
        ("ali\u202ece", "invisible or direction-control"),
        ("\u0301abc", "start with a combining mark"),
        ("\u2800", "invisible or direction-control"),
    ],
)
def test_check_name_says_what_is_wrong(page: Page, typed: str, error: str) -> None:
    assert error in check(page, "checkName", typed)["error"]


@pytest.mark.parametrize(
    ("typed", "room"),
    [
        ("", "lobby"),
        ("  ", "lobby"),
        (" ops ", "ops"),
        ("a.b-c_D9", "a.b-c_D9"),
        ("r" * 64, "r" * 64),
    ],
)
def test_check_room_accepts_the_protocols_rooms(page: Page, typed: str, room: str) -> None:
    assert check(page, "checkRoom", typed) == {"value": room}


@pytest.mark.parametrize("typed", ["no spaces", "r" * 65, "caf\u00e9", "a/b", "#ops"])
def test_check_room_refuses_others(page: Page, typed: str) -> None:
    result = check(page, "checkRoom", typed)
    assert "no spaces" in result["error"], result


@pytest.mark.parametrize(
    ("hash_", "room"),
    [
        ("", ""),
        ("#ops", "ops"),
        ("ops", "ops"),
        ("#caf%C3%A9", "caf\u00e9"),
        ("#%E0%A4%A", "%E0%A4%A"),
    ],
)
def test_room_from_hash(page: Page, hash_: str, room: str) -> None:
    assert check(page, "roomFromHash", hash_) == room


@pytest.mark.parametrize(
    ("text", "count"), [("", 0), ("abc", 3), ("\U0001f600", 1), ("e\u0301", 2), ("\u00e9", 1)]
)
def test_char_count_counts_code_points(page: Page, text: str, count: int) -> None:
    assert check(page, "charCount", text) == count


@pytest.mark.parametrize(
    ("code", "fallback", "pattern"),
    [
        ("name_taken", None, "already uses that name"),
        ("bad_name", None, "cannot be used"),
        ("bad_room", None, "room name cannot be used"),
        ("rate_limited", None, "too fast"),
        ("text_too_long", None, "longer than 4000 characters"),
        ("empty_text", None, "empty"),
        ("unavailable", "not sent", "sent again"),
        ("bad_request", "unknown type", r"^The server refused that: unknown type$"),
        ("bad_request", "", r"^The server refused that\.$"),
        ("", None, r"^The server refused that\.$"),
    ],
)
def test_error_text(page: Page, code: str, fallback: str | None, pattern: str) -> None:
    assert re.search(pattern, check(page, "errorText", code, fallback))


@pytest.mark.parametrize(
    ("code", "retry"),
    [
        (1000, False),  # replaced: another connection took our place
        (1001, True),
        (1006, True),
        (1011, True),
        (1012, True),
        (1013, True),
        (1002, False),
        (1003, False),
        (1007, False),
        (1008, False),
        (1009, False),
    ],
)
def test_describe_close_retries_only_what_a_retry_can_fix(
    page: Page, code: int, retry: bool
) -> None:
    result = check(page, "describeClose", code)
    assert result["retry"] is retry
    assert result["text"]
    # The same before a welcome: a close that refuses our hello.
    assert check(page, "describeClose", code, {"welcomed": False})["retry"] is retry


@pytest.mark.parametrize(
    ("code", "welcomed", "text"),
    [
        (1012, True, "The chat service restarted."),
        (1013, True, "The connection could not keep up."),
        # 1013 answering our hello: the server admits nobody now (its
        # backplane is down), not that we fell behind.
        (1013, False, "The server is busy."),
        (1001, False, "The server is restarting."),
        (1000, True, "This chat was opened in another tab or window."),
    ],
)
def test_describe_close_text(page: Page, code: int, welcomed: bool, text: str) -> None:
    assert check(page, "describeClose", code, {"welcomed": welcomed})["text"] == text


def test_backoff_delay_doubles_with_jitter_up_to_its_cap(page: Page) -> None:
    delays = page.evaluate(
        """async () => {
            const { backoffDelay } = await import("/protocol.js");
            const at = (attempt, random, options = {}) =>
                backoffDelay(attempt, { ...options, random: () => random });
            return [
                [0, 1, 2, 3, 6, 100].map((attempt) => [at(attempt, 0), at(attempt, 0.999999)]),
                [at(10, 0, { cap: 4000 }), at(10, 0.999999, { cap: 4000 })],
            ];
        }"""
    )
    ceilings = [500, 1000, 2000, 4000, 30_000, 30_000]
    for (low, high), ceiling in zip(delays[0], ceilings, strict=True):
        assert low == ceiling / 2
        assert ceiling / 2 < high < ceiling
    assert delays[1][0] == 2000
    assert 2000 < delays[1][1] < 4000


def test_reconnect_delay_is_fast_first_then_backs_off_to_a_cap(page: Page) -> None:
    """The first retry within 0.5 s (jittered over all of it), then 1, 2, 2,
    4, 8 s ceilings with equal jitter, then doubling up to the cap."""
    low, high, cap, ghost = page.evaluate(
        """async () => {
            const { reconnectDelay, RECONNECT_CAP } = await import("/protocol.js");
            const at = (random, options = {}) => (attempt) =>
                reconnectDelay(attempt, { ...options, random: () => random });
            const attempts = [...Array(12).keys()];
            return [
                attempts.map(at(0)),
                attempts.map(at(0.999999)),
                RECONNECT_CAP,
                [at(0, { cap: 4000 })(9), at(0.999999, { cap: 4000 })(9)],
            ];
        }"""
    )
    ceilings = [500, 1000, 2000, 2000, 4000, 8000, 15_000, 15_000, 15_000, 15_000, 15_000, 15_000]
    assert cap == 15_000
    assert low[0] == 0  # full jitter for the first retry: anywhere in 0 to 0.5 s
    assert 499 < high[0] < 500
    for attempt in range(1, 12):
        ceiling = ceilings[attempt]
        assert low[attempt] == ceiling / 2, attempt
        assert ceiling / 2 < high[attempt] < ceiling, attempt
    # Within about 2 s of a server back after an outage of 2.5 s or less:
    # the soonest the fifth attempt can start is 2.5 s after the loss.
    assert sum(low[:4]) == 2500
    assert max(high[:4]) < 2000
    assert ghost[0] == 2000
    assert 2000 < ghost[1] < 4000


@pytest.mark.parametrize(
    ("reason", "suffix"),
    [
        ("quit", ""),
        ("timeout", " (connection lost)"),
        ("slow", " (connection too slow)"),
        ("error", " (disconnected)"),
        ("shutdown", " (server restart)"),
        ("toString", ""),
        ("__proto__", ""),
        (None, ""),
    ],
)
def test_leave_reason_text(page: Page, reason: str | None, suffix: str) -> None:
    assert check(page, "leaveReasonText", reason) == suffix


# ---------------------------------------------------------------------------
# i18n.js


def test_every_catalog_has_the_same_keys_and_placeholders(page: Page) -> None:
    catalogs = page.evaluate(
        """async () => {
            const { CATALOGS } = await import("/i18n.js");
            return CATALOGS;
        }"""
    )
    assert set(catalogs) >= {"en", "es"}
    english = catalogs["en"]
    for language, catalog in catalogs.items():
        assert set(catalog) == set(english), (language, set(catalog) ^ set(english))
        for key, text in catalog.items():
            marks = re.compile(r"\{\w+\}|\[\[")
            assert sorted(marks.findall(text)) == sorted(marks.findall(english[key])), (
                language,
                key,
            )
            assert text.strip(), (language, key)


@pytest.mark.parametrize(
    ("languages", "language"),
    [
        (["es-ES", "en"], "es"),
        (["es-419"], "es"),
        (["fr-FR", "ES-mx", "en"], "es"),
        (["en-GB", "es"], "en"),
        (["de", "fr"], "en"),
        ([], "en"),
        ([None, 3], "en"),
    ],
)
def test_choose_language_takes_the_first_one_we_speak(
    page: Page, languages: list[Any], language: str
) -> None:
    assert (
        page.evaluate(
            """async (languages) => (await import("/i18n.js")).chooseLanguage(languages)""",
            languages,
        )
        == language
    )


def test_strings_fill_their_placeholders_in_either_language(page: Page) -> None:
    result = page.evaluate(
        """async () => {
            const { CATALOGS, markup, parts, t } = await import("/i18n.js");
            const element = { tag: "bdi" };
            return [
                t("youJoined", { room: "ops" }, CATALOGS.en),
                t("youJoined", { room: "ops" }, CATALOGS.es),
                parts("joined", { name: element }, CATALOGS.es),
                t("left", { name: "bob", reason: "" }, CATALOGS.en),
                t("joined", {}, CATALOGS.en),
                markup(t("composerHelp", {}, CATALOGS.es)),
            ];
        }"""
    )
    assert result[0] == "You joined #ops"
    assert result[1] == "Has entrado en #ops"
    assert result[2] == [{"tag": "bdi"}, " ha entrado"]
    assert result[3] == "bob left"
    assert result[4] == "{name} joined"  # a missing value stays visible
    assert result[5] == [
        {"kbd": "Intro"},
        {"text": " para enviar, "},
        {"kbd": "Mayús"},
        {"text": "+"},
        {"kbd": "Intro"},
        {"text": " para una línea nueva"},
    ]


# ---------------------------------------------------------------------------
# mentions.js

MEMBERS = ["alice", "Ana María", "Ana", "Ünal", "김철수", "bob_2"]


@pytest.mark.parametrize(
    ("text", "mentioned"),
    [
        ("@alice hi", ["alice"]),
        ("hi @alice", ["alice"]),
        ("@ALICE, look", ["alice"]),  # case-insensitive
        ("(@alice)", ["alice"]),
        ("@alice's turn", ["alice"]),
        ("@alice!@bob_2", ["alice", "bob_2"]),
        ("@alice@bob_2", ["alice"]),  # no mention right after a name character
        ("@alicex", []),  # not at a word boundary
        ("@alice_x", []),
        ("@alice2", []),
        ("me@alice.org", []),  # an address, not a mention
        ("@alíce", []),  # accents count
        ("@ana maría says hi", ["Ana María"]),  # the longest name wins
        ("@Ana  María", ["Ana María"]),  # white-space runs count as one
        ("@Ana Mar", ["Ana"]),
        ("@ünal ok", ["Ünal"]),  # Unicode case
        ("@김철수님", []),  # Hangul after the name: still a word
        ("@김철수 안녕", ["김철수"]),
        ("@bob_2 and @bob", ["bob_2"]),
        ("@@alice", []),
        ("@", []),
        ("no mention", []),
        ("@carol", []),  # not a member
    ],
)
def test_mentions_of_members(page: Page, text: str, mentioned: list[str]) -> None:
    parts = page.evaluate(
        """async ([text, members]) =>
            (await import("/mentions.js")).mentionParts(text, members)""",
        [text, MEMBERS],
    )
    assert "".join(part["text"] for part in parts) == text
    assert [part["mention"] for part in parts if "mention" in part] == mentioned
    for part in parts:
        if "mention" in part:
            assert part["text"].startswith("@")


def test_mentions_says_whether_one_is_ours(page: Page) -> None:
    result = page.evaluate(
        """async (members) => {
            const { mentions } = await import("/mentions.js");
            return [
                mentions("hey @Alice", "alice", members),
                mentions("hey @bob_2", "alice", members),
                mentions("hey @alice", "alice", []),
            ];
        }""",
        MEMBERS,
    )
    assert result == [True, False, False]


# ---------------------------------------------------------------------------
# rooms.js


def rooms_call(page: Page, function: str, *args: Any) -> Any:
    return page.evaluate(
        """async ([name, args]) => (await import("/rooms.js"))[name](...args)""",
        [function, list(args)],
    )


def test_recent_rooms_put_the_last_first_without_repeats(page: Page) -> None:
    assert rooms_call(page, "addRecent", ["a", "b", "c"], "b") == ["b", "a", "c"]
    assert rooms_call(page, "addRecent", ["a", "b"], "c", 2) == ["c", "a"]
    assert rooms_call(page, "parseRecent", '["ops", "ops", "no spaces", 3, "dev"]') == [
        "ops",
        "dev",
    ]
    assert rooms_call(page, "parseRecent", "not json") == []
    assert rooms_call(page, "parseRecent", None) == []


def test_active_rooms_keep_only_well_formed_entries(page: Page) -> None:
    body = {
        "rooms": [
            {"name": "lobby", "members": 3},
            {"name": "bad room", "members": 1},
            {"name": "ops", "members": "2"},
            {"name": "dev", "members": 1},
            None,
        ],
        "more": False,
    }
    assert rooms_call(page, "parseActiveRooms", body) == [
        {"name": "lobby", "members": 3},
        {"name": "dev", "members": 1},
    ]
    assert rooms_call(page, "parseActiveRooms", None) == []
    assert rooms_call(page, "parseActiveRooms", {"rooms": "x"}) == []


def test_the_sidebar_lists_each_room_once(page: Page) -> None:
    lists = rooms_call(
        page,
        "sidebar",
        {
            "joined": [
                {"name": "ops", "unread": 2, "mentions": 1},
                {"name": "dev", "unread": 5, "mentions": 0},
            ],
            "current": "dev",
            "active": [{"name": "lobby", "members": 4}, {"name": "ops", "members": 2}],
            "recent": ["dev", "old", "lobby"],
        },
    )
    assert lists == {
        "joined": [
            {"name": "ops", "members": 2, "unread": 2, "mentions": 1, "current": False},
            {"name": "dev", "members": None, "unread": 0, "mentions": 0, "current": True},
        ],
        "active": [{"name": "lobby", "members": 4}],
        "recent": ["old"],
    }


def test_what_a_reload_keeps_is_read_back_safely(page: Page) -> None:
    saved = rooms_call(
        page,
        "encodeSaved",
        {
            "name": "alice",
            "current": "dev",
            "rooms": [
                {"room": "ops", "since": 7, "epoch": "e1", "resume": "s1"},
                {"room": "dev", "since": None, "epoch": None, "resume": None},
            ],
        },
    )
    assert rooms_call(page, "decodeSaved", saved) == {
        "name": "alice",
        "current": "dev",
        "rooms": [
            {"room": "ops", "since": 7, "epoch": "e1", "resume": "s1"},
            {"room": "dev", "since": None, "epoch": None, "resume": None},
        ],
    }
    hostile = (
        '{"name": "alice", "current": "nope", "rooms": [{"room": "a b"},'
        ' {"room": "ops", "since": -1, "resume": "' + "x" * 65 + '"}]}'
    )
    assert rooms_call(page, "decodeSaved", hostile) == {
        "name": "alice",
        "current": "ops",
        "rooms": [{"room": "ops", "since": None, "epoch": None, "resume": None}],
    }
    for text in (None, "", "[]", '{"name": "", "rooms": [{"room": "ops"}]}', '{"rooms": []}'):
        assert rooms_call(page, "decodeSaved", text) is None, text


# ---------------------------------------------------------------------------
# scrollback.js: the window of the log kept in the page

SCROLLBACK_SIMULATION = """async ({ ops, limit, page, retained }) => {
    // A room whose server retains ids 1..newest (the first `retained` said
    // before the page joined) and one Scrollback; `ops` drive them. Returns
    // what each op left: the window's ids, whether it follows, what memory
    // holds, and whether it is at the beginning.
    const { Scrollback } = await import("/scrollback.js");
    const model = new Scrollback("t", { limit, page });
    let newest = 0;
    const stored = (id) => ({ type: "message", id, room: "r", name: "bob", text: `m${id}` });
    const live = (stick) => {
        newest += 1;
        model.add({ id: newest, event: stored(newest), own: false, you: null, notice: null },
                  { stick });
    };
    const answer = (frame) => {
        const ids = [];
        const from = Math.max(1, frame.before - frame.limit);
        for (let id = from; id < frame.before && id <= newest; id++) ids.push(id);
        const more = ids.length > 0 && ids[0] > 1;
        const page = { type: "history", events: ids.map(stored), more, ref: frame.ref };
        return model.page(page, "me");
    };
    newest = retained;
    for (let id = Math.max(1, retained - 9); id <= retained; id++) {
        model.add({ id, event: stored(id), own: false, you: null, notice: null }, { stick: true });
    }
    return ops.map((op) => {
        if (op === "live") {
            live(true);
            model.trimOldest(); // the page scrolls to the bottom after each frame
        }
        else if (op === "live-up") live(false);
        else if (op === "bottom") model.trimOldest();
        else if (op === "top") {
            const frame = model.older();
            if (frame !== null) answer(frame);
        } else if (op === "down") {
            const next = model.newer();
            if (next?.request) answer(next.request);
            else if (next?.jump) model.jump();
        } else if (op === "jump") model.jump();
        return { ids: model.ids, following: model.following, held: model.held,
                 beginning: model.atBeginning, newest };
    });
}"""


def run_scrollback(
    page: Page, ops: list[str], *, limit: int = 10, size: int = 4, retained: int = 40
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = page.evaluate(
        SCROLLBACK_SIMULATION,
        {"ops": ops, "limit": limit, "page": size, "retained": retained},
    )
    return results


def test_scrollback_pages_back_to_the_first_event_and_drops_the_newest(page: Page) -> None:
    steps = run_scrollback(page, ["top"] * 10)
    assert steps[0]["ids"] == list(range(27, 37))  # a page prepended, as many newest dropped
    assert not steps[0]["following"]
    assert steps[1]["ids"] == list(range(23, 33))
    assert not steps[6]["beginning"]
    assert steps[-1]["ids"] == list(range(1, 11))
    assert steps[-1]["beginning"]


def test_scrollback_follows_at_the_bottom_and_trims_the_oldest(page: Page) -> None:
    steps = run_scrollback(page, ["live"] * 5)
    assert steps[-1]["ids"] == list(range(36, 46))
    assert steps[-1]["following"]


def test_scrollback_stops_following_a_reader_scrolled_up(page: Page) -> None:
    steps = run_scrollback(page, ["live-up"] * 8 + ["down", "jump"])
    assert steps[3]["ids"] == list(range(31, 45))  # limit + page
    assert steps[7]["ids"] == list(range(31, 45))  # the newest are not drawn
    assert not steps[7]["following"]
    # Scrolled down: drawn from memory, the oldest dropped down to the limit.
    assert steps[8]["ids"] == list(range(39, 49))
    assert steps[8]["following"]
    assert steps[-1]["ids"] == list(range(39, 49))  # the newest window


def test_scrollback_asks_for_newer_pages_when_memory_does_not_reach(page: Page) -> None:
    ops = ["top"] * 4 + ["live-up"] * 12 + ["down"] * 8
    steps = run_scrollback(page, ops)
    assert steps[15]["ids"][0] < 30
    assert steps[-1]["following"]
    assert steps[-1]["ids"][-1] == steps[-1]["newest"]


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.sampled_from(["live", "live-up", "bottom", "top", "down", "jump"]), max_size=60
    ),
    retained=st.integers(min_value=1, max_value=60),
)
def test_scrollback_window_is_bounded_gap_free_and_reaches_both_ends(
    page: Page, ops: list[str], retained: int
) -> None:
    limit, size = 10, 4
    steps = run_scrollback(
        page, [*ops, *["top"] * 30, "jump"], limit=limit, size=size, retained=retained
    )
    for step in steps:
        ids = step["ids"]
        assert ids == list(range(ids[0], ids[0] + len(ids))), ids  # no gap, no repeat
        assert len(ids) <= limit + size
        assert step["held"] <= 2 * limit + size
        assert ids[0] >= 1
        assert ids[-1] <= step["newest"]
        if step["following"]:
            assert ids[-1] == step["newest"]
    at_top = steps[-2]
    assert at_top["ids"][0] == 1
    assert at_top["beginning"]
    assert steps[-1]["ids"][-1] == steps[-1]["newest"]
