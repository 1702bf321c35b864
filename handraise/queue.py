"""Participants and the hand queue: the domain, Redis-backed, no web framework.

Every mutation is one Lua script over the room's keys (one hash tag, so one Cluster slot)
that changes state and appends its event together; an operation that changes nothing
appends nothing. Times come from the Redis server's clock, so every process agrees.

The order of the queue is computed in one Lua function (``ordered`` in :data:`_HEAD`) that
every script reading or announcing a position uses:

1. **Replies** first, in the order they were raised as replies. A reply is a hand "to the
   current speaker" (``*4``); it exists only while someone speaks. When the turn it answers
   ends (Done, the speaker leaves, or the host calls on someone who is not replying), the
   replies still waiting become ordinary hands *in place*, ordered by their first raise.
   A caller whose point is up and who replies turns that hand into a reply; it keeps its
   first raise time, so it goes back to its place if the turn ends first.
2. **Points**: FIFO by the moment a hand went up (raising again keeps the first place;
   lowering and raising again goes to the back). In a room with ``order = fair``, those
   who have not been called on in this meeting go before those who have (FIFO in each
   group); who has spoken is forgotten when the conference ends.

"Lower all hands" keeps what it lowered for :data:`UNDO_LOWER_ALL_S` seconds, so that
:meth:`Queue.undo_lower_all` (from any process) brings the same hands back in the same order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from redis.exceptions import ResponseError

from .errors import Conflict, Invalid, NotFound
from .events import LUA_EMIT, encode_changes
from .rooms import DEFAULT_MAXLEN, Role, Room, _room_from_hash, mark_live, new_id
from .store import Redis, key

Source = Literal["keypad", "web", "prompt", "host", "api"]
SOURCES: tuple[Source, ...] = ("keypad", "web", "prompt", "host", "api")
Channel = Literal["phone", "web"]
#: What a hand is: a new point, or a reply to whoever speaks now.
Kind = Literal["point", "reply"]
#: How the head of the queue compares with the one last recorded (:meth:`Queue.head_change`).
HeadChange = Literal["stale", "same", "after_empty", "different", "first_look", "raised_first"]
_HEAD_CHANGES: dict[int, HeadChange] = {-1: "stale", 0: "same", 1: "after_empty", 2: "different",
                                        3: "first_look", 4: "raised_first"}
#: How long "Lower all hands" can be undone (seconds).
UNDO_LOWER_ALL_S = 15
#: Longest name a host may give; a caller naming themselves gets fewer (web/participant.py).
NAME_MAX = 60
#: Longest topic note a caller may leave with their hand.
TOPIC_MAX = 140
CHANNELS: tuple[Channel, ...] = ("phone", "web")
#: The most participants a room holds, host included: Twilio's conference maximum
#: (``maxParticipants`` <= 250, error 16020 beyond it; TWILIO.md §3.1, §8).
MAX_PARTICIPANTS = 250


class RoomFull(Conflict):
    """The room already holds its maximum of participants (:data:`MAX_PARTICIPANTS`)."""

    def __init__(self, room: str, cap: int) -> None:
        super().__init__(f"Room {room!r} is full: it already has {cap} participants.")
        self.cap = cap


def mask_number(number: str | None) -> str:
    """A phone number fit to show outside the host's view: ``+1 ••• ••• 4821``."""
    if not number:
        return "Unknown number"
    digits = re.sub(r"\D", "", number)
    if number.strip().lower() in {"anonymous", "restricted", "unknown"} or len(digits) < 6:
        return "Private number"
    last = digits[-4:]
    if number.startswith("+1") and len(digits) == 11:
        return f"+1 ••• ••• {last}"
    if number.startswith("+"):
        return f"+•• ••• {last}"
    return f"••• {last}"


def caller_name(number: str | None) -> str:
    """What a caller without a name is called on screen: ``Caller 4821``."""
    digits = re.sub(r"\D", "", number or "")
    return f"Caller {digits[-4:]}" if len(digits) >= 6 else "Caller"


@dataclass(frozen=True)
class Participant:
    id: str
    room: str
    role: Role
    call_sid: str | None
    label: str | None
    number: str | None = field(repr=False)
    name: str | None
    muted: bool
    hold: bool
    channels: tuple[Channel, ...]
    joined_at: int
    #: The Twilio conference the call is in; None while outside it (pre-join window, a prompt).
    conference_sid: str | None = None
    #: The note the caller left with their raised hand, if any.
    topic: str | None = None

    @property
    def number_masked(self) -> str:
        return mask_number(self.number)

    @property
    def display_name(self) -> str:
        """The name if one is set, else "Caller 4821" (the last four digits), else "Caller"."""
        return self.name or caller_name(self.number)

    def to_dict(self, *, host_view: bool = False) -> dict[str, Any]:
        """Public shape; the full number only in the host's view."""
        out: dict[str, Any] = {
            "id": self.id,
            "role": self.role,
            "label": self.label,
            "name": self.name,
            "number_masked": self.number_masked,
            "muted": self.muted,
            "hold": self.hold,
            "channels": list(self.channels),
            "joined_at": self.joined_at,
        }
        if host_view:
            out["number"] = self.number
            out["call_sid"] = self.call_sid
        return out


class NoSpeaker(Conflict):
    """A reply while nobody speaks: there is nothing to reply to."""


class IsSpeaker(Conflict):
    """A reply from the speaker themselves."""


@dataclass(frozen=True)
class Hand:
    participant: str
    position: int
    raised_at: int  # ms, Redis clock
    wait_s: float
    source: str | None
    kind: Kind = "point"
    #: The speaker a reply answers (None for a point).
    reply_to: str | None = None


@dataclass(frozen=True)
class Turn:
    """Who speaks now, and whose turn that ended (None if nobody spoke or it is the same)."""

    speaker: str
    previous: str | None


@dataclass(frozen=True)
class RoomState:
    """A consistent snapshot of a room's live state and the id of the last event in it."""

    room: str
    participants: list[Participant]
    queue: list[Hand]
    speaker: str | None
    last_event_id: str
    now: int
    #: When the speaker was called on (ms, Redis clock); None if nobody speaks.
    speaker_since: int | None = None
    #: Until when "Lower all hands" can be undone (ms, Redis clock); None if it cannot.
    undo_until: int | None = None
    #: Who has been called on in this meeting (what the fair order goes by).
    spoken: frozenset[str] = frozenset()

    def position(self, pid: str) -> int | None:
        """``pid``'s place in line (1 is next), None if their hand is down."""
        return next((h.position for h in self.queue if h.participant == pid), None)

    def hand(self, pid: str) -> Hand | None:
        return next((h for h in self.queue if h.participant == pid), None)

    def participant(self, pid: str) -> Participant | None:
        return next((p for p in self.participants if p.id == pid), None)


# --- scripts ------------------------------------------------------------------------------
# Common KEYS order (see Queue._keys): 1 room, 2 participants, 3 hands, 4 events,
# 5 participant hash, 6 replies, 7 spoken, 8 reply-to, 9 undo of "lower all".
# Common ARGV head: 1 maxlen, 2 room id, 3 participant id.
#
# hands: zset pid -> first raise time (us); replies: zset pid -> time raised as a reply
# (a subset of hands); reply-to: hash pid -> the speaker the reply answers; spoken: set
# of who was called on in this meeting.

_HEAD = LUA_EMIT + """
local function is_open() return redis.call('HGET', KEYS[1], 'status') == 'open' end
local function present(pid) return redis.call('SISMEMBER', KEYS[2], pid) == 1 end
-- Strictly increasing scores keep FIFO order even for raises in the same microsecond.
local function next_score()
  local score = now_us()
  local last = tonumber(redis.call('HGET', KEYS[1], 'hand_clock') or '0')
  if score <= last then score = last + 1 end
  redis.call('HSET', KEYS[1], 'hand_clock', score)
  return score
end
-- The queue in its order, the one definition every reader uses: replies first (by the
-- time they became replies), then points (fair rooms: who has not spoken first), each by
-- raise time. Entries: {pid=, raw= raise score as stored, reply= reply score or nil}.
local function ordered()
  local hands = redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES')
  if #hands == 0 then return {} end
  local replies = {}
  local rs = redis.call('ZRANGE', KEYS[6], 0, -1, 'WITHSCORES')
  for i = 1, #rs, 2 do replies[rs[i]] = tonumber(rs[i + 1]) end
  local spoken = {}
  if redis.call('HGET', KEYS[1], 'order') == 'fair' then
    for _, p in ipairs(redis.call('SMEMBERS', KEYS[7])) do spoken[p] = true end
  end
  local out = {}
  for i = 1, #hands, 2 do
    local pid, raw = hands[i], hands[i + 1]
    local e = {pid = pid, raw = raw, reply = replies[pid]}
    if e.reply then e.group, e.at = 0, e.reply
    elseif spoken[pid] then e.group, e.at = 2, tonumber(raw)
    else e.group, e.at = 1, tonumber(raw) end
    table.insert(out, e)
  end
  table.sort(out, function(a, b)
    if a.group ~= b.group then return a.group < b.group end
    return a.at < b.at
  end)
  return out
end
-- True when that order is plain raise time (no replies; fifo, or nobody has spoken yet):
-- then ZRANK answers a position without sorting the whole queue.
local function by_raise_time()
  if redis.call('EXISTS', KEYS[6]) == 1 then return false end
  return redis.call('HGET', KEYS[1], 'order') ~= 'fair' or redis.call('EXISTS', KEYS[7]) == 0
end
local function position_of(pid)
  if by_raise_time() then
    local rank = redis.call('ZRANK', KEYS[3], pid)
    return rank and rank + 1
  end
  for i, e in ipairs(ordered()) do if e.pid == pid then return i end end
  return nil
end
local function drop_hand(pid)
  redis.call('ZREM', KEYS[6], pid)
  redis.call('HDEL', KEYS[8], pid)
  return redis.call('ZREM', KEYS[3], pid) == 1
end
-- The turn the replies answer is over: they become ordinary hands in place.
local function end_replies(ev)
  local rs = redis.call('ZRANGE', KEYS[6], 0, -1)
  if #rs == 0 then return end
  redis.call('DEL', KEYS[6], KEYS[8])
  ev.replies_ended = rs
end
"""

_JOIN = _HEAD + """
-- ARGV 4: encoded fields json, 5: typed event fields json, 6: cap (0: none)
if not is_open() then return redis.error_reply('room closed') end
if present(ARGV[3]) then return 0 end
-- The set holds callers in the pre-join window too: the count and the add are one step.
local cap = tonumber(ARGV[6])
if cap > 0 and redis.call('SCARD', KEYS[2]) >= cap then return redis.error_reply('room full') end
local fields = cjson.decode(ARGV[4])
local at = math.floor(now_us() / 1000)
redis.call('HSET', KEYS[5], 'joined_at', at)
for k, v in pairs(fields) do redis.call('HSET', KEYS[5], k, v) end
redis.call('SADD', KEYS[2], ARGV[3])
local ev = cjson.decode(ARGV[5])
ev.type = 'participant.joined'; ev.room = ARGV[2]; ev.participant = ARGV[3]; ev.at = at
emit(KEYS[4], ARGV[1], ev)
return 1
"""

_LEAVE = _HEAD + """
-- ARGV 4: reason
if not present(ARGV[3]) then return 0 end
redis.call('SREM', KEYS[2], ARGV[3])
local lowered = drop_hand(ARGV[3])
local speaking = redis.call('HGET', KEYS[1], 'speaker') == ARGV[3]
local ev = {type='participant.left', room=ARGV[2], participant=ARGV[3],
  reason=ARGV[4], hand_lowered=lowered, speaker_ended=speaking}
if speaking then
  redis.call('HDEL', KEYS[1], 'speaker', 'speaker_since')
  end_replies(ev)
end
redis.call('DEL', KEYS[5])
emit(KEYS[4], ARGV[1], ev)
return 1
"""

_UPDATE = _HEAD + """
-- ARGV 4: encoded fields json, 5: typed fields json
if not present(ARGV[3]) then return redis.error_reply('no such participant') end
local ev = {type='participant.updated', room=ARGV[2], participant=ARGV[3]}
local n = set_changed(KEYS[5], ARGV[4], ARGV[5], ev)
if n > 0 then emit(KEYS[4], ARGV[1], ev) end
return n
"""

_RAISE = _HEAD + """
-- ARGV 4: source. Returns {position, 1 if newly raised else 0}.
if not present(ARGV[3]) then return redis.error_reply('no such participant') end
if redis.call('ZSCORE', KEYS[3], ARGV[3]) then return {position_of(ARGV[3]), 0} end
local score = next_score()
redis.call('ZADD', KEYS[3], score, ARGV[3])
redis.call('HSET', KEYS[5], 'hand_source', ARGV[4])
local position = position_of(ARGV[3])
emit(KEYS[4], ARGV[1], {type='hand.raised', room=ARGV[2], participant=ARGV[3],
  source=ARGV[4], position=position, raised_at=math.floor(score / 1000), kind='point'})
return {position, 1}
"""

_REPLY = _HEAD + """
-- ARGV 4: source. Returns {position, 1 if it became a reply now else 0};
-- {0, -1} when nobody speaks, {0, -2} when the caller is the speaker.
if not present(ARGV[3]) then return redis.error_reply('no such participant') end
local speaker = redis.call('HGET', KEYS[1], 'speaker')
if not speaker then return {0, -1} end
if speaker == ARGV[3] then return {0, -2} end
if redis.call('ZSCORE', KEYS[6], ARGV[3]) then return {position_of(ARGV[3]), 0} end
local score = next_score()
local had = redis.call('ZSCORE', KEYS[3], ARGV[3])
if not had then
  redis.call('ZADD', KEYS[3], score, ARGV[3])
  redis.call('HSET', KEYS[5], 'hand_source', ARGV[4])
end
redis.call('ZADD', KEYS[6], score, ARGV[3])
redis.call('HSET', KEYS[8], ARGV[3], speaker)
local position = position_of(ARGV[3])
if had then
  emit(KEYS[4], ARGV[1], {type='hand.updated', room=ARGV[2], participant=ARGV[3], kind='reply',
    reply_to=speaker, position=position, by=ARGV[4]})
else
  emit(KEYS[4], ARGV[1], {type='hand.raised', room=ARGV[2], participant=ARGV[3],
    source=ARGV[4], position=position, raised_at=math.floor(score / 1000), kind='reply',
    reply_to=speaker})
end
return {position, 1}
"""

_LOWER = _HEAD + """
-- ARGV 4: who lowered it (source)
if not drop_hand(ARGV[3]) then return 0 end
redis.call('HDEL', KEYS[5], 'hand_topic')
emit(KEYS[4], ARGV[1], {type='hand.lowered', room=ARGV[2], participant=ARGV[3], by=ARGV[4]})
return 1
"""

_LOWER_ALL = _HEAD + """
-- ARGV 3: unused, 4: by, 5: participant key prefix, 6: how long it can be undone (ms)
local hands = ordered()
if #hands == 0 then return 0 end
local pids, saved = {}, {}
for _, e in ipairs(hands) do
  local p = ARGV[5] .. e.pid
  table.insert(pids, e.pid)
  -- Scores stay the strings Redis gave: cjson would round microsecond numbers.
  table.insert(saved, {e.pid, e.raw, redis.call('HGET', p, 'hand_source') or '',
    redis.call('HGET', p, 'hand_topic') or '',
    e.reply and redis.call('ZSCORE', KEYS[6], e.pid) or '',
    redis.call('HGET', KEYS[8], e.pid) or ''})
  redis.call('HDEL', p, 'hand_topic')
end
redis.call('SET', KEYS[9], cjson.encode(saved), 'PX', ARGV[6])
redis.call('DEL', KEYS[3], KEYS[6], KEYS[8])
emit(KEYS[4], ARGV[1], {type='hands.cleared', room=ARGV[2], participants=pids, by=ARGV[4]})
return #hands
"""

_UNDO_LOWER_ALL = _HEAD + """
-- ARGV 3: unused, 4: by, 5: participant key prefix. Returns how many hands came back,
-- -1 if there is nothing to undo (too late, or undone already).
local blob = redis.call('GET', KEYS[9])
if not blob then return -1 end
redis.call('DEL', KEYS[9])
local speaker = redis.call('HGET', KEYS[1], 'speaker')
local back = 0
for _, h in ipairs(cjson.decode(blob)) do
  local pid, raw, source, topic, reply, reply_to = h[1], h[2], h[3], h[4], h[5], h[6]
  -- Gone, or has the floor now: not put back. Raised again meanwhile: one hand, the old place.
  if present(pid) and pid ~= speaker then
    local p = ARGV[5] .. pid
    redis.call('ZADD', KEYS[3], raw, pid)
    if source ~= '' then redis.call('HSET', p, 'hand_source', source) end
    if topic ~= '' and not redis.call('HGET', p, 'hand_topic') then
      redis.call('HSET', p, 'hand_topic', topic)
    end
    if reply ~= '' and reply_to == speaker then
      redis.call('ZADD', KEYS[6], reply, pid)
      redis.call('HSET', KEYS[8], pid, reply_to)
    end
    back = back + 1
  end
end
if back == 0 then return 0 end
local pids = {}
for _, e in ipairs(ordered()) do table.insert(pids, e.pid) end
emit(KEYS[4], ARGV[1], {type='hands.restored', room=ARGV[2], participants=pids, by=ARGV[4]})
return back
"""

_CALL_ON = _HEAD + """
-- ARGV 3: participant id or '' for the next hand; 4: by; 5: participant key prefix.
-- Returns {speaker, previous speaker or ''}, or false when no hand is up.
local pid = ARGV[3]
if pid == '' then
  local first
  if by_raise_time() then first = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
  else first = (ordered()[1] or {}).pid end
  if not first then return false end
  pid = first
elseif not present(pid) then
  return redis.error_reply('no such participant')
end
local previous = redis.call('HGET', KEYS[1], 'speaker')
if previous == pid then return {pid, ''} end
local replying = redis.call('ZSCORE', KEYS[6], pid)
local had_hand = drop_hand(pid)
if had_hand then redis.call('HDEL', ARGV[5] .. pid, 'hand_topic') end
redis.call('HSET', KEYS[1], 'speaker', pid, 'speaker_since', math.floor(now_us() / 1000))
redis.call('SADD', KEYS[7], pid)
local ev = {type='speaker.called', room=ARGV[2], participant=pid, by=ARGV[4], from_queue=had_hand}
if previous then ev.previous = previous end
-- A reply keeps the exchange going; anyone else starts a new turn.
if replying then ev.kind = 'reply' else end_replies(ev) end
emit(KEYS[4], ARGV[1], ev)
return {pid, previous or ''}
"""

_DONE = _HEAD + """
-- ARGV 3: participant id or '' for whoever speaks; 4: by
local current = redis.call('HGET', KEYS[1], 'speaker')
if not current or (ARGV[3] ~= '' and ARGV[3] ~= current) then return 0 end
redis.call('HDEL', KEYS[1], 'speaker', 'speaker_since')
local ev = {type='speaker.done', room=ARGV[2], participant=current, by=ARGV[4]}
end_replies(ev)
emit(KEYS[4], ARGV[1], ev)
return 1
"""

_LINE = _HEAD + """
-- The raised hands' ids in queue order.
local pids = {}
for _, e in ipairs(ordered()) do table.insert(pids, e.pid) end
return pids
"""

_HEAD_CHANGE = _HEAD + """
-- The first hand in line ('' if none) and the id of the last event, in one atomic step.
local first
if by_raise_time() then first = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
else first = (ordered()[1] or {}).pid end
first = first or ''
local last = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 1)
last = #last > 0 and last[1][1] or '0-0'
-- ARGV 4: ttl of the marker (KEYS[10]: head, ms, seq of the read it was recorded at).
-- Returns {first, outcome}: -1 a stale read (older than the one recorded), 0 the same
-- head, 1 a head after an empty queue, 2 a different head, 3 the first look, 4 a new
-- head whose hand was raised (or made a reply) straight into first place since.
local ms, seq = string.match(last, '^(%d+)-(%d+)$')
ms, seq = tonumber(ms), tonumber(seq)
local at_ms = tonumber(redis.call('HGET', KEYS[10], 'ms') or '-1')
local at_seq = tonumber(redis.call('HGET', KEYS[10], 'seq') or '-1')
if ms < at_ms or (ms == at_ms and seq < at_seq) then return {first, -1} end
local head = redis.call('HGET', KEYS[10], 'head')
redis.call('HSET', KEYS[10], 'head', first, 'ms', ms, 'seq', seq)
redis.call('EXPIRE', KEYS[10], tonumber(ARGV[4]))
if head == false then return {first, 3} end
if head == first then return {first, 0} end
if first ~= '' then
  local since = redis.call('XRANGE', KEYS[4], '(' .. at_ms .. '-' .. at_seq, last, 'COUNT', 10000)
  for _, entry in ipairs(since) do
    local ok, ev = pcall(cjson.decode, entry[2][2])
    if ok and type(ev) == 'table' and ev.participant == first
        and (ev.type == 'hand.raised' or ev.type == 'hand.updated')
        and (ev.position == nil or ev.position == 1) then
      return {first, 4}
    end
  end
end
if head == '' then return {first, 1} end
return {first, 2}
"""

_NEW_MEETING = _HEAD + """
-- The conference ended: nobody has spoken in the next meeting yet.
return redis.call('DEL', KEYS[7])
"""

_VIEW = _HEAD + """
-- One participant's part of _SNAPSHOT (ARGV 1: participant key prefix, 2: participant id):
-- the same fields, with only their hash, only their hand, and the hand's place in line.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 1)
local last_id = '0-0'
if #last > 0 then last_id = last[1][1] end
local pid = ARGV[2]
local people, hands, position = {}, {}, 0
if present(pid) then table.insert(people, {pid, redis.call('HGETALL', ARGV[1] .. pid)}) end
local raw = redis.call('ZSCORE', KEYS[3], pid)
if raw then
  position = position_of(pid)
  local reply = redis.call('ZSCORE', KEYS[6], pid)
  table.insert(hands, {pid, raw, reply and 'reply' or 'point',
    reply and redis.call('HGET', KEYS[8], pid) or ''})
end
local spoken = {}
if redis.call('SISMEMBER', KEYS[7], pid) == 1 then spoken = {pid} end
return {now, last_id, redis.call('HGET', KEYS[1], 'speaker') or '',
  redis.call('HGET', KEYS[1], 'speaker_since') or '', hands, people,
  redis.call('PTTL', KEYS[9]), spoken, position}
"""

_SNAPSHOT = _HEAD + """
-- ARGV 1: participant key prefix
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 1)
local last_id = '0-0'
if #last > 0 then last_id = last[1][1] end
local people = {}
for _, pid in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  table.insert(people, {pid, redis.call('HGETALL', ARGV[1] .. pid)})
end
local hands = {}
for _, e in ipairs(ordered()) do
  table.insert(hands, {e.pid, e.raw, e.reply and 'reply' or 'point',
    e.reply and redis.call('HGET', KEYS[8], e.pid) or ''})
end
return {now, last_id, redis.call('HGET', KEYS[1], 'speaker') or '',
  redis.call('HGET', KEYS[1], 'speaker_since') or '', hands, people,
  redis.call('PTTL', KEYS[9]), redis.call('SMEMBERS', KEYS[7])}
"""


class Queue:
    """Participants and the hand queue of every room, over one Redis client."""

    def __init__(self, redis: Redis, *, maxlen: int = DEFAULT_MAXLEN) -> None:
        self.redis = redis
        self.maxlen = maxlen
        self._scripts = {
            name: redis.register_script(src)
            for name, src in {
                "join": _JOIN, "leave": _LEAVE, "update": _UPDATE, "raise": _RAISE,
                "reply": _REPLY, "lower": _LOWER, "lower_all": _LOWER_ALL,
                "undo_lower_all": _UNDO_LOWER_ALL, "call_on": _CALL_ON, "done": _DONE,
                "line": _LINE, "head_change": _HEAD_CHANGE,
                "new_meeting": _NEW_MEETING,
                "snapshot": _SNAPSHOT, "view": _VIEW,
            }.items()
        }

    @staticmethod
    def _keys(room: str, pid: str) -> list[str]:
        return [
            key(room, "room"), key(room, "participants"), key(room, "hands"),
            key(room, "events"), key(room, "p", pid or "_"), key(room, "replies"),
            key(room, "spoken"), key(room, "reply-to"), key(room, "undo-lower-all"),
        ]

    async def _run(self, name: str, room: str, pid: str, *args: object) -> Any:
        try:
            return await self._scripts[name](keys=self._keys(room, pid),
                                             args=[self.maxlen, room, pid, *args])
        except ResponseError as exc:
            message = str(exc)
            if "no such participant" in message:
                raise NotFound(f"Participant {pid!r} is not in room {room!r}.") from exc
            if "room closed" in message:
                raise Invalid(f"Room {room!r} is closed.") from exc
            raise

    # --- participants ----------------------------------------------------------------

    async def join(
        self,
        room: str,
        *,
        role: Role = "participant",
        call_sid: str | None = None,
        label: str | None = None,
        number: str | None = None,
        name: str | None = None,
        muted: bool = True,
        hold: bool = False,
        channels: Iterable[Channel] = ("phone",),
        participant_id: str | None = None,
        cap: int | None = None,
    ) -> str:
        """Add a participant (one phone call); returns its id. Joining twice is a no-op.

        With ``cap``, a room that already holds ``cap`` participants refuses a newcomer
        with :class:`RoomFull` (checked and added in one step, so racing callers cannot
        overfill it); one already present is still a no-op.
        """
        pid = participant_id or new_id("p")
        chans = _channels(channels)
        encoded = {
            "role": role, "muted": _b(muted), "hold": _b(hold), "channels": ",".join(chans),
        }
        for k, v in {"call_sid": call_sid, "label": label, "number": number, "name": name}.items():
            if v is not None:
                encoded[k] = v
        typed = {
            "role": role, "label": label or "", "name": name or "",
            "number_masked": mask_number(number), "muted": muted, "hold": hold,
            "channels": list(chans),
        }
        try:
            await self._run("join", room, pid, json.dumps(encoded), json.dumps(typed), cap or 0)
        except ResponseError as exc:
            if cap and "room full" in str(exc):
                raise RoomFull(room, cap) from exc
            raise
        await mark_live(self.redis, room)  # after the join: see rooms.sweep_live_rooms
        return pid

    async def leave(self, room: str, pid: str, *, reason: str = "left") -> bool:
        """Remove a participant with its hand and any speaker state. False if not present."""
        return bool(await self._run("leave", room, pid, reason))

    async def update(
        self,
        room: str,
        pid: str,
        *,
        muted: bool | None = None,
        hold: bool | None = None,
        name: str | None = None,
        name_max: int = NAME_MAX,
        label: str | None = None,
        channels: Iterable[Channel] | None = None,
        call_sid: str | None = None,
    ) -> int:
        """Change participant fields; one event names the fields that changed. Returns the count."""
        typed: dict[str, Any] = {
            k: v for k, v in {"muted": muted, "hold": hold, "label": label, "call_sid": call_sid}.items()
            if v is not None
        }
        if name is not None:
            name = name.strip()
            if len(name) > name_max or any(ord(c) < 32 for c in name):
                raise Invalid(f"A name can be at most {name_max} printable characters.")
            typed["name"] = name
        if channels is not None:
            typed["channels"] = _channels(channels)
        if not typed:
            return 0
        return int(await self._run("update", room, pid, *encode_changes(typed)))

    async def participant(self, room: str, pid: str) -> Participant:
        h = await self.redis.hgetall(key(room, "p", pid))
        if not h:
            raise NotFound(f"Participant {pid!r} is not in room {room!r}.")
        return _participant(room, pid, h)

    async def room_and_participant(self, room: str, pid: str) -> tuple[Room, Participant]:
        """The room and one of its participants, in one round trip.

        Raises
        ------
        NotFound
            For either (a malformed room id too).
        """
        found, _ = await self.room_and_participant_with(room, pid)
        if isinstance(found, NotFound):
            raise found
        return found

    async def room_and_participant_with(
        self, room: str, pid: str, *reads: Callable[[Any], object],
    ) -> tuple[tuple[Room, Participant] | NotFound, list[Any]]:
        """:meth:`room_and_participant` (or the NotFound it would raise) and the results
        of ``reads`` (each adds one command to the pipeline it is given), in one round
        trip: for a caller that needs both at once (a key pressed in a stream)."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(key(room, "room"))
                pipe.hgetall(key(room, "p", pid))
                for read in reads:
                    read(pipe)
                room_h, p_h, *results = await pipe.execute()
        except ValueError:
            return NotFound(f"There is no room {room!r}."), [None] * len(reads)
        if not room_h:
            return NotFound(f"There is no room {room!r}."), results
        if not p_h:
            return NotFound(f"Participant {pid!r} is not in room {room!r}."), results
        return (_room_from_hash(room, room_h), _participant(room, pid, p_h)), results

    # --- hands -----------------------------------------------------------------------

    async def raise_hand(self, room: str, pid: str, *, source: Source) -> tuple[int, bool]:
        """Raise ``pid``'s hand; returns (position, newly raised). A second raise keeps its place."""
        if source not in SOURCES:
            raise Invalid(f"source must be one of {', '.join(SOURCES)}.")
        position, new = await self._run("raise", room, pid, source)
        return int(position), bool(new)

    async def reply(self, room: str, pid: str, *, source: Source) -> tuple[int, bool]:
        """Raise ``pid``'s hand as a reply to the current speaker; (position, newly a reply).

        A point already up becomes a reply (keeping its first raise time for when the turn
        ends); a reply raised again keeps its place. Invalid if nobody speaks, or if ``pid``
        is the speaker (:class:`NoSpeaker`, :class:`IsSpeaker`).
        """
        if source not in SOURCES:
            raise Invalid(f"source must be one of {', '.join(SOURCES)}.")
        position, new = await self._run("reply", room, pid, source)
        if int(new) == -1:
            raise NoSpeaker("Nobody is speaking, so there is nothing to reply to.")
        if int(new) == -2:
            raise IsSpeaker("You are speaking now: there is nothing to reply to.")
        return int(position), bool(new)

    async def lower_hand(self, room: str, pid: str, *, by: Source) -> bool:
        """Lower ``pid``'s hand; False if it was not raised."""
        return bool(await self._run("lower", room, pid, by))

    async def lower_all(self, room: str, *, by: Source = "host") -> int:
        """Lower every hand in one event; returns how many were up."""
        return int(await self._run("lower_all", room, "", by, key(room, "p", ""),
                                   UNDO_LOWER_ALL_S * 1000))

    async def undo_lower_all(self, room: str, *, by: Source = "host") -> int | None:
        """Put back the hands the last "lower all" took down, in the same order, with their
        sources and topics; None if there is nothing to undo (too late, or done already).

        Someone who raised again meanwhile gets their old place back (one hand, not two);
        someone who left, or who speaks now, is not put back.
        """
        n = int(await self._run("undo_lower_all", room, "", by, key(room, "p", "")))
        return None if n < 0 else n

    async def set_topic(self, room: str, pid: str, topic: str) -> int:
        """The note shown with ``pid``'s hand ("" clears it); it goes when the hand goes down."""
        topic = " ".join(topic.split())
        if len(topic) > TOPIC_MAX or any(ord(c) < 32 for c in topic):
            raise Invalid(f"A topic can be at most {TOPIC_MAX} characters.")
        return int(await self._run("update", room, pid, *encode_changes({"hand_topic": topic})))

    async def line(self, room: str) -> list[str]:
        """The ids of the raised hands in queue order (the order every position follows)."""
        return [str(p) for p in await self._run("line", room, "")]

    async def position(self, room: str, pid: str) -> int | None:
        """``pid``'s place in line (1 is next), None if their hand is down."""
        line = await self.line(room)
        return line.index(pid) + 1 if pid in line else None

    async def first_in_line(self, room: str) -> str | None:
        """Who would be called on next ("Call on next"), None if no hand is up."""
        line = await self.line(room)
        return line[0] if line else None

    async def head_change(self, room: str, marker: str, ttl_s: int) -> tuple[str | None, HeadChange]:
        """(who is first in line or None, how that compares with the head last recorded
        under the key ``marker``), and the head recorded there with the id of this read:
        one atomic step, so that of any number of callers exactly one sees a given change.

        A read older than the one recorded (``"stale"``) changes nothing. ``"raised_first"``
        is a new head whose hand went straight into first place since the recorded read (a
        raise into an empty queue, a reply put ahead): its caller was told "number 1" then.
        """
        first, outcome = await self._scripts["head_change"](
            keys=[*self._keys(room, ""), marker], args=[self.maxlen, room, "", ttl_s])
        return str(first) or None, _HEAD_CHANGES[int(outcome)]

    async def new_meeting(self, room: str) -> None:
        """The conference ended: forget who has spoken (the fair order starts afresh)."""
        await self._run("new_meeting", room, "")

    async def queue(self, room: str) -> list[Hand]:
        """Raised hands, first raised first, with positions and wait times."""
        return (await self.snapshot(room)).queue

    async def call_on(self, room: str, pid: str | None = None, *, by: Source = "host") -> Turn | None:
        """Make ``pid`` (or the first hand) the speaker; their hand leaves the queue.

        Returns the new turn, naming the speaker it replaced (read in the same atomic step,
        so of two racing calls exactly one sees the other as previous); None if ``pid`` is
        None and no hand is up.
        """
        result = await self._run("call_on", room, pid or "", by, key(room, "p", ""))
        if not result:
            return None
        speaker, previous = result
        return Turn(speaker=str(speaker), previous=str(previous) or None)

    async def done_speaking(self, room: str, pid: str | None = None, *, by: Source = "host") -> bool:
        """End ``pid``'s turn (or whoever speaks). False if they were not the speaker."""
        return bool(await self._run("done", room, pid or "", by))

    async def speaker(self, room: str) -> str | None:
        return await self.redis.hget(key(room, "room"), "speaker") or None

    async def snapshot(self, room: str) -> RoomState:
        """Participants, queue (in its order), speaker and last event id, in one atomic step."""
        result = await self._scripts["snapshot"](keys=self._keys(room, ""), args=[key(room, "p", "")])
        return _state(room, *result)

    async def view(self, room: str, pid: str) -> RoomState:
        """One participant's part of a :meth:`snapshot`, read in one atomic step: the room's
        speaker, clock and last event id as there, but only ``pid`` among the participants
        (none once they have gone) and only their hand in the queue, at its place in line.

        A caller's own page shows nothing else, and reading the other 249 callers of a full
        room for it was a good part of a busy room's snapshots (bench/meeting.py).
        """
        *result, position = await self._scripts["view"](keys=self._keys(room, pid),
                                                        args=[key(room, "p", ""), pid])
        return _state(room, *result, first_position=int(position))


def _state(room: str, now: Any, last_id: Any, speaker: Any, since: Any, hands: list[Any],
           people: list[Any], undo_ms: Any, spoken: list[Any], *,
           first_position: int = 1) -> RoomState:
    """A :class:`RoomState` from the fields of ``_SNAPSHOT`` (or ``_VIEW``, whose one hand
    is at ``first_position``)."""
    hashes = {pid: dict(zip(flat[::2], flat[1::2], strict=True)) for pid, flat in people if flat}
    participants = sorted(
        (_participant(room, pid, h) for pid, h in hashes.items()),
        key=lambda p: (p.joined_at, p.id),
    )
    queue = []
    for i, (pid, score, kind, reply_to) in enumerate(hands, start=first_position):
        raised = int(float(score) // 1000)
        queue.append(
            Hand(
                participant=pid,
                position=i,
                raised_at=raised,
                wait_s=max(0.0, (int(now) - raised) / 1000),
                source=hashes.get(pid, {}).get("hand_source"),
                kind="reply" if kind == "reply" else "point",
                reply_to=reply_to or None,
            )
        )
    return RoomState(room, participants, queue, speaker or None, str(last_id), int(now),
                     int(since) if speaker and since else None,
                     int(now) + int(undo_ms) if int(undo_ms) > 0 else None,
                     frozenset(str(p) for p in spoken))


def _b(value: bool) -> str:
    return "1" if value else "0"


def _channels(channels: Iterable[str]) -> tuple[Channel, ...]:
    chans = tuple(sorted(set(channels)))
    for c in chans:
        if c not in CHANNELS:
            raise Invalid(f"channel must be one of {', '.join(CHANNELS)}.")
    return chans  # type: ignore[return-value]


def _participant(room: str, pid: str, h: dict[str, str]) -> Participant:
    return Participant(
        id=pid,
        room=room,
        role="host" if h.get("role") == "host" else "participant",
        call_sid=h.get("call_sid") or None,
        label=h.get("label") or None,
        number=h.get("number") or None,
        name=h.get("name") or None,
        muted=h.get("muted", "1") == "1",
        hold=h.get("hold") == "1",
        channels=_channels(c for c in h.get("channels", "").split(",") if c in CHANNELS),
        joined_at=int(h.get("joined_at", "0")),
        conference_sid=h.get("conference_sid") or None,
        topic=h.get("hand_topic") or None,
    )
