"""What the media endpoint keeps in Redis: the keypad self-test and Gather marks.

**Keypad self-test.** Twilio does not document whether a caller's keypad tones reach the
forked audio of ``<Start><Stream>`` (TWILIO.md §2.2), so every stream records whether the
detector ever heard a key in it: one hash per room, ``hr:{room}:keypad-check``, field =
participant id, value = JSON of :class:`KeypadCheck`. It outlives the call (7 days), so an
operator can call in, press ``*1`` in the conference, hang up and read the answer with
``handraise rooms show``.

**Live streams.** Twilio never reconnects a media stream, so after a restart (a deploy, a
crash) nobody would hear the keypad of a caller already in the conference. Each process
notes the streams it holds in ``hr:{room}:live-streams`` (field = participant id, value =
``"<expires> <holder> <stream sid>"``), written when a stream starts listening, refreshed
for all of a process's streams in one pipeline every :data:`LIVE_REFRESH_S`, removed when
it stops. The periodic reconciliation starts a new stream (REST) for every in-conference
caller of a ``stream`` room whom no live entry covers. An entry is dead once expired, or
at once when its holder was a process of this host that is gone (a restart on the same
machine or container resumes without waiting for the expiry; host names must tell
machines and containers apart). Expiry is wall-clock: the hosts' clocks should agree to
within a few seconds (NTP).

**Gather marks.** Outside the conference (the pre-join window, a host prompt) a
``<Gather>`` reads the caller's keys, and the same tones also reach the stream. The voice
webhooks note each Gather's end and the keys it read (``hr:{room}:gathered:<pid>``), so
the media endpoint acts only on keys pressed in the conference, never twice on one press.

Domain code: takes its Redis client, no Quart.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from ..errors import NotFound
from ..queue import Participant, Queue, _participant
from ..rooms import Room
from ..store import Redis, eval_script, key

CHECK_TTL_S = 7 * 24 * 3600
GATHER_TTL_S = 12 * 3600
LIVE_REFRESH_S = 5.0
"""How often a process refreshes the live entries of all its streams (one pipeline)."""
LIVE_TTL_S = 15.0
"""A live entry not refreshed for this long is dead (its process stopped or lost Redis)."""


@dataclass(frozen=True)
class KeypadCheck:
    """One stream's answer to "are keypad tones in the forked audio?"."""

    participant: str
    stream: str
    frames: int
    digits: int
    tones_seen: bool
    stopped: bool
    updated_at: float

    @property
    def verdict(self) -> str:
        return "yes" if self.tones_seen else "no"


def check_key(room: str) -> str:
    return key(room, "keypad-check")


def gathered_key(room: str, pid: str) -> str:
    return key(room, "gathered", pid)


_RECORD = """
-- KEYS 1 keypad-check hash, 2 live-streams hash
-- ARGV 1 pid, 2 check json, 3 check ttl, 4 live value ('' to release), 5 ' holder stream',
-- 6 live key ttl. The self-test record and the stream's live entry in one step.
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[6])
else
  local cur = redis.call('HGET', KEYS[2], ARGV[1])
  if cur and string.find(cur, ARGV[5], 1, true) then redis.call('HDEL', KEYS[2], ARGV[1]) end
end
return 1
"""


async def record_check(redis: Redis, room: str, check: KeypadCheck, *,
                       holder: str | None = None) -> None:
    """Store ``check`` (replacing the participant's previous one).

    With ``holder`` (the process holding the stream), the stream's live entry is written
    too, in the same step: set while the stream runs, removed once ``check.stopped`` (only
    if it is still this stream's).
    """
    name = check_key(room)
    if holder is None:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hset(name, check.participant, json.dumps(asdict(check)))
            pipe.expire(name, CHECK_TTL_S)
            await pipe.execute()
        return
    value = "" if check.stopped else live_value(holder, check.stream)
    await eval_script(redis, _RECORD, 2, name, live_key(room), check.participant,
                      json.dumps(asdict(check)), CHECK_TTL_S, value,
                      f" {holder} {check.stream}", _LIVE_KEY_TTL_S)


async def keypad_checks(redis: Redis, room: str) -> list[KeypadCheck]:
    """Every stream's self-test result in ``room``, latest first."""
    raw = await redis.hgetall(check_key(room))
    out = []
    for value in raw.values():
        try:
            out.append(KeypadCheck(**json.loads(value)))
        except (TypeError, ValueError):
            continue  # written by another version: not worth failing a listing
    return sorted(out, key=lambda c: c.updated_at, reverse=True)


async def note_gather(redis: Redis, room: str, pid: str, digits: str) -> None:
    """A Gather of ``pid`` just ended having read ``digits`` (for the webhooks)."""
    await redis.set(gathered_key(room, pid), f"{time.time():.3f} {digits}", ex=GATHER_TTL_S)


async def last_gather(redis: Redis, room: str, pid: str) -> tuple[float, str] | None:
    """(when, digits) of the last Gather that ended for ``pid``; None if none has."""
    return _gather_mark(await redis.get(gathered_key(room, pid)))


async def press_context(queue: Queue, room: str, pid: str, prompting: str
                        ) -> tuple[bool, tuple[float, str] | None,
                                   tuple[Room, Participant] | NotFound]:
    """For a key heard in ``pid``'s stream, in one round trip: whether the key ``prompting``
    (a host prompt under way) exists, :func:`last_gather`, and the room and participant
    the key's action (and its announcement) will need, or why they are not there."""
    target, (exists, raw) = await queue.room_and_participant_with(
        room, pid, lambda pipe: pipe.exists(prompting),
        lambda pipe: pipe.get(gathered_key(room, pid)))
    return bool(exists), _gather_mark(raw), target


def _gather_mark(raw: str | None) -> tuple[float, str] | None:
    if not raw:
        return None
    when, _, digits = str(raw).partition(" ")
    try:
        return float(when), digits
    except ValueError:
        return None


async def forget_gather(redis: Redis, room: str, pid: str, when: float) -> None:
    """Spend the mark (once it has explained one stream command), unless a newer one came."""
    raw = await redis.get(gathered_key(room, pid))
    if raw and str(raw).startswith(f"{when:.3f} "):
        await redis.set(gathered_key(room, pid), f"{when:.3f} ", ex=GATHER_TTL_S)


# --- live streams ---------------------------------------------------------------------------

_LIVE_KEY_TTL_S = int(LIVE_TTL_S * 4)
"""The whole hash goes once no process has refreshed it for a while (room abandoned)."""


def live_key(room: str) -> str:
    return key(room, "live-streams")


def process_holder() -> str:
    """A name for this process among all that serve streams: ``host:pid:token``.

    The token tells two lives of one pid apart (a container restarted as pid 1).
    """
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def live_value(holder: str, stream: str, *, now: float | None = None,
               ttl_s: float = LIVE_TTL_S) -> str:
    return f"{(time.time() if now is None else now) + ttl_s:.3f} {holder} {stream}"


@dataclass(frozen=True)
class LiveStream:
    """A stream some process says it holds (one entry of ``hr:{room}:live-streams``)."""

    participant: str
    holder: str
    stream: str
    expires_at: float


def holder_gone(holder: str, me: str) -> bool:
    """True if ``holder`` was a process of this host that no longer runs (or an earlier
    life of this very process); False when it may run (another host: trust the expiry)."""
    host, _, rest = holder.partition(":")
    pid_raw = rest.partition(":")[0]
    if host != me.partition(":")[0] or not pid_raw.isdigit():
        return False
    pid = int(pid_raw)
    if pid == os.getpid():
        return holder != me
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's process: it runs
        return False
    return False


async def refresh_live(redis: Redis, held: Mapping[str, Mapping[str, str]], holder: str, *,
                       ttl_s: float = LIVE_TTL_S) -> None:
    """Renew the live entries of ``held`` (room -> participant -> stream sid), one round trip."""
    if not held:
        return
    now = time.time()
    async with redis.pipeline(transaction=False) as pipe:
        for room, streams in held.items():
            name = live_key(room)
            pipe.hset(name, mapping={pid: live_value(holder, sid, now=now, ttl_s=ttl_s)
                                     for pid, sid in streams.items()})
            pipe.expire(name, _LIVE_KEY_TTL_S)
        await pipe.execute()


def _parse_live(pid: str, raw: str) -> LiveStream | None:
    expires, _, rest = raw.partition(" ")
    holder, _, stream = rest.partition(" ")
    try:
        return LiveStream(pid, holder, stream, float(expires))
    except ValueError:
        return None


def _alive(raw: Mapping[str, str], me: str | None) -> dict[str, LiveStream]:
    now = time.time()
    out = {}
    for pid, value in raw.items():
        entry = _parse_live(pid, value)
        if entry is None or entry.expires_at <= now:
            continue
        if me is not None and holder_gone(entry.holder, me):
            continue
        out[pid] = entry
    return out


async def live_streams(redis: Redis, room: str, *, me: str | None = None) -> dict[str, LiveStream]:
    """Participant -> their live stream, for the entries that are not dead (``me``: this
    process's holder name, to recognise gone processes of this host)."""
    return _alive(await redis.hgetall(live_key(room)), me)


async def streams_to_resume(redis: Redis, room: Room, *, me: str, grace_s: float
                            ) -> list[Participant]:
    """Callers of ``room`` (keypad mode ``stream``) in its conference with no live stream.

    Callers (participants, and hosts: their leg is streamed for the host's keys) with a
    call, in the room's running conference,
    who dialled in at least ``grace_s`` ago (a stream just started by TwiML has had time
    to say it is live), and whose call had a stream (a self-test record): a caller who
    joined without one (the room was in ``star`` mode then, with ``hangupOnStar`` on their
    Dial) is left as they are.
    """
    if room.keypad_mode != "stream" or not room.conference_sid:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        pipe.smembers(key(room.id, "participants"))
        pipe.hgetall(live_key(room.id))
        pids, raw = await pipe.execute()
    live = _alive(raw, me)
    pids = sorted(p for p in pids if p not in live)
    if not pids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for pid in pids:
            pipe.hgetall(key(room.id, "p", pid))
            pipe.hexists(check_key(room.id), pid)
        replies = await pipe.execute()
    cutoff_ms = (time.time() - grace_s) * 1000
    out = []
    for pid, h, had_stream in zip(pids, replies[::2], replies[1::2], strict=True):
        if not h or not had_stream:
            continue
        p = _participant(room.id, pid, h)
        if (p.call_sid and p.conference_sid == room.conference_sid
                and p.joined_at <= cutoff_ms):
            out.append(p)
    return out
