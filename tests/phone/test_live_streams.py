"""Which callers need their keypad stream started again (real Redis, no Twilio)."""

from __future__ import annotations

import os
import subprocess
import sys

from handraise.phone.control import set_conference
from handraise.phone.streams import (
    KeypadCheck,
    holder_gone,
    live_streams,
    live_value,
    process_holder,
    record_check,
    refresh_live,
    streams_to_resume,
)
from handraise.queue import Queue
from handraise.rooms import create_room, get_room, update_room
from handraise.store import Redis, key

CONFERENCE = "CF" + "12" * 16


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_holder_is_gone_only_when_it_was_a_process_of_this_host_that_no_longer_runs() -> None:
    me = process_holder()
    host = me.split(":")[0]
    assert not holder_gone(me, me)
    assert holder_gone(f"{host}:{os.getpid()}:0000", me)  # an earlier life of this pid
    assert holder_gone(f"{host}:{_dead_pid()}:beef", me)
    assert not holder_gone(f"{host}:{os.getppid()}:beef", me)  # runs
    assert not holder_gone(f"elsewhere-{host}:{_dead_pid()}:beef", me)  # trust its expiry
    assert not holder_gone("junk", me)


async def _caller(redis: Redis, room: str, pid: str, *, role: str = "participant",
                  conference: str = CONFERENCE, had_stream: bool = True) -> None:
    await Queue(redis).join(room, role=role, call_sid="CA" + pid.rjust(32, "0"), label=pid,  # type: ignore[arg-type]
                            participant_id=pid)
    await set_conference(redis, room, pid, conference)
    await redis.hset(key(room, "p", pid), "joined_at", 0)
    if had_stream:
        await record_check(redis, room, KeypadCheck(pid, "MZ1", 10, 0, False, False, 0.0))


async def test_only_in_conference_callers_whose_stream_no_live_process_holds_are_resumed(
        redis: Redis) -> None:
    me = process_holder()
    room_id = (await create_room(redis, "Filter")).room.id
    await update_room(redis, room_id, conference_sid=CONFERENCE)
    await _caller(redis, room_id, "lost")  # had a stream, its process died
    await _caller(redis, room_id, "held")  # another process holds its stream
    await _caller(redis, room_id, "dead")  # held by a process of this host that is gone
    await _caller(redis, room_id, "boss", role="host")  # a host's leg is streamed too (their keys)
    await _caller(redis, room_id, "chief", role="host", had_stream=False)  # joined in star mode
    await _caller(redis, room_id, "outside", conference="")  # at a host prompt
    await _caller(redis, room_id, "nostream", had_stream=False)  # joined in star mode
    await refresh_live(redis, {room_id: {"held": "MZ2"}}, "elsewhere:1:ab")
    host = me.split(":")[0]
    await redis.hset(key(room_id, "live-streams"), "dead", live_value(f"{host}:{_dead_pid()}:cd", "MZ3"))
    room = await get_room(redis, room_id)

    found = await streams_to_resume(redis, room, me=me, grace_s=5)
    assert sorted(p.id for p in found) == ["boss", "dead", "lost"]
    assert set(await live_streams(redis, room_id, me=me)) == {"held"}
    # Dialled in just now: the stream their TwiML started may not have said so yet.
    await redis.hset(key(room_id, "p", "lost"), "joined_at", 2**52)
    assert [p.id for p in await streams_to_resume(redis, room, me=me, grace_s=5)] == ["boss", "dead"]
    # A star room has no streams to resume.
    await update_room(redis, room_id, keypad_mode="star")
    assert await streams_to_resume(redis, await get_room(redis, room_id), me=me, grace_s=5) == []
