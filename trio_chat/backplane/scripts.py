"""The backplane's Lua scripts, and the pure code around them.

Theory of operation
-------------------
Each state change of a room is one script, run atomically by the server:
`JOIN`, `SAY_MANY` (one or more says of one room) and `LEAVE` each check
what they must, take the room's next ids (`INCRBY seq`), build each event
line around its id, append it to the room's stream (`XADD` with entry id
`N-0`, capped near the history limit) and publish it on the room's channel.
So numbering, storing and publishing are one step, and every process sees
one total order per room: the stream's and the channel's.

Typing notices are not numbered, stored or scripted: the shell publishes
them as they are on the room's channel, and `event_id_of` tells a line heard
there with an id (for the room's `RoomFeed`) from one without. The `moved`
notice of a resume is unnumbered too, and never reaches clients
(`moved_token` tells it from a typing notice).

Invariants the scripts keep (the tests check them against a real server):

* ids of a room rise by exactly 1, and entry `N-0` of the log holds event N;
* a new numbering (the first id taken is 1, or the epoch key is gone, as
  after a FLUSHALL) gets the caller's candidate epoch and starts an empty
  log, so an explicit `N-0` is always above the log's last entry;
* a name is held through its name keys (`protocol.name_keys`) in the room's
  `names` hash: a join whose key is held by a member is refused, so two
  look-alike names never coexist, whichever process each hello reached;
* a member leaves once: `LEAVE` of a token that is no longer a member does
  nothing and returns nil, so the session, shutdown and a reaper may race;
* a post of `SAY_MANY` whose token is not a member (reaped, or lost with a
  flushed server) is refused with 0, so nothing is said in a room by a
  non-member; a refused post takes no id, so the ids of the accepted posts
  of one call are consecutive, in the order given;
* exactly once: a post whose `ref` its member (the same name, joined before
  the original) used for an event still in the log, at most the dedupe
  window ago, in this numbering, takes no id and is answered with that
  event instead (`Resend`); the refs are forgotten once their event is more
  than the history limit behind;
* presence: a member whose connection dropped is *held* (`HOLD`): it stays
  a member, its name stays taken, and a `JOIN` that carries its resume
  secret (kept as a SHA-1 digest) takes its place back under a new token,
  with no event, publishing a `moved` notice of the old token so that the
  process that held it closes the connection it replaces.

Lua does no JSON: the caller encodes the event with the placeholder id 0
(`protocol.message_event(0, ...)`), `split_line` cuts it around the id, and
the script only concatenates `prefix .. id .. suffix`. The `*_call` helpers
build each script's KEYS and ARGV; the `parse_*` helpers read its reply.

Pure: no Trio, no Redis client. The shell (`backplane.redis`) sends these.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from ..core.errors import TrioChatError
from ..core.history import StoredEvent
from ..core.rooms import DEDUPE_WINDOW
from . import keys

# --------------------------------------------------------------------------
# The scripts

# Shared by every script that numbers an event.
#   next_ids(seq, epoch, log, candidate, count): take `count` (>= 1) ids at
#     once (INCRBY the room's seq) and return the first; on a new numbering
#     (the first is 1, or no epoch) SET the epoch to `candidate` and DEL the
#     log, so that the explicit entry id `N-0` is above the log's last one.
#   next_id(seq, epoch, log, candidate): one id, the same way.
#   append(log, channel, id, prefix, suffix, limit): the line
#     `prefix .. id .. suffix`, XADDed as entry `id-0` (field `e`, MAXLEN ~
#     limit) and PUBLISHed on `channel`.
_PRELUDE: Final = """
local function next_ids(seq_key, epoch_key, log_key, candidate, count)
  local first = redis.call('INCRBY', seq_key, count) - count + 1
  if first == 1 or redis.call('EXISTS', epoch_key) == 0 then
    redis.call('SET', epoch_key, candidate)
    redis.call('DEL', log_key)
  end
  return first
end

local function next_id(seq_key, epoch_key, log_key, candidate)
  return next_ids(seq_key, epoch_key, log_key, candidate, 1)
end

local function append(log_key, channel, id, prefix, suffix, limit)
  local text = string.format('%d', id)
  local line = prefix .. text .. suffix
  redis.call('XADD', log_key, 'MAXLEN', '~', limit, text .. '-0', 'e', line)
  redis.call('PUBLISH', channel, line)
end

local function entry_id(entry)
  return tonumber(string.match(entry[1], '^%d+'))
end
"""

# JOIN: admit a member under a name, unless a look-alike name is held; or
# give a held (or still connected) member its place back, under a new token.
#   KEYS: seq, epoch, log, members, names, secrets, held (of the room)
#   ARGV: token, name, prefix, suffix, candidate epoch, history limit,
#         replay limit, since ('' for none), the client's epoch ('' for none),
#         channel, resume secret ('' for none), the new member's secret ('' for
#         none), then the name's keys (one or more)
#   Returns {0, holder} when a name key is held (holder: that member's display
#   name), else {id, epoch, recovered, members, replay ids, replay lines,
#   resumed}: recovered -1 (no since), 0 or 1; members the display names in
#   join order; resumed 1 when the resume secret was the one of the member
#   named `name`: then no event is made, the member record (its join id and
#   secret) moves to `token`, `id` is the room's last id, and a `moved`
#   notice of the old token is published; else 0, `id` is the new join's,
#   and the member is the last of `members`. The replay is what
#   `RoomHistory.replay_for_join` (or `replay_for_resume`) picks from the
#   last `history limit` events, ending with `id`.
#   An error reply if the token is already a member.
JOIN: Final = (
    _PRELUDE
    + """
local token, name = ARGV[1], ARGV[2]
if redis.call('HEXISTS', KEYS[4], token) == 1 then
  return redis.error_reply('ERR this member token has already joined')
end
local resumed = 0
local id
if ARGV[11] ~= '' then
  local holder = redis.call('HGET', KEYS[5], ARGV[13])
  local record = holder and redis.call('HGET', KEYS[4], holder)
  if record and string.sub(record, string.find(record, ' ', 1, true) + 1) == name
      and redis.call('HGET', KEYS[6], holder) == redis.sha1hex(ARGV[11]) then
    redis.call('HDEL', KEYS[4], holder)
    redis.call('HSET', KEYS[4], token, record)
    for i = 13, #ARGV do
      redis.call('HSET', KEYS[5], ARGV[i], token)
    end
    redis.call('HSET', KEYS[6], token, redis.call('HGET', KEYS[6], holder))
    redis.call('HDEL', KEYS[6], holder)
    redis.call('HDEL', KEYS[7], holder)
    redis.call('PUBLISH', ARGV[10], '{"type":"moved","token":"' .. holder .. '"}')
    resumed = 1
    id = tonumber(redis.call('GET', KEYS[1]) or '0')
  end
end
if resumed == 0 then
  for i = 13, #ARGV do
    local holder = redis.call('HGET', KEYS[5], ARGV[i])
    if holder then
      local record = redis.call('HGET', KEYS[4], holder)
      if record then
        return {0, string.sub(record, string.find(record, ' ', 1, true) + 1)}
      end
    end
  end
  id = next_id(KEYS[1], KEYS[2], KEYS[3], ARGV[5])
  for i = 13, #ARGV do
    redis.call('HSET', KEYS[5], ARGV[i], token)
  end
  redis.call('HSET', KEYS[4], token, string.format('%d', id) .. ' ' .. name)
  if ARGV[12] ~= '' then
    redis.call('HSET', KEYS[6], token, redis.sha1hex(ARGV[12]))
  end
  append(KEYS[3], ARGV[10], id, ARGV[3], ARGV[4], ARGV[6])
end
local epoch = redis.call('GET', KEYS[2])

local found = {}
for _, record in ipairs(redis.call('HVALS', KEYS[4])) do
  local space = string.find(record, ' ', 1, true)
  found[#found + 1] = {tonumber(string.sub(record, 1, space - 1)), string.sub(record, space + 1)}
end
table.sort(found, function(a, b) return a[1] < b[1] end)
local members = {}
for i, member in ipairs(found) do
  members[i] = member[2]
end

-- The window replay reads: the last `limit` events that the log still holds.
-- A join is the newest event, so a `since` at or above it is from a lost
-- history; a resume made no event, so a `since` up to the last id is fine.
local first = id
local oldest = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)
if oldest[1] then
  first = entry_id(oldest[1])
end
first = math.max(first, id - tonumber(ARGV[6]) + 1)
local since = tonumber(ARGV[8])
local newest_seen = id - 1 + resumed
local tail = tonumber(ARGV[7])
if resumed == 0 then
  tail = math.max(tail, 1)
end
local recovered = -1
local start
if since == nil or (ARGV[9] ~= '' and ARGV[9] ~= epoch) or since > newest_seen then
  start = math.max(first, id - tail + 1)
  if since ~= nil then
    recovered = 0
  end
else
  start = math.max(first, since + 1)
  if first <= since + 1 then recovered = 1 else recovered = 0 end
end
local ids, lines = {}, {}
if id > 0 then
  local entries = redis.call(
    'XRANGE', KEYS[3], string.format('%d', start) .. '-0', string.format('%d', id) .. '-0')
  for i, entry in ipairs(entries) do
    ids[i] = entry_id(entry)
    lines[i] = entry[2][2]
  end
end
return {id, epoch or '', recovered, members, ids, lines, resumed}
"""
)

# SAY_MANY: number, store and publish several events of one room, in order.
#   KEYS: seq, epoch, log, members, refs, ref_order (of the room)
#   ARGV: candidate epoch, history limit, channel, dedupe window (ms), then
#         four per post: token, prefix, suffix, ref ('' for none)
#   Returns one reply per post: its event's id; 0 if its token is not a
#   member of the room; or {id, line}, the event its member already sent
#   with that ref (module docstring, "exactly once"), stored before or
#   earlier in this same call. The new posts take consecutive ids, in the
#   order given (one INCRBY for all of them); the others take none, so they
#   do not shift the rest. Membership cannot change during the script, so
#   each token is looked up once.
#   `refs` maps "NAME\nREF" to "ID MS EPOCH" (the event, when it was
#   stored, in which numbering); `ref_order` holds the same fields scored by
#   id, to forget those more than the history limit behind.
SAY_MANY: Final = (
    _PRELUDE
    + """
local count = (#ARGV - 4) / 4
local window = tonumber(ARGV[4])
local record_of, accepted = {}, 0
local now, epoch
local function clock()
  if now == nil then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    epoch = redis.call('GET', KEYS[2]) or ''
  end
end
local field_of, resent, first_of = {}, {}, {}
for i = 1, count do
  local token = ARGV[4 * i + 1]
  if record_of[token] == nil then
    record_of[token] = redis.call('HGET', KEYS[4], token) or false
  end
  local record = record_of[token]
  if record then
    local ref = ARGV[4 * i + 4]
    if ref ~= '' then
      local space = string.find(record, ' ', 1, true)
      local field = string.sub(record, space + 1) .. '\\n' .. ref
      local joined = tonumber(string.sub(record, 1, space - 1))
      if first_of[field] then
        resent[i] = first_of[field]
      else
        local stored = redis.call('HGET', KEYS[5], field)
        if stored then
          clock()
          local original, at, numbering = string.match(stored, '^(%d+) (%d+) (.*)$')
          original, at = tonumber(original), tonumber(at)
          if original > joined and at >= now - window and numbering == epoch then
            local entries = redis.call(
              'XRANGE', KEYS[3], original .. '-0', original .. '-0')
            if entries[1] then
              resent[i] = {original, entries[1][2][2]}
            end
          end
        end
        if not resent[i] then
          first_of[field] = i
          field_of[i] = field
        end
      end
    end
    if not resent[i] then
      accepted = accepted + 1
    end
  end
end
local replies = {}
local id = 0
if accepted > 0 then
  id = next_ids(KEYS[1], KEYS[2], KEYS[3], ARGV[1], accepted)
end
for i = 1, count do
  if resent[i] == nil and record_of[ARGV[4 * i + 1]] then
    append(KEYS[3], ARGV[3], id, ARGV[4 * i + 2], ARGV[4 * i + 3], ARGV[2])
    replies[i] = id
    if field_of[i] then
      clock()
      redis.call('HSET', KEYS[5], field_of[i], id .. ' ' .. now .. ' ' .. epoch)
      redis.call('ZADD', KEYS[6], id, field_of[i])
    end
    id = id + 1
  else
    replies[i] = 0
  end
end
for i = 1, count do
  local earlier = resent[i]
  if type(earlier) == 'number' then
    local line = ARGV[4 * earlier + 2] .. string.format('%d', replies[earlier])
      .. ARGV[4 * earlier + 3]
    replies[i] = {replies[earlier], line}
  elseif earlier then
    replies[i] = earlier
  end
end
-- Forget the refs of events more than the history limit behind.
local stale = redis.call(
  'ZRANGEBYSCORE', KEYS[6], '-inf', id - tonumber(ARGV[2]) - 1, 'LIMIT', 0, 512)
if #stale > 0 then
  redis.call('HDEL', KEYS[5], unpack(stale))
  redis.call('ZREM', KEYS[6], unpack(stale))
end
return replies
"""
)

# HOLD: keep a member whose connection dropped, for it to resume.
#   KEYS: members, held (of the room)
#   ARGV: token, the reason it dropped for (its leave's reason, later)
#   Returns 1 if the token is a member (now held), else 0.
HOLD: Final = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
"""

# LEAVE: remove a member, once, and announce it.
#   KEYS: seq, epoch, log, members, names, secrets, held (of the room)
#   ARGV: token, prefix, suffix, candidate epoch, history limit, channel,
#         then the name's keys (a key is released only if this token holds it)
#   Returns the leave event's id, or nil if the token was not a member (it has
#   left already, or resumed under another token: whoever raced to remove it
#   was first).
LEAVE: Final = (
    _PRELUDE
    + """
local token = ARGV[1]
if redis.call('HDEL', KEYS[4], token) == 0 then
  return false
end
redis.call('HDEL', KEYS[6], token)
redis.call('HDEL', KEYS[7], token)
for i = 7, #ARGV do
  if redis.call('HGET', KEYS[5], ARGV[i]) == token then
    redis.call('HDEL', KEYS[5], ARGV[i])
  end
end
local id = next_id(KEYS[1], KEYS[2], KEYS[3], ARGV[4])
append(KEYS[3], ARGV[6], id, ARGV[2], ARGV[3], ARGV[5])
return id
"""
)

SCRIPTS: Final = {
    "JOIN": JOIN,
    "SAY_MANY": SAY_MANY,
    "HOLD": HOLD,
    "LEAVE": LEAVE,
}


def sha1(script: str) -> str:
    """The digest `EVALSHA` names a script by."""
    return hashlib.sha1(script.encode("utf-8"), usedforsecurity=False).hexdigest()


# --------------------------------------------------------------------------
# Lines around their id

# Every stored event starts `{"type":"WORD","id":` (protocol.encode keeps the
# dict's order), so the first `"id":0` is the id, whatever the text holds.
_HEAD: Final = re.compile(rb'\{"type":"[a-z_]+","id":0[,}]')


class BadTemplate(TrioChatError, ValueError):
    """A line of the wrong shape for its use: not an event encoded with the
    placeholder id 0 (a say, join or leave), or a numbered one (typing)."""


def split_line(line: bytes) -> tuple[bytes, bytes]:
    """The bytes before and after the id of `line`, an event encoded with id 0.

    `prefix + str(n).encode() + suffix` is then the same event with id n.

    Raises:
        BadTemplate: `line` does not start like an event with the id 0.
    """
    head = _HEAD.match(line)
    if head is None:
        raise BadTemplate("a backplane event line must start with its type and the id 0")
    cut = head.end() - 2  # just before the `0`
    return line[:cut], line[cut + 1 :]


def with_id(line: bytes, event_id: int) -> bytes:
    """`line` (encoded with id 0) with the id `event_id`: what the script builds."""
    prefix, suffix = split_line(line)
    return b"%s%d%s" % (prefix, event_id, suffix)


# A numbered event's head, whatever its id; the id has no sign and no leading
# zero (Python's `json` writes ints so).
_NUMBERED: Final = re.compile(rb'\{"type":"[a-z_]+","id":(0|[1-9][0-9]*)[,}]')


def event_id_of(line: bytes) -> int | None:
    """The id of the event `line`, or None for an unnumbered one (`typing`).

    Reads the head only, without decoding the JSON: what a process does for
    every line it hears on a room's channel, to tell numbered events (for the
    room's `RoomFeed`) from typing notices (passed on as they come).
    """
    head = _NUMBERED.match(line)
    return None if head is None else int(head[1])


# --------------------------------------------------------------------------
# Calls and replies


def _numbering_keys(room: str) -> tuple[str, str, str, str]:
    """The KEYS every numbering script starts with: seq, epoch, log, members."""
    return (keys.seq(room), keys.epoch(room), keys.log(room), keys.members(room))


def _seat_keys(room: str) -> tuple[str, str, str]:
    """The KEYS of `JOIN` and `LEAVE` after the numbering ones: names, secrets, held."""
    return (keys.names(room), keys.secrets(room), keys.held(room))


# The unnumbered notice `JOIN` publishes when a member resumes under a new
# token: the process holding the old token closes that connection.
_MOVED: Final = re.compile(rb'\{"type":"moved","token":"([^"]+)"\}')


def moved_token(line: bytes) -> str | None:
    """The old token of a `moved` notice heard on a room's channel, or None
    if `line` is no such notice (a typing notice, say)."""
    found = _MOVED.fullmatch(line)
    return None if found is None else found[1].decode("utf-8", "replace")


Arg = str | bytes


@dataclass(frozen=True, slots=True)
class Call:
    """One script invocation: which script, its KEYS and its ARGV."""

    script: str  # a name in SCRIPTS
    keys: tuple[str, ...]
    args: tuple[Arg, ...]


@dataclass(frozen=True, slots=True)
class Post:
    """A member's event for `SAY_MANY`: `line` is encoded with the placeholder id 0."""

    room: str
    token: str
    line: bytes
    ref: str | None = None  # the client's ref: a post with a ref is stored once


@dataclass(frozen=True, slots=True)
class Resend:
    """A post not stored again: its member sent it before, as event `id`."""

    id: int
    line: bytes


@dataclass(frozen=True, slots=True)
class Admitted:
    """A join that succeeded: everything the welcome needs, as one snapshot."""

    join_id: int
    epoch: str
    members: list[str]  # display names in join order, the new member's last
    replay: list[StoredEvent]  # ends with the member's own join (or the last id, on a resume)
    recovered: bool | None  # None when no `since` was given
    resumed: bool = False  # took a held place back: no join event, `join_id` is the last id


@dataclass(frozen=True, slots=True)
class NameTaken:
    """A join refused: `holder` (a member's display name) clashes with the name."""

    holder: str


def join_call(
    room: str,
    token: str,
    name: str,
    line: bytes,
    *,
    name_keys: Iterable[str],
    candidate: str,
    history_limit: int,
    replay_limit: int,
    since: int | None,
    client_epoch: str | None,
    resume: str | None = None,
    secret: str | None = None,
) -> Call:
    """The `JOIN` of `token` as `name`; `line` is its join event with id 0.

    `resume`: the secret the client gave to take its place back, if any;
    `secret`: the one a new member gets for a later resume (none when the
    server holds no places).
    """
    prefix, suffix = split_line(line)
    found = sorted(name_keys)
    assert found, "a name has at least one key"
    return Call(
        "JOIN",
        (*_numbering_keys(room), *_seat_keys(room)),
        (
            token,
            name,
            prefix,
            suffix,
            candidate,
            str(history_limit),
            str(replay_limit),
            "" if since is None else str(since),
            client_epoch or "",
            keys.channel(room),
            resume or "",
            secret or "",
            *found,
        ),
    )


MAX_POSTS_PER_CALL: Final = 256  # posts in one SAY_MANY: a bound on the server's time in it


def group_posts(posts: Sequence[Post], size: int = MAX_POSTS_PER_CALL) -> list[list[int]]:
    """The positions in `posts` grouped for `SAY_MANY`: by room, each room's in
    their order, at most `size` per group; rooms in the order they first
    appear."""
    by_room: dict[str, list[int]] = {}
    for position, post in enumerate(posts):
        by_room.setdefault(post.room, []).append(position)
    return [
        positions[start : start + size]
        for positions in by_room.values()
        for start in range(0, len(positions), size)
    ]


def say_many_call(
    room: str,
    posts: Sequence[Post],
    *,
    candidate: str,
    history_limit: int,
    dedupe_window: float = DEDUPE_WINDOW,
) -> Call:
    """The `SAY_MANY` of `posts`, all of `room`, in this order; a post whose
    ref its member used within `dedupe_window` seconds is not stored again.

    Raises:
        ValueError: a post of another room, or no post at all.
        BadTemplate: a post's line is not encoded with the id 0.
    """
    if not posts or any(post.room != room for post in posts):
        raise ValueError("a SAY_MANY takes one or more posts, all of its room")
    args: list[Arg] = [
        candidate,
        str(history_limit),
        keys.channel(room),
        str(round(dedupe_window * 1000)),
    ]
    for post in posts:
        prefix, suffix = split_line(post.line)
        args += (post.token, prefix, suffix, post.ref or "")
    return Call(
        "SAY_MANY",
        (*_numbering_keys(room), keys.refs(room), keys.ref_order(room)),
        tuple(args),
    )


def hold_call(room: str, token: str, reason: str) -> Call:
    """The `HOLD` of member `token`, which dropped for `reason`."""
    return Call("HOLD", (keys.members(room), keys.held(room)), (token, reason))


def leave_call(
    room: str,
    token: str,
    line: bytes,
    *,
    name_keys: Iterable[str],
    candidate: str,
    history_limit: int,
) -> Call:
    """The `LEAVE` of `token`; `line` is its leave event with id 0."""
    prefix, suffix = split_line(line)
    return Call(
        "LEAVE",
        (*_numbering_keys(room), *_seat_keys(room)),
        (
            token,
            prefix,
            suffix,
            candidate,
            str(history_limit),
            keys.channel(room),
            *sorted(name_keys),
        ),
    )


class BadReply(TrioChatError, ValueError):
    """A script reply of an unexpected shape (a bug, or another program's keys)."""


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, str):
        return value
    raise BadReply(f"expected a string, got {type(value).__name__}")


def _bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return _text(value).encode("utf-8")


def _int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise BadReply(f"expected an integer, got {type(value).__name__}")


def _list(value: object) -> Sequence[object]:
    if isinstance(value, list):
        return value
    raise BadReply(f"expected an array, got {type(value).__name__}")


def parse_join_reply(reply: object) -> Admitted | NameTaken:
    """What a `JOIN` reply says."""
    fields = _list(reply)
    if _int(fields[0]) == 0 and len(fields) == 2:
        return NameTaken(_text(fields[1]))
    join_id, epoch, recovered, members, ids, lines, resumed = fields
    replay = [
        StoredEvent(_int(i), _bytes(line))
        for i, line in zip(_list(ids), _list(lines), strict=True)
    ]
    return Admitted(
        join_id=_int(join_id),
        epoch=_text(epoch),
        members=[_text(member) for member in _list(members)],
        replay=replay,
        recovered={-1: None, 0: False, 1: True}[_int(recovered)],
        resumed=_int(resumed) == 1,
    )


def parse_say_many_reply(reply: object, count: int) -> list[int | Resend | None]:
    """What a `SAY_MANY` of `count` posts did with each: the new event's id,
    the event sent before with the same ref (`Resend`), or None (refused)."""
    results: list[int | Resend | None] = []
    for value in _list(reply):
        if isinstance(value, list):
            event_id, line = value
            results.append(Resend(_int(event_id), _bytes(line)))
        else:
            results.append(_int(value) or None)
    if len(results) != count:
        raise BadReply(f"expected {count} ids, got {len(results)}")
    return results


def parse_leave_reply(reply: object) -> int | None:
    """The id of the `leave` event, or None if the member had left already."""
    return None if reply is None else _int(reply)


def member_name(record: str | bytes) -> str:
    """The display name in a `members` hash value (`"JOIN_ID NAME"`)."""
    return _text(record).partition(" ")[2]


def parse_range(entries: object) -> list[StoredEvent]:
    """Events from an `XRANGE` reply over a room's log (entries `N-0`, field `e`).

    Takes the server's array of `[id, [field, value]]`, and the map
    `{id: [[field, value]]}` glide makes of it.
    """
    pairs = list(entries.items()) if isinstance(entries, dict) else map(_list, _list(entries))
    events: list[StoredEvent] = []
    for entry_id, fields in pairs:
        values = _list(fields)
        if values and isinstance(values[0], list):  # glide's [[field, value]]
            values = values[0]
        event_id = int(_text(entry_id).partition("-")[0])
        events.append(StoredEvent(event_id, _bytes(values[1])))
    events.sort(key=lambda event: event.id)
    return events
