"""Web PINs: 6 digits a caller hears on the phone and types on the companion page.

``hr:pin:<pin>`` (global, with a TTL) maps the PIN to ``<room>:<participant>``; a per-room
key remembers the participant's PIN so that leaving revokes it. PINs are unique among live
ones (SET NX) and random (``secrets``). Rate limiting of PIN entry is the web page's job;
:data:`ATTEMPTS_PREFIX` names where its counters live.
"""

from __future__ import annotations

import hmac
import re
import secrets

from .store import Redis, global_key, key

PIN_TTL_S = 6 * 3600  # longer than any meeting; revoked on leave anyway
_PIN = re.compile(r"^\d{6}$")
_DUMMY = "not-a-pin"
#: ``hr:pin-attempts:<client>`` counters for the web issue's rate limiter.
ATTEMPTS_PREFIX = global_key("pin-attempts")


def _pin_key(pin: str) -> str:
    return global_key("pin", pin)


def _owner_key(room: str, pid: str) -> str:
    return key(room, "pin", pid)


async def issue_pin(redis: Redis, room: str, pid: str, *, ttl_s: int = PIN_TTL_S) -> str:
    """A fresh PIN for ``pid`` (the same one if it already has a live PIN)."""
    existing = await redis.get(_owner_key(room, pid))
    if existing and await redis.get(_pin_key(existing)) == f"{room}:{pid}":
        return str(existing)
    for _ in range(100):
        pin = f"{secrets.randbelow(1_000_000):06d}"
        # The PIN (global) and its owner record (the room's slot) are two steps: until the
        # second, lookup_pin finds no matching owner and refuses the PIN, so none works early.
        if await redis.set(_pin_key(pin), f"{room}:{pid}", nx=True, ex=ttl_s):
            await redis.set(_owner_key(room, pid), pin, ex=ttl_s)
            return pin
    raise RuntimeError("no free web PIN after 100 tries")


async def lookup_pin(redis: Redis, pin: str) -> tuple[str, str] | None:
    """``(room, participant)`` for a live PIN, else None.

    Always one GET, whatever the input looks like, and a constant-time comparison of the
    owner's record, so timing tells little about which PINs exist.
    """
    pin = pin.strip()
    well_formed = bool(_PIN.match(pin))
    value = await redis.get(_pin_key(pin if well_formed else _DUMMY))
    if not well_formed or not value:
        return None
    room, _, pid = str(value).partition(":")
    if not room or not pid:
        return None
    # The owner key must still name this PIN: a revoked PIN whose global key lingered fails.
    owner_pin = await redis.get(_owner_key(room, pid)) or ""
    if not hmac.compare_digest(str(owner_pin).encode(), pin.encode()):
        return None
    return room, pid


async def pin_of(redis: Redis, room: str, pid: str) -> str | None:
    value = await redis.get(_owner_key(room, pid))
    return str(value) if value else None


async def revoke_pin(redis: Redis, room: str, pid: str) -> bool:
    """Revoke ``pid``'s PIN (on leave). False if it had none."""
    pin = await redis.get(_owner_key(room, pid))
    if not pin:
        return False
    # Only delete the global key if it still points at this participant. Two slots, two
    # steps: the owner record goes last, and lookup_pin refuses a PIN without it anyway.
    if await redis.get(_pin_key(pin)) == f"{room}:{pid}":
        await redis.delete(_pin_key(pin))
    await redis.delete(_owner_key(room, pid))
    return True
