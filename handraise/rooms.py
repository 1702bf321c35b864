"""Rooms: create, look up by access or host code, list, show, update settings, close.

A room has a random id (no personal data), a 6-digit participant access code and a
different 6-digit host code, both unique across live rooms. Codes are indexed by their
SHA-256 (``hr:code:<hash>``), so the index never lists them; the host code is kept only
as a hash, the participant code in the clear because the host shows it to everyone.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import secrets
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from redis.exceptions import ResponseError

from .errors import Conflict, Invalid, NotFound
from .events import LUA_EMIT, encode_changes
from .store import Redis, eval_script, global_key, key

KeypadMode = Literal["stream", "star"]
KEYPAD_MODES: tuple[KeypadMode, ...] = ("stream", "star")
UnmuteMode = Literal["direct", "consent"]
UNMUTE_MODES: tuple[UnmuteMode, ...] = ("direct", "consent")
Role = Literal["host", "participant"]
QueueOrder = Literal["fifo", "fair"]
QUEUE_ORDERS: tuple[QueueOrder, ...] = ("fifo", "fair")

_ID_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_CODE = re.compile(r"^\d{6}$")
DEFAULT_MAXLEN = 10_000
#: How long a closed room's codes stay reserved (seconds) before they can be reused.
CLOSED_CODE_TTL = 30 * 24 * 3600


def new_id(prefix: str, length: int = 10) -> str:
    """A random id such as ``r7kq2m9xw3a`` (no personal data, safe in keys and URLs)."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def _random_code() -> str:
    while True:
        code = f"{secrets.randbelow(1_000_000):06d}"
        digits = [int(c) for c in code]
        steps = {b - a for a, b in itertools.pairwise(digits)}
        if len(steps) > 1:  # not 111111, 123456, 654321, ...
            return code


def clean_name(name: str) -> str:
    """A room name as shown: trimmed, control characters refused, 1 to 80 characters."""
    name = unicodedata.normalize("NFC", name).strip()
    if not name:
        raise Invalid("A room needs a name.")
    if len(name) > 80:
        raise Invalid("A room name can be at most 80 characters.")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise Invalid("A room name cannot contain control characters.")
    return name


@dataclass(frozen=True)
class RoomSetting:
    """One setting of a room, as the CLI, the dashboard and the API offer it.

    The table :data:`ROOM_SETTINGS` is the one place a setting is declared: its
    :class:`Room` attribute (same name), how a value is checked, its label and help. The CLI's
    ``--set NAME=VALUE``, the dashboard's "Room settings" form and the API's room fields
    are all made from it.
    """

    name: str
    kind: Literal["choice", "bool", "keys", "seconds"]
    default: str | bool | int
    label: str
    help: str
    #: kind "choice": the values allowed (the first is the default's place in lists).
    choices: tuple[str, ...] = ()
    #: kind "seconds": the largest value allowed (0 always means "off").
    maximum: int = 0
    #: Settable only when the room is created (the dashboard shows it read-only).
    create_only: bool = False

    def parse(self, value: object) -> str | bool | int:
        """The checked value from a typed value (API) or text (CLI, form); Invalid if wrong."""
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in {"1", "yes", "true", "on"}:
                return True
            if text in {"0", "no", "false", "off"}:
                return False
            raise Invalid(f"{self.name} must be yes or no (got {value!r}).")
        if self.kind == "seconds":
            if isinstance(value, bool):
                raise Invalid(f"{self.name} must be a number of seconds (got {value!r}).")
            try:
                seconds = int(str(value).strip() or "0") if not isinstance(value, int) else value
            except ValueError:
                raise Invalid(f"{self.name} must be a number of seconds (got {value!r}).") from None
            if not 0 <= seconds <= self.maximum:
                raise Invalid(f"{self.name} must be between 0 (off) and {self.maximum} seconds.")
            return seconds
        text = str(value).strip()
        if self.kind == "keys":
            return _check_keys(self.name, text)
        if text not in self.choices:
            raise Invalid(f"{self.name} must be one of {', '.join(self.choices)} (got {value!r}).")
        return text

    def encode(self, value: str | bool | int) -> str:
        """The value as the room hash keeps it."""
        if self.kind == "bool":
            return "1" if value else "0"
        return str(value)

    def decode(self, raw: str | None) -> str | bool | int:
        """The value from the room hash; the default where absent or unreadable (older rooms)."""
        if raw is None:
            return self.default
        if self.kind == "bool":
            return raw == "1"
        if self.kind == "seconds":
            return int(raw) if raw.isdigit() else self.default
        if self.kind == "choice":
            return raw if raw in self.choices else self.default
        return raw or self.default


ROOM_SETTINGS: tuple[RoomSetting, ...] = (
    RoomSetting("keypad_mode", "choice", "stream", "Keypad mode",
                "stream: tones detected in the forked call audio (needs the media-stream "
                "endpoint); star: * steps the caller out of the conference to read the key "
                "(works everywhere). Applies to callers who join after the change.",
                choices=KEYPAD_MODES),
    RoomSetting("end_on_host_exit", "bool", True, "End the meeting when the host hangs up",
                "When the host's call ends, end the conference for everyone."),
    RoomSetting("announce_web", "bool", False, "Confirm web raises on the phone",
                "Say on the phone that a hand raised from the companion page is up (by default "
                "the page alone says so)."),
    RoomSetting("raise_keys", "keys", "*1", "Raise keys", "The keys that raise a hand."),
    RoomSetting("lower_keys", "keys", "*2", "Lower keys", "The keys that lower a hand."),
    RoomSetting("unmute", "choice", "direct", "Unmuting",
                "direct: Call on unmutes the caller at once; consent: Call on (and Unmute) invites "
                "them, and they go live only when they press 1 or click Go live (2 or Stay muted "
                "declines; no answer in 15 s declines).",
                choices=UNMUTE_MODES),
    RoomSetting("accept_keys", "keys", "1", "Go-live key",
                "Consent rooms: the key that accepts an invitation to speak (it counts only "
                "while the caller's invitation waits)."),
    RoomSetting("decline_keys", "keys", "2", "Stay-muted key",
                "Consent rooms: the key that declines an invitation to speak."),
    RoomSetting("speak_limit_s", "seconds", 0, "Speaking limit (seconds)",
                "The speaker hears a short cue 15 s before the limit; at the limit the dashboard "
                "and their companion page show them over time.", maximum=3600),
    RoomSetting("auto_mute", "bool", False, "Mute at the speaking limit",
                "With a speaking limit: mute the speaker 10 s after it, with \"Time is up, thank "
                "you.\""),
    RoomSetting("announce_next", "bool", True, "Tell the next caller they are next",
                "When a hand becomes first in line, that caller hears \"You're next.\" privately "
                "(not when it is the only hand, just raised: they heard their place already)."),
    RoomSetting("where_keys", "keys", "*3", "Where-am-I keys",
                "The keys that tell a caller privately whether their hand is up and their place."),
    RoomSetting("help_keys", "keys", "*0", "Help keys",
                "The keys that tell a caller privately this room's keys, their web PIN and the "
                "companion page's address."),
    RoomSetting("host_call_next_keys", "keys", "*5", "Host: call on next",
                "The host's keys (on the phone) that call on the next hand."),
    RoomSetting("host_done_keys", "keys", "*6", "Host: done",
                "The host's keys that end the speaker's turn (mute them again)."),
    RoomSetting("host_queue_keys", "keys", "*7", "Host: hear the queue",
                "The host's keys that tell the host privately how many hands are up and whose is next."),
    RoomSetting("host_lower_all_keys", "keys", "*8", "Host: lower all",
                "The host's keys that lower every hand."),
    RoomSetting("host_mute_all_keys", "keys", "*9", "Host: mute all",
                "The host's keys that mute every caller."),
    RoomSetting("reply_keys", "keys", "*4", "Reply keys",
                "The keys that raise a reply to the current speaker: replies go ahead of new "
                "points while that turn lasts, then become ordinary hands in place."),
    RoomSetting("order", "choice", "fifo", "Queue order",
                "fifo: first raised, first called; fair: those not yet called on in this "
                "meeting go first (first raised first within each group).",
                choices=QUEUE_ORDERS),
)
SETTINGS_BY_NAME = {s.name: s for s in ROOM_SETTINGS}


InvitationStatus = Literal["pending", "accepted", "declined", "no_answer", "left"]


@dataclass(frozen=True)
class Invitation:
    """An invitation to speak (rooms whose ``unmute`` is ``consent``), kept in the room hash.

    ``pending`` until the caller answers or ``deadline`` (ms, Redis clock) passes; then
    ``accepted``, ``declined``, ``no_answer`` or ``left``, until the next invitation.
    """

    participant: str
    status: InvitationStatus
    invited_at: int
    deadline: int
    #: Made by "Call on next": a decline invites the next hand.
    next: bool
    #: When it was answered or expired (ms); None while pending.
    answered_at: int | None = None

    @property
    def pending(self) -> bool:
        return self.status == "pending"

    @classmethod
    def from_hash(cls, h: Mapping[str, str]) -> Invitation | None:
        pid, status = h.get("invite_pid"), h.get("invite_status")
        if not pid or status not in ("pending", "accepted", "declined", "no_answer", "left"):
            return None
        try:
            return cls(pid, status, int(h.get("invite_at", "0")),  # type: ignore[arg-type]
                       int(h.get("invite_deadline", "0")), h.get("invite_next") == "1",
                       int(h["invite_answered_at"]) if h.get("invite_answered_at") else None)
        except ValueError:
            return None


@dataclass(frozen=True)
class Room:
    id: str
    name: str
    access_code: str
    status: Literal["open", "closed"]
    keypad_mode: KeypadMode
    end_on_host_exit: bool
    raise_keys: str
    lower_keys: str
    created_at: int
    conference_sid: str | None = None
    #: Whether a hand raised from the companion page is confirmed on the phone too.
    announce_web: bool = False
    #: The keys that raise a reply to the current speaker.
    reply_keys: str = "*4"
    #: How the queue is ordered: "fifo", or "fair" (who has not spoken yet goes first).
    order: QueueOrder = "fifo"
    #: "direct": Call on unmutes; "consent": Call on invites (see :mod:`handraise.consent`).
    unmute: UnmuteMode = "direct"
    #: Consent rooms: the keys that answer an invitation (read only while one waits).
    accept_keys: str = "1"
    decline_keys: str = "2"
    #: Speaking limit in seconds (0: none), and whether the speaker is muted after it.
    speak_limit_s: int = 0
    auto_mute: bool = False
    #: The latest invitation to speak (consent rooms), kept after its answer for the host.
    invitation: Invitation | None = None
    #: Whether the caller whose hand becomes first in line hears "You're next." privately.
    announce_next: bool = True
    where_keys: str = "*3"
    help_keys: str = "*0"
    host_call_next_keys: str = "*5"
    host_done_keys: str = "*6"
    host_queue_keys: str = "*7"
    host_lower_all_keys: str = "*8"
    host_mute_all_keys: str = "*9"

    @property
    def conference_name(self) -> str:
        """The Twilio conference friendly name: derived from the id, so no personal data."""
        return f"handraise-{self.id}"

    def settings(self) -> dict[str, str | bool | int]:
        """Every setting of :data:`ROOM_SETTINGS` with its value in this room."""
        return {s.name: getattr(self, s.name) for s in ROOM_SETTINGS}

    def keys(self) -> dict[str, str]:
        """Every keys setting (name -> key sequence), such as ``{"raise_keys": "*1", ...}``."""
        return {s.name: str(getattr(self, s.name)) for s in ROOM_SETTINGS if s.kind == "keys"}

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "access_code": self.access_code,
            "status": self.status,
            **self.settings(),
            "created_at": self.created_at,
            "conference_name": self.conference_name,
            "conference_sid": self.conference_sid,
        }


def check_settings(changes: Mapping[str, object], current: Mapping[str, object] | None = None
                   ) -> dict[str, str | bool | int]:
    """Parse ``changes`` (names of :data:`ROOM_SETTINGS`) into checked values.

    ``current`` holds the room's present settings (or the defaults for a new room): keys
    settings are checked against all the others, so no two commands share keys.
    """
    checked: dict[str, str | bool | int] = {}
    for name, value in changes.items():
        setting = SETTINGS_BY_NAME.get(name)
        if setting is None:
            known = ", ".join(SETTINGS_BY_NAME)
            raise Invalid(f"There is no room setting {name!r}; the settings are: {known}.")
        checked[name] = setting.parse(value)
    merged = {**(current if current is not None else default_settings()), **checked}
    seen: dict[str, str] = {}
    for setting in ROOM_SETTINGS:
        if setting.kind != "keys":
            continue
        keys = str(merged[setting.name])
        if keys in seen:
            raise Invalid(f"{setting.name} and {seen[keys]} cannot both be {keys}.")
        seen[keys] = setting.name
    return checked


def default_settings() -> dict[str, str | bool | int]:
    return {s.name: s.default for s in ROOM_SETTINGS}


@dataclass(frozen=True)
class CreatedRoom:
    """A new room and both its codes (the host code is shown only here)."""

    room: Room
    host_code: str


_CREATE = LUA_EMIT + """
-- KEYS: room, events ; ARGV: maxlen, room_id, name, access_code, host_code_hash,
--       then setting name, value pairs
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.error_reply('room exists') end
local at = math.floor(now_us() / 1000)
redis.call('HSET', KEYS[1], 'name', ARGV[3], 'access_code', ARGV[4], 'host_code_hash', ARGV[5],
  'status', 'open', 'created_at', at)
for i = 6, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
emit(KEYS[2], ARGV[1], {type='room.created', room=ARGV[2], at=at, name=ARGV[3]})
return at
"""

_CLOSE = LUA_EMIT + """
-- KEYS: room, participants, hands, events, then the queue's other keys (replies...)
-- ARGV: maxlen, room_id, participant key prefix, web-PIN owner key prefix
if redis.call('HGET', KEYS[1], 'status') ~= 'open' then return 0 end
local members = redis.call('SMEMBERS', KEYS[2])
-- Dropping the PIN owner keys revokes the web PINs (pins.lookup_pin checks them).
for _, pid in ipairs(members) do redis.call('DEL', ARGV[3] .. pid, ARGV[4] .. pid) end
redis.call('DEL', KEYS[2], KEYS[3])
for i = 5, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('HDEL', KEYS[1], 'speaker', 'speaker_since', 'conference_sid', 'invite_pid', 'invite_status')
redis.call('HSET', KEYS[1], 'status', 'closed')
emit(KEYS[4], ARGV[1], {type='room.closed', room=ARGV[2], participants=#members})
return 1
"""

_UPDATE = LUA_EMIT + """
-- KEYS: room, events ; ARGV: maxlen, room_id, encoded json, typed json
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('no such room') end
local ev = {type='room.updated', room=ARGV[2]}
if set_changed(KEYS[1], ARGV[3], ARGV[4], ev) == 0 then return 0 end
emit(KEYS[2], ARGV[1], ev)
return 1
"""


def _room_from_hash(room_id: str, h: dict[str, str]) -> Room:
    return Room(
        id=room_id,
        name=h["name"],
        access_code=h["access_code"],
        status="closed" if h.get("status") == "closed" else "open",
        created_at=int(h.get("created_at", "0")),
        conference_sid=h.get("conference_sid") or None,
        invitation=Invitation.from_hash(h),
        **{s.name: s.decode(h.get(s.name)) for s in ROOM_SETTINGS},  # type: ignore[arg-type]
    )


def _check_keys(name: str, value: str) -> str:
    if not re.fullmatch(r"[*#]?[0-9A-D]", value):
        raise Invalid(f"{name} must be a key, optionally after * or #, such as *1 (got {value!r}).")
    return value


async def create_room(
    redis: Redis,
    name: str,
    *,
    maxlen: int = DEFAULT_MAXLEN,
    **settings: object,
) -> CreatedRoom:
    """Create a room with fresh codes, unique across live rooms.

    ``settings`` are names of :data:`ROOM_SETTINGS` (typed values or their text); the
    others keep their defaults.
    """
    name = clean_name(name)
    values = {**default_settings(), **check_settings(settings)}
    room_id = new_id("r")
    # Three slots, three steps (codes, room, index), in an order that is safe at every
    # point: a code claimed for a room that never came to be leads to no room
    # (lookup_code answers None), and a room is listed only once it exists.
    access_code = await _claim_code(redis, room_id, "participant")
    host_code = await _claim_code(redis, room_id, "host")
    pairs = [part for s in ROOM_SETTINGS for part in (s.name, s.encode(values[s.name]))]
    await eval_script(
        redis, _CREATE, 2, key(room_id, "room"), key(room_id, "events"),
        maxlen, room_id, name, access_code, code_hash(host_code), *pairs,
    )
    await redis.zadd(global_key("rooms"), {room_id: 0})
    return CreatedRoom(room=await get_room(redis, room_id), host_code=host_code)


async def _claim_code(redis: Redis, room_id: str, role: Role) -> str:
    for _ in range(50):
        code = _random_code()
        if await redis.set(global_key("code", code_hash(code)), f"{room_id}:{role}", nx=True):
            return code
    raise Conflict("Could not find a free access code; close some rooms and try again.")


async def get_room(redis: Redis, room_id: str) -> Room:
    try:
        h = await redis.hgetall(key(room_id, "room"))
    except ValueError:
        h = {}
    if not h:
        raise NotFound(f"There is no room {room_id!r}.")
    return _room_from_hash(room_id, h)


async def lookup_code(redis: Redis, code: str) -> tuple[Room, Role] | None:
    """The room whose access or host code is ``code`` (open, or closed within
    :data:`CLOSED_CODE_TTL`), and which code it is; None for an unknown code."""
    code = code.strip()
    if not _CODE.match(code):
        return None
    found = await redis.get(global_key("code", code_hash(code)))
    if not found:
        return None
    room_id, _, role = str(found).partition(":")
    try:
        room = await get_room(redis, room_id)
    except NotFound:
        return None
    return room, ("host" if role == "host" else "participant")


async def find_by_code(redis: Redis, code: str) -> tuple[Room, Role] | None:
    """The open room whose access or host code is ``code``, and which one it is."""
    found = await lookup_code(redis, code)
    return found if found is not None and found[0].status == "open" else None


async def list_rooms(redis: Redis, *, include_closed: bool = False) -> list[Room]:
    ids = await redis.zrange(global_key("rooms"), 0, -1)
    return await get_rooms(redis, ids, include_closed=include_closed)


async def get_rooms(redis: Redis, ids: list[str], *, include_closed: bool = False) -> list[Room]:
    """The rooms of ``ids`` that exist (open ones only unless ``include_closed``), oldest
    first; one pipeline, not one round trip per room."""
    if not ids:
        return []
    # Not a transaction: under Redis Cluster the rooms live in different slots.
    async with redis.pipeline(transaction=False) as pipe:
        for room_id in ids:
            pipe.hgetall(key(room_id, "room"))
        found = await pipe.execute()
    rooms = [_room_from_hash(room_id, h) for room_id, h in zip(ids, found, strict=True) if h]
    rooms = [r for r in rooms if include_closed or r.status == "open"]
    rooms.sort(key=lambda r: r.created_at)
    return rooms


# --- the index of live rooms ------------------------------------------------------------------
#
# Periodic per-room work (reconciliation, resuming keypad streams) walks the rooms that
# have participants, not every room ever created. The index is a global key, outside any
# room's Redis Cluster slot, so it cannot change in the same step as a room's participants:
# a join adds its room after the participant is in (each join bumps the room's score), and
# only a sweep that finds the room empty removes it, if no join bumped the score meanwhile.

_UNMARK = """
-- KEYS 1 live-rooms ; ARGV 1 room, 2 the score the sweep saw. 1 if removed.
if redis.call('ZSCORE', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
return redis.call('ZREM', KEYS[1], ARGV[1])
"""


def live_rooms_key() -> str:
    return global_key("live-rooms")


async def mark_live(redis: Redis, room_id: str) -> None:
    """``room_id`` has (just had) a participant join: periodic work visits it."""
    await redis.zincrby(live_rooms_key(), 1, room_id)


async def live_rooms(redis: Redis) -> list[Room]:
    """The open rooms of the live index (rooms that have had a join and were not swept)."""
    return await get_rooms(redis, await redis.zrange(live_rooms_key(), 0, -1))


async def sweep_live_rooms(redis: Redis) -> int:
    """Drop from the live index the rooms without participants (or gone, or closed);
    returns how many. A join racing the sweep keeps its room (the score guard)."""
    entries = await redis.zrange(live_rooms_key(), 0, -1, withscores=True)
    if not entries:
        return 0
    async with redis.pipeline(transaction=False) as pipe:
        for room_id, _ in entries:
            pipe.scard(key(room_id, "participants"))
            pipe.hget(key(room_id, "room"), "status")
        replies = await pipe.execute()
    removed = 0
    for (room_id, score), n, status in zip(entries, replies[::2], replies[1::2], strict=True):
        if n and status == "open":
            continue
        removed += int(await eval_script(redis, _UNMARK, 1, live_rooms_key(), room_id, _score_text(score)))
    return removed


async def backfill_live_rooms(redis: Redis) -> int:
    """Index the open rooms that have participants but are not in the live index (data
    from before the index existed); returns how many were added. Walks every room: for
    start-up, not for each period."""
    rooms = await list_rooms(redis)
    if not rooms:
        return 0
    async with redis.pipeline(transaction=False) as pipe:
        for room in rooms:
            pipe.scard(key(room.id, "participants"))
        counts = await pipe.execute()
    busy = {room.id: 1 for room, n in zip(rooms, counts, strict=True) if n}
    return int(await redis.zadd(live_rooms_key(), busy, nx=True)) if busy else 0


def _score_text(score: float) -> str:
    """The score as Redis prints it (ZSCORE in a script), so that the guard compares alike."""
    return str(int(score)) if float(score).is_integer() else repr(score)


async def update_room(
    redis: Redis,
    room_id: str,
    *,
    name: str | None = None,
    conference_sid: str | None = None,
    maxlen: int = DEFAULT_MAXLEN,
    **settings: object,
) -> bool:
    """Change the name or settings (names of :data:`ROOM_SETTINGS`); one ``room.updated``
    event lists what changed. True if anything did."""
    typed: dict[str, object] = {}
    if name is not None:
        typed["name"] = clean_name(name)
    if settings:
        current = await get_room(redis, room_id)
        typed.update(check_settings(settings, current.settings()))
    if conference_sid is not None:
        typed["conference_sid"] = conference_sid
    if not typed:
        return False
    try:
        changed = bool(
            await eval_script(
                redis, _UPDATE, 2, key(room_id, "room"), key(room_id, "events"), maxlen, room_id,
                *encode_changes(typed),
            )
        )
    except ResponseError as exc:
        if "no such room" in str(exc):
            raise NotFound(f"There is no room {room_id!r}.") from exc
        raise
    if changed and {"speak_limit_s", "auto_mute"} & settings.keys():
        from . import floor  # here: floor imports this module

        await floor.schedule(redis, room_id)  # a limit set mid-turn applies to this turn
    return changed


async def close_room(redis: Redis, room_id: str, *, maxlen: int = DEFAULT_MAXLEN) -> bool:
    """Close a room: its codes stop working and its live state is cleared. False if already closed.

    The codes stay reserved for :data:`CLOSED_CODE_TTL`, so a caller dialling an old code
    hears that the meeting is closed rather than "unknown code" (or someone else's room).
    """
    room = await get_room(redis, room_id)
    extra = [key(room_id, k) for k in ("replies", "reply-to", "spoken", "undo-lower-all")]
    closed = await eval_script(
        redis, _CLOSE, 4 + len(extra), key(room_id, "room"), key(room_id, "participants"),
        key(room_id, "hands"), key(room_id, "events"), *extra,
        maxlen, room_id, key(room_id, "p", ""), key(room_id, "pin", ""),
    )
    # The code index lives outside the room's slot, so it is changed in its own step;
    # find_by_code refuses closed rooms, so the order cannot open a gap.
    host_hash = await redis.hget(key(room_id, "room"), "host_code_hash")
    for code_key in (code_hash(room.access_code), str(host_hash)):
        await redis.expire(global_key("code", code_key), CLOSED_CODE_TTL)  # one key per call

    return bool(closed)
