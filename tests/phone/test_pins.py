"""Web PINs: unique, linked to one participant, revoked on leave."""

from __future__ import annotations

from handraise.pins import issue_pin, lookup_pin, pin_of, revoke_pin
from handraise.queue import Queue
from handraise.rooms import close_room, create_room
from handraise.store import Redis


async def test_a_pin_is_six_digits_and_finds_its_participant(redis: Redis) -> None:
    pin = await issue_pin(redis, "r1", "p1")
    assert len(pin) == 6 and pin.isdigit()
    assert await lookup_pin(redis, pin) == ("r1", "p1")
    assert await lookup_pin(redis, f" {pin} ") == ("r1", "p1")
    assert await pin_of(redis, "r1", "p1") == pin


async def test_issuing_twice_keeps_the_pin_and_pins_are_unique(redis: Redis) -> None:
    first = await issue_pin(redis, "r1", "p1")
    assert await issue_pin(redis, "r1", "p1") == first
    pins = {await issue_pin(redis, "r1", f"p{i}") for i in range(2, 200)}
    assert len(pins) == 198 and first not in pins


async def test_revoked_expired_and_malformed_pins_find_nothing(redis: Redis) -> None:
    pin = await issue_pin(redis, "r1", "p1", ttl_s=60)
    assert await redis.ttl(f"hr:pin:{pin}") > 0  # expires with the call at the latest
    assert await revoke_pin(redis, "r1", "p1")
    assert await lookup_pin(redis, pin) is None
    assert not await revoke_pin(redis, "r1", "p1")
    for bad in ("", "12345", "1234567", "abcdef", "12 456", "not-a-pin"):
        assert await lookup_pin(redis, bad) is None


async def test_a_stale_global_key_without_its_owner_record_is_refused(redis: Redis) -> None:
    pin = await issue_pin(redis, "r1", "p1")
    await redis.delete("hr:{r1}:pin:p1")
    assert await lookup_pin(redis, pin) is None


async def test_closing_the_room_revokes_its_callers_pins(redis: Redis) -> None:
    room = (await create_room(redis, "Closing")).room.id
    pid = await Queue(redis).join(room, call_sid="CA" + "1" * 32)
    pin = await issue_pin(redis, room, pid)
    assert await lookup_pin(redis, pin) == (room, pid)
    await close_room(redis, room)
    assert await lookup_pin(redis, pin) is None
