"""Look-alike and invisible names against a real server, over real sockets.

Each refusal test fails if the protection it names is removed: a look-alike
of a member's name would be welcomed instead of refused with `name_taken`,
and an invisible or direction-control name would be welcomed instead of
`bad_name`. The last test guards the other side: right-to-left and emoji
names that a too-broad rule would refuse.
"""

from __future__ import annotations

import pytest
import trio
from conftest import RunningServer
from wsclient import Event, RawClient

LOOK_ALIKES_OF_ALICE = [
    pytest.param("ALICE", id="capitals"),
    pytest.param("\uff21lice", id="fullwidth-a"),
    pytest.param("\uff41\uff4c\uff49\uff43\uff45", id="all-fullwidth"),
    pytest.param("\u0430lice", id="cyrillic-a"),
    pytest.param("alic\u0435", id="cyrillic-e"),
    pytest.param("aIice", id="capital-i-for-l"),
    pytest.param("a1ice", id="digit-one-for-l"),
    pytest.param("\U0001d41alice", id="mathematical-bold-a"),
    pytest.param("al\u200dice", id="zwj-between-letters"),
    pytest.param("a\ufe0flice", id="variation-selector"),
]

INVISIBLE_NAMES = [
    pytest.param("\u200b", id="zero-width-space-only"),
    pytest.param("alice\u200b", id="alice-zero-width-space"),
    pytest.param("\u2060alice", id="word-joiner"),
    pytest.param("\ufeffalice", id="bom"),
    pytest.param("\u202eecila", id="right-to-left-override"),
    pytest.param("\u2067alice\u2069", id="right-to-left-isolate"),
    pytest.param("alice\u200f", id="right-to-left-mark"),
    pytest.param("alice\u061c", id="arabic-letter-mark"),
    pytest.param("\u3164", id="hangul-filler-only"),
    pytest.param("alice\u3164", id="hangul-filler-after"),
    pytest.param("\u2800", id="braille-blank-only"),
    pytest.param("\u2800\u2800alice", id="braille-blank-before"),
    pytest.param("alice\U000e0041", id="tag-letter"),
    pytest.param("alice\u200d", id="trailing-zwj"),
]


async def answer_to_hello(client: RawClient, name: str) -> Event:
    """The first event that answers a hello with `name`: welcome or error."""
    await client.send_json({"type": "hello", "name": name})
    return await client.next_event()


@pytest.mark.parametrize("look_alike", LOOK_ALIKES_OF_ALICE)
async def test_a_look_alike_of_a_member_is_taken(server: RunningServer, look_alike: str) -> None:
    with trio.fail_after(10):
        alice = await server.joined("alice")
        mallory = await server.client()
        answer = await answer_to_hello(mallory, look_alike)
        assert (answer["type"], answer.get("code")) == ("error", "name_taken"), answer
        # The connection stays open for another name, and alice sees only that.
        welcome = await mallory.hello("mallory")
        assert welcome["members"] == ["alice", "mallory"]
        join = await alice.next_event()
        assert (join["type"], join["name"]) == ("join", "mallory")


@pytest.mark.parametrize("look_alike", LOOK_ALIKES_OF_ALICE)
async def test_the_look_alike_who_came_first_keeps_the_name(
    server: RunningServer, look_alike: str
) -> None:
    with trio.fail_after(10):
        first = await server.client()
        welcome = await first.hello(look_alike)
        assert welcome["name"] == look_alike  # shown as typed
        alice = await server.client()
        answer = await answer_to_hello(alice, "alice")
        assert (answer["type"], answer.get("code")) == ("error", "name_taken"), answer


@pytest.mark.parametrize("name", INVISIBLE_NAMES)
async def test_an_invisible_or_direction_control_name_is_bad(
    server: RunningServer, name: str
) -> None:
    with trio.fail_after(10):
        client = await server.client()
        answer = await answer_to_hello(client, name)
        assert (answer["type"], answer.get("code")) == ("error", "bad_name"), answer
        assert "invisible or direction-control" in answer["message"]
        welcome = await client.hello("alice")  # the connection stays open
        assert welcome["members"] == ["alice"]


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("\u05d0\u05dc\u05d9\u05e1", id="hebrew"),
        pytest.param("\u0639\u0644\u064a", id="arabic"),
        pytest.param("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", id="persian-zwnj"),
        pytest.param("\U0001f469\u200d\U0001f4bb", id="emoji-zwj"),
        pytest.param("\u2764\ufe0f\u200d\U0001f525", id="emoji-heart-on-fire"),
    ],
)
async def test_right_to_left_and_emoji_names_join_beside_alice(
    server: RunningServer, name: str
) -> None:
    with trio.fail_after(10):
        alice = await server.joined("alice")
        client = await server.client()
        welcome = await client.hello(name)
        assert welcome["members"] == ["alice", name]
        join = await alice.next_event()
        assert (join["type"], join["name"]) == ("join", name)
