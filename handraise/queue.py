"""Participants and the hand queue: the domain, Redis-backed, no web framework.

Every mutation is one Lua script over the room's keys (one hash tag, so one Cluster slot)
that changes state and appends its event together; an operation that changes nothing
appends nothing. Times come from the Redis server's clock, so every process agrees.

The queue is FIFO by the moment a hand went up; raising again keeps the first place.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from redis.exceptions import ResponseError

from .errors import Conflict, Invalid, NotFound
from .events import LUA_EMIT, encode_changes
from .rooms import DEFAULT_MAXLEN, Role, mark_live, new_id
from .store import Redis, key

Source = Literal["keypad", "web", "prompt", "host", "api"]
SOURCES: tuple[Source, ...] = ("keypad", "web", "prompt", "host", "api")
Channel = Literal["phone", "web"]
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


@dataclass(frozen=True)
class Hand:
    participant: str
    position: int
    raised_at: int  # ms, Redis clock
    wait_s: float
    source: str | None


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

    def participant(self, pid: str) -> Participant | None:
        return next((p for p in self.participants if p.id == pid), None)


# --- scripts ------------------------------------------------------------------------------
# Common KEYS order: 1 room, 2 participants, 3 hands, 4 events, 5 participant hash.
# Common ARGV head: 1 maxlen, 2 room id, 3 participant id.

_HEAD = LUA_EMIT + """
local function is_open() return redis.call('HGET', KEYS[1], 'status') == 'open' end
local function present(pid) return redis.call('SISMEMBER', KEYS[2], pid) == 1 end
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
local lowered = redis.call('ZREM', KEYS[3], ARGV[3]) == 1
local speaking = redis.call('HGET', KEYS[1], 'speaker') == ARGV[3]
if speaking then redis.call('HDEL', KEYS[1], 'speaker', 'speaker_since') end
redis.call('DEL', KEYS[5])
emit(KEYS[4], ARGV[1], {type='participant.left', room=ARGV[2], participant=ARGV[3],
  reason=ARGV[4], hand_lowered=lowered, speaker_ended=speaking})
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
local rank = redis.call('ZRANK', KEYS[3], ARGV[3])
if rank then return {rank + 1, 0} end
-- Strictly increasing scores keep FIFO order even for raises in the same microsecond.
local score = now_us()
local last = tonumber(redis.call('HGET', KEYS[1], 'hand_clock') or '0')
if score <= last then score = last + 1 end
redis.call('HSET', KEYS[1], 'hand_clock', score)
redis.call('ZADD', KEYS[3], score, ARGV[3])
redis.call('HSET', KEYS[5], 'hand_source', ARGV[4])
local position = redis.call('ZRANK', KEYS[3], ARGV[3]) + 1
emit(KEYS[4], ARGV[1], {type='hand.raised', room=ARGV[2], participant=ARGV[3],
  source=ARGV[4], position=position, raised_at=math.floor(score / 1000)})
return {position, 1}
"""

_LOWER = _HEAD + """
-- ARGV 4: who lowered it (source)
if redis.call('ZREM', KEYS[3], ARGV[3]) == 0 then return 0 end
redis.call('HDEL', KEYS[5], 'hand_topic')
emit(KEYS[4], ARGV[1], {type='hand.lowered', room=ARGV[2], participant=ARGV[3], by=ARGV[4]})
return 1
"""

_LOWER_ALL = _HEAD + """
-- ARGV 3: unused, 4: by, 5: participant key prefix
local hands = redis.call('ZRANGE', KEYS[3], 0, -1)
if #hands == 0 then return 0 end
redis.call('DEL', KEYS[3])
for _, pid in ipairs(hands) do redis.call('HDEL', ARGV[5] .. pid, 'hand_topic') end
emit(KEYS[4], ARGV[1], {type='hands.cleared', room=ARGV[2], participants=hands, by=ARGV[4]})
return #hands
"""

_CALL_ON = _HEAD + """
-- ARGV 3: participant id or '' for the next hand; 4: by; 5: participant key prefix.
-- Returns {speaker, previous speaker or ''}, or false when no hand is up.
local pid = ARGV[3]
if pid == '' then
  local first = redis.call('ZRANGE', KEYS[3], 0, 0)
  if #first == 0 then return false end
  pid = first[1]
elseif not present(pid) then
  return redis.error_reply('no such participant')
end
local previous = redis.call('HGET', KEYS[1], 'speaker')
if previous == pid then return {pid, ''} end
local had_hand = redis.call('ZREM', KEYS[3], pid) == 1
if had_hand then redis.call('HDEL', ARGV[5] .. pid, 'hand_topic') end
redis.call('HSET', KEYS[1], 'speaker', pid, 'speaker_since', math.floor(now_us() / 1000))
local ev = {type='speaker.called', room=ARGV[2], participant=pid, by=ARGV[4], from_queue=had_hand}
if previous then ev.previous = previous end
emit(KEYS[4], ARGV[1], ev)
return {pid, previous or ''}
"""

_DONE = _HEAD + """
-- ARGV 3: participant id or '' for whoever speaks; 4: by
local current = redis.call('HGET', KEYS[1], 'speaker')
if not current or (ARGV[3] ~= '' and ARGV[3] ~= current) then return 0 end
redis.call('HDEL', KEYS[1], 'speaker', 'speaker_since')
emit(KEYS[4], ARGV[1], {type='speaker.done', room=ARGV[2], participant=current, by=ARGV[4]})
return 1
"""

_SNAPSHOT = """
-- KEYS 1 room, 2 participants, 3 hands, 4 events ; ARGV 1: participant key prefix
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 1)
local last_id = '0-0'
if #last > 0 then last_id = last[1][1] end
local people = {}
for _, pid in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  table.insert(people, {pid, redis.call('HGETALL', ARGV[1] .. pid)})
end
return {now, last_id, redis.call('HGET', KEYS[1], 'speaker') or '',
  redis.call('HGET', KEYS[1], 'speaker_since') or '',
  redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES'), people}
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
                "lower": _LOWER, "lower_all": _LOWER_ALL, "call_on": _CALL_ON,
                "done": _DONE, "snapshot": _SNAPSHOT,
            }.items()
        }

    async def _run(self, name: str, room: str, pid: str, *args: object) -> Any:
        keys = [
            key(room, "room"), key(room, "participants"), key(room, "hands"),
            key(room, "events"), key(room, "p", pid or "_"),
        ]
        try:
            return await self._scripts[name](keys=keys, args=[self.maxlen, room, pid, *args])
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

    # --- hands -----------------------------------------------------------------------

    async def raise_hand(self, room: str, pid: str, *, source: Source) -> tuple[int, bool]:
        """Raise ``pid``'s hand; returns (position, newly raised). A second raise keeps its place."""
        if source not in SOURCES:
            raise Invalid(f"source must be one of {', '.join(SOURCES)}.")
        position, new = await self._run("raise", room, pid, source)
        return int(position), bool(new)

    async def lower_hand(self, room: str, pid: str, *, by: Source) -> bool:
        """Lower ``pid``'s hand; False if it was not raised."""
        return bool(await self._run("lower", room, pid, by))

    async def lower_all(self, room: str, *, by: Source = "host") -> int:
        """Lower every hand in one event; returns how many were up."""
        return int(await self._run("lower_all", room, "", by, key(room, "p", "")))

    async def set_topic(self, room: str, pid: str, topic: str) -> int:
        """The note shown with ``pid``'s hand ("" clears it); it goes when the hand goes down."""
        topic = " ".join(topic.split())
        if len(topic) > TOPIC_MAX or any(ord(c) < 32 for c in topic):
            raise Invalid(f"A topic can be at most {TOPIC_MAX} characters.")
        return int(await self._run("update", room, pid, *encode_changes({"hand_topic": topic})))

    async def position(self, room: str, pid: str) -> int | None:
        rank = await self.redis.zrank(key(room, "hands"), pid)
        return None if rank is None else int(rank) + 1

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
        """Participants, queue, speaker and last event id, read in one atomic step."""
        now, last_id, speaker, since, hands, people = await self._scripts["snapshot"](
            keys=[key(room, "room"), key(room, "participants"), key(room, "hands"),
                  key(room, "events")],
            args=[key(room, "p", "")],
        )
        hashes = {pid: dict(zip(flat[::2], flat[1::2], strict=True)) for pid, flat in people if flat}
        participants = sorted(
            (_participant(room, pid, h) for pid, h in hashes.items()),
            key=lambda p: (p.joined_at, p.id),
        )
        queue = []
        for i in range(0, len(hands), 2):
            pid, raised = hands[i], int(float(hands[i + 1]) // 1000)
            queue.append(
                Hand(
                    participant=pid,
                    position=i // 2 + 1,
                    raised_at=raised,
                    wait_s=max(0.0, (int(now) - raised) / 1000),
                    source=hashes.get(pid, {}).get("hand_source"),
                )
            )
        return RoomState(room, participants, queue, speaker or None, str(last_id), int(now),
                         int(since) if speaker and since else None)


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
