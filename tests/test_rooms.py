"""Rooms: codes, look-up, settings, closing."""

from __future__ import annotations

import re

import pytest

from handraise.errors import Invalid, NotFound
from handraise.events import read_events
from handraise.rooms import (
    CLOSED_CODE_TTL,
    close_room,
    code_hash,
    create_room,
    find_by_code,
    get_room,
    list_rooms,
    lookup_code,
    update_room,
)
from handraise.store import Redis, global_key


async def test_each_room_gets_two_different_codes_unique_across_rooms(redis: Redis) -> None:
    created = [await create_room(redis, f"Room {i}") for i in range(30)]
    codes = [c.room.access_code for c in created] + [c.host_code for c in created]
    assert len(set(codes)) == len(codes)
    assert all(len(c) == 6 and c.isdigit() for c in codes)
    room = created[0]
    assert await find_by_code(redis, room.room.access_code) == (room.room, "participant")
    assert await find_by_code(redis, room.host_code) == (room.room, "host")
    assert await find_by_code(redis, "12345") is None
    assert await find_by_code(redis, "abcdef") is None


async def test_room_ids_and_conference_names_carry_no_personal_data(redis: Redis) -> None:
    room = (await create_room(redis, "Ada Lovelace's planning call")).room
    assert "ada" not in room.id.lower() and "Ada" not in room.conference_name
    assert room.conference_name == f"handraise-{room.id}"


async def test_the_host_code_is_kept_only_as_a_hash(redis: Redis) -> None:
    created = await create_room(redis, "Board")
    stored = await redis.hgetall(f"hr:{{{created.room.id}}}:room")
    assert created.host_code not in stored.values()


@pytest.mark.parametrize("name", ["", "   ", "x" * 81, "bad\x07name"])
async def test_a_bad_room_name_is_refused_with_a_reason(redis: Redis, name: str) -> None:
    with pytest.raises(Invalid):
        await create_room(redis, name)


async def test_updating_settings_emits_one_event_with_what_changed(redis: Redis) -> None:
    room = (await create_room(redis, "Standup")).room
    assert await update_room(redis, room.id, keypad_mode="star", name="Standup") is True
    assert await update_room(redis, room.id, keypad_mode="star") is False
    assert await update_room(redis, room.id, end_on_host_exit=False, conference_sid="CF1") is True
    updates = [e.data for e in await read_events(redis, room.id) if e.type == "room.updated"]
    assert updates == [{"keypad_mode": "star"}, {"end_on_host_exit": False, "conference_sid": "CF1"}]
    after = await get_room(redis, room.id)
    assert (after.keypad_mode, after.end_on_host_exit, after.conference_sid) == ("star", False, "CF1")
    with pytest.raises(NotFound):
        await update_room(redis, "rnothere", name="x")


async def test_a_closed_room_keeps_its_codes_reserved_for_a_while(redis: Redis) -> None:
    created = await create_room(redis, "Retro")
    room = created.room
    assert await close_room(redis, room.id) is True
    assert await close_room(redis, room.id) is False
    assert await find_by_code(redis, room.access_code) is None
    closed = await lookup_code(redis, room.access_code)
    assert closed is not None and closed[0].status == "closed"
    ttl = await redis.ttl(global_key("code", code_hash(room.access_code)))
    assert 0 < ttl <= CLOSED_CODE_TTL
    assert [r.id for r in await list_rooms(redis)] == []
    assert [r.id for r in await list_rooms(redis, include_closed=True)] == [room.id]


async def test_settings_are_checked_from_text_or_typed_values_and_listed_in_one_event(redis: Redis) -> None:
    from handraise.rooms import ROOM_SETTINGS

    room = (await create_room(redis, "Settings", keypad_mode="star", announce_web="yes")).room
    assert (room.keypad_mode, room.announce_web) == ("star", True)
    assert set(room.settings()) == {s.name for s in ROOM_SETTINGS}
    after = (await read_events(redis, room.id))[-1].id
    assert await update_room(redis, room.id, end_on_host_exit="no", keypad_mode="star") is True
    changed = await read_events(redis, room.id, after=after)
    assert [(e.type, e.data.get("end_on_host_exit"), "keypad_mode" in e.data) for e in changed] == [
        ("room.updated", False, False)]
    assert (await get_room(redis, room.id)).end_on_host_exit is False
    assert await update_room(redis, room.id, end_on_host_exit=False) is False
    for bad, sentence in (({"keypad_mode": "loud"}, "keypad_mode must be one of"),
                          ({"announce_web": "maybe"}, "announce_web must be yes or no"),
                          ({"volume": "11"}, "There is no room setting 'volume'"),
                          ({"raise_keys": "*12"}, "raise_keys must be a key"),
                          ({"lower_keys": "*1"}, "lower_keys and raise_keys cannot both be *1")):
        with pytest.raises(Invalid, match=re.escape(sentence)):
            await update_room(redis, room.id, **bad)
    with pytest.raises(Invalid, match="cannot both be"):
        await create_room(redis, "Clash", raise_keys="*2")
    assert (await get_room(redis, room.id)).lower_keys == "*2"


async def test_a_room_written_before_a_setting_existed_reads_its_default(redis: Redis) -> None:
    room = (await create_room(redis, "Old")).room
    await redis.hdel(f"hr:{{{room.id}}}:room", "announce_web", "raise_keys")
    old = await get_room(redis, room.id)
    assert (old.announce_web, old.raise_keys) == (False, "*1")


async def test_the_live_index_lists_rooms_with_participants_and_a_sweep_drops_empty_ones(
        redis: Redis) -> None:
    from handraise.queue import Queue
    from handraise.rooms import live_rooms, live_rooms_key, sweep_live_rooms

    queue = Queue(redis)
    busy, quiet, idle = [(await create_room(redis, n)).room for n in ("Busy", "Quiet", "Idle")]
    await queue.join(busy.id, call_sid="CA1", participant_id="pa")
    await queue.join(quiet.id, call_sid="CA2", participant_id="pb")
    # Oldest first; rooms created in the same millisecond may come in either order.
    assert {r.id for r in await live_rooms(redis)} == {busy.id, quiet.id}  # never idle
    await queue.leave(quiet.id, "pb")
    assert await sweep_live_rooms(redis) == 1
    assert [r.id for r in await live_rooms(redis)] == [busy.id]
    await queue.join(idle.id, call_sid="CA3", participant_id="pc")
    await close_room(redis, idle.id)  # closing clears its participants: swept too
    assert await sweep_live_rooms(redis) == 1
    assert await redis.zrange(live_rooms_key(), 0, -1) == [busy.id]


async def test_a_join_racing_the_sweep_keeps_its_room_in_the_live_index(redis: Redis) -> None:
    from handraise.queue import Queue
    from handraise.rooms import _UNMARK, live_rooms_key, mark_live

    queue = Queue(redis)
    room = (await create_room(redis, "Race")).room
    await mark_live(redis, room.id)  # had a participant, who left
    [(_, seen)] = await redis.zrange(live_rooms_key(), 0, -1, withscores=True)
    # The sweep has found the room empty; before it removes the room, someone joins.
    await queue.join(room.id, call_sid="CA1", participant_id="pa")
    assert await redis.eval(_UNMARK, 1, live_rooms_key(), room.id, str(int(seen))) == 0
    assert await redis.zrange(live_rooms_key(), 0, -1) == [room.id]


async def test_rooms_are_read_in_one_pipeline_and_missing_ones_skipped(redis: Redis) -> None:
    from handraise.rooms import get_rooms

    a, b = [(await create_room(redis, n)).room for n in ("A", "B")]
    await close_room(redis, b.id)
    assert [r.id for r in await get_rooms(redis, [b.id, "rnope", a.id])] == [a.id]
    # Oldest first; rooms created in the same millisecond may come in either order.
    assert {r.id for r in await get_rooms(redis, [b.id, a.id], include_closed=True)} == {a.id, b.id}
    assert {r.id for r in await list_rooms(redis, include_closed=True)} == {a.id, b.id}
