"""What the media endpoint keeps in Redis: the keypad self-test and Gather marks.

**Keypad self-test.** Twilio does not document whether a caller's keypad tones reach the
forked audio of ``<Start><Stream>`` (TWILIO.md §2.2), so every stream records whether the
detector ever heard a key in it: one hash per room, ``hr:{room}:keypad-check``, field =
participant id, value = JSON of :class:`KeypadCheck`. It outlives the call (7 days), so an
operator can call in, press ``*1`` in the conference, hang up and read the answer with
``handraise rooms show``.

**Gather marks.** Outside the conference (the pre-join window, a host prompt) a
``<Gather>`` reads the caller's keys, and the same tones also reach the stream. The voice
webhooks note each Gather's end and the keys it read (``hr:{room}:gathered:<pid>``), so
the media endpoint acts only on keys pressed in the conference, never twice on one press.

Domain code: takes its Redis client, no Quart.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from ..store import Redis, key

CHECK_TTL_S = 7 * 24 * 3600
GATHER_TTL_S = 12 * 3600


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


async def record_check(redis: Redis, room: str, check: KeypadCheck) -> None:
    """Store ``check`` (replacing the participant's previous one)."""
    name = check_key(room)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(name, check.participant, json.dumps(asdict(check)))
        pipe.expire(name, CHECK_TTL_S)
        await pipe.execute()


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
    raw = await redis.get(gathered_key(room, pid))
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
