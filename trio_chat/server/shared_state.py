"""What the shared hub holds, what it asks of the backplane, what comes back.

The shared hub (shared_hub.py) owns every `Room` and `Member`; it hands
script calls (`JoinCall`, `HoldCall`, `LeaveCall`, `SayCall`, `TypingCall`) to the
backplane link (backplane_link.py), whose tasks run them and post the
answers back into the hub's inbox as the messages below, in one
`SharedHubMessage` union with the sessions' own commands. Plain data: the
tasks read a room's name or a member's token, never change them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final

from ..backplane.errors import BackplaneError
from ..backplane.redis import RoomState
from ..backplane.scripts import Admitted, NameTaken, Post, Resend
from ..core import protocol
from ..core.feed import RoomFeed
from ..core.history import StoredEvent
from ..core.protocol import LeaveReason
from ..core.rooms import Joined
from .hub import Broadcast, Peer, Registration, Unregistration

JOIN_WINDOW: Final = 256  # recent events kept per room for joins answered late

# --------------------------------------------------------------------------
# State, owned by the hub task


class Room:
    """A room with local members, or members on their way in."""

    __slots__ = (
        "early",
        "epoch",
        "feed",
        "forgotten",
        "members",
        "name",
        "pending",
        "resync",
        "subscribed",
        "waiting",
        "window",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.subscribed = False
        self.forgotten = False  # no longer this process's: late answers are ignored
        self.waiting: list[Member] = []  # hellos waiting for the subscription
        self.pending: set[Member] = set()  # joins in flight, or catching up
        self.members: dict[Peer, int] = {}  # local members -> join id
        self.feed: RoomFeed | None = None  # made by the first join's reply
        self.epoch: str | None = None  # the numbering the feed follows
        self.early: list[StoredEvent] = []  # heard before there was a feed
        self.window: deque[StoredEvent] = deque(maxlen=JOIN_WINDOW)
        self.resync = False  # lost events to resync once the feed can ask

    @property
    def idle(self) -> bool:
        return not (self.members or self.pending or self.waiting)


@dataclass(slots=True, eq=False)
class Member:
    peer: Peer
    hello: protocol.Hello
    room: Room
    token: str
    ts: str  # when its hello was applied: its join event's time
    waiter: Registration | None  # the session's hello, until it is answered
    secret: str | None = None  # for a later resume; None when no place is held
    resumed: bool = False  # admitted by taking a held place back
    left: LeaveReason | None = None  # the session ended before its join was answered
    welcome: list[bytes] = field(default_factory=list)  # built once admitted
    join_id: int = 0

    @property
    def name(self) -> str:
        return self.hello.name

    def answer(self, outcome: Joined[Peer] | Exception) -> None:
        """Tell the session how its hello ended; keep nothing of it here."""
        if self.waiter is not None:
            self.waiter.outcome = outcome
            self.waiter.done.set()
            self.waiter = None
        self.welcome = []


# Script calls, run in order by the scripts task.


@dataclass(frozen=True, slots=True)
class JoinCall:
    member: Member


@dataclass(frozen=True, slots=True)
class HoldCall:
    """Keep a member whose connection dropped, for it to resume."""

    room: str
    token: str
    reason: LeaveReason


@dataclass(frozen=True, slots=True)
class LeaveCall:
    room: str
    token: str
    name: str
    line: bytes
    reason: LeaveReason


@dataclass(frozen=True, slots=True)
class SayCall:
    """A member's `say`, with what its sender is told if it cannot be sent."""

    member: Member
    ref: str | None
    post: Post


@dataclass(frozen=True, slots=True)
class TypingCall:
    room: str
    line: bytes


Call = JoinCall | HoldCall | LeaveCall | SayCall | TypingCall


# What tasks post back into the inbox.


@dataclass(frozen=True, slots=True)
class Subscribed:
    room: Room
    error: BackplaneError | None


@dataclass(frozen=True, slots=True)
class JoinReplied:
    member: Member
    outcome: Admitted | NameTaken | BackplaneError


@dataclass(frozen=True, slots=True)
class Heard:
    events: list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Filled:
    room: Room
    events: list[StoredEvent]


@dataclass(frozen=True, slots=True)
class CaughtUp:
    member: Member
    up_to_id: int
    events: list[StoredEvent]


@dataclass(frozen=True, slots=True)
class Overflowed:
    rooms: set[str]


@dataclass(frozen=True, slots=True)
class SaysFailed:
    """A `say_many` that failed: none of its posts was stored or published."""

    says: list[SayCall]


@dataclass(frozen=True, slots=True)
class SaysRefused:
    """Posts the backplane refused: their senders are no longer members there."""

    says: list[SayCall]


@dataclass(frozen=True, slots=True)
class SaysResent:
    """Posts sent before with the same ref: each goes back to its sender alone."""

    says: list[tuple[SayCall, Resend]]


@dataclass(frozen=True, slots=True)
class PageRead:
    """A page of a room's log read for a member's `history` request; `events`
    is None if the backplane could not be read."""

    member: Member
    request: protocol.HistoryRequest
    events: list[StoredEvent] | None
    more: bool = False


@dataclass(frozen=True, slots=True)
class GraceOver:
    """A held place's grace period may have ended: make the expired ones leave."""


@dataclass(frozen=True, slots=True)
class Recover:
    """The backplane may have lost events or state: resubscribe, then check."""


@dataclass(frozen=True, slots=True)
class Checked:
    states: dict[str, RoomState]
    delivered: dict[str, int]  # each room's last id delivered here when asked


@dataclass(frozen=True, slots=True)
class Stop:
    pass


SharedHubMessage = (
    Registration
    | Unregistration
    | Broadcast
    | Subscribed
    | JoinReplied
    | Heard
    | Filled
    | CaughtUp
    | Overflowed
    | SaysFailed
    | SaysRefused
    | SaysResent
    | PageRead
    | GraceOver
    | Recover
    | Checked
    | Stop
)


def leave_call(room: str, member: Member, reason: LeaveReason, ts: str) -> LeaveCall:
    """The `LEAVE` of `member` from `room`, announced with `reason` at `ts`."""
    line = protocol.leave_event(0, room, member.name, ts, reason)
    return LeaveCall(room, member.token, member.name, line, reason)
