"""The names of the backplane's Redis keys and channels.

Every key of a room carries the room in a hash tag, `tc:{ROOM}:...`, so all
of them hash to one slot: one script may touch them all, on a single server
today and on Redis Cluster later. Room names are `[A-Za-z0-9_.-]{1,64}`
(`protocol.validate_room`), so a room can hold no brace and the tag needs no
escaping; node names follow the same rule (`validate_node`).

| key | type | holds |
|---|---|---|
| `tc:{R}:seq` | string | the room's last event id (`INCR`) |
| `tc:{R}:epoch` | string | the room's numbering, set with its id 1 |
| `tc:{R}:log` | stream | the retained events, entry id `N-0` for event id N, field `e` |
| `tc:{R}:members` | hash | member token -> `"JOIN_ID NAME"` (join order, display name) |
| `tc:{R}:names` | hash | name key (`protocol.name_keys`) -> member token |
| `tc:{R}:secrets` | hash | member token -> SHA-1 of its resume secret |
| `tc:{R}:held` | hash | member token -> why its connection dropped, while its place is held |
| `tc:{R}:refs` | hash | `NAME\\nREF` -> `"ID MS EPOCH"`: the event a member's ref made |
| `tc:{R}:ref_order` | sorted set | the same fields, scored by event id (to forget old ones) |
| `tc:{R}:events` | channel | every event line of the room, as stored |
| `tc:node:{N}` | string, TTL | node N's lease, renewed while the process lives |
| `tc:node:{N}:rooms` | set | rooms where node N has (or had) members: what its reaper visits |
| `tc:node:{N}:reaper` | string, TTL | elects the one process that reaps N once its lease is gone |

A member token is `NODE/LOCAL` (`member_token`): the node that holds the
member is part of its identity, so a reaper finds a dead node's members in a
room's `members` hash without another index.
"""

from __future__ import annotations

import re
from typing import Final

from ..core.errors import TrioChatError

_NAME: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}", re.ASCII)


class BadNodeName(TrioChatError, ValueError):
    """A node name that cannot be part of a key; the message says why."""


def validate_node(node: str) -> str:
    """Return `node` if it may name a process in keys and tokens, or raise `BadNodeName`."""
    if _NAME.fullmatch(node) is None:
        raise BadNodeName("a node name is 1 to 64 characters of A-Z a-z 0-9 _ - .")
    return node


def seq(room: str) -> str:
    return f"tc:{{{room}}}:seq"


def epoch(room: str) -> str:
    return f"tc:{{{room}}}:epoch"


def log(room: str) -> str:
    return f"tc:{{{room}}}:log"


def members(room: str) -> str:
    return f"tc:{{{room}}}:members"


def names(room: str) -> str:
    return f"tc:{{{room}}}:names"


def secrets(room: str) -> str:
    return f"tc:{{{room}}}:secrets"


def held(room: str) -> str:
    return f"tc:{{{room}}}:held"


def refs(room: str) -> str:
    return f"tc:{{{room}}}:refs"


def ref_order(room: str) -> str:
    return f"tc:{{{room}}}:ref_order"


def channel(room: str) -> str:
    """The room's Pub/Sub channel."""
    return f"tc:{{{room}}}:events"


def room_of_channel(name: str | bytes) -> str | None:
    """The room whose channel `name` is, or None for any other channel."""
    text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
    if text.startswith("tc:{") and text.endswith("}:events"):
        room = text[4:-8]
        if _NAME.fullmatch(room) is not None:
            return room
    return None


def lease(node: str) -> str:
    return f"tc:node:{{{node}}}"


def node_rooms(node: str) -> str:
    return f"tc:node:{{{node}}}:rooms"


def reaper(node: str) -> str:
    return f"tc:node:{{{node}}}:reaper"


def member_token(node: str, local: int | str) -> str:
    """The token of a member held by `node`; `local` is unique within that node's run."""
    return f"{node}/{local}"


def node_of_token(token: str) -> str:
    """The node that holds the member with this token."""
    return token.partition("/")[0]
