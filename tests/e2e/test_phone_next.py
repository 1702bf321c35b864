""""You're next.": the caller whose hand becomes first hears it privately, once, with two
app processes watching the same room (emulator, real Redis, real HTTP)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from phonekit import Stack, phone_stack, until
from quart import Quart

from handraise.app import create_app
from handraise.events import last_event_id
from handraise.phone.nextup import NextWatcher, marker_key
from handraise.rooms import Room, create_room, update_room
from handraise.sim import ServedApp
from handraise.store import client_from_url

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*(BasicAuth|auth' parameter).*:DeprecationWarning"),
]

NEXT = "You're next."


def announced(stack: Stack, sid: str) -> list[str]:
    return [str(e.data.get("text")) for e in stack.sim.events
            if e.kind == "heard" and e.call_sid == sid and e.data.get("kind") == "announcement"]


def asked_to_announce_next(stack: Stack, pid: str) -> int:
    """REST requests to Twilio that announce "You're next." to ``pid`` (recorded as they are
    answered, so complete once every watcher has decided; what is heard may trail them)."""
    return sum(1 for e in stack.sim.events if e.kind == "rest"
               and e.data["path"].endswith(f"/Participants/{pid}.json")
               and "msg=next" in e.data["params"].get("AnnounceUrl", ""))


@contextlib.asynccontextmanager
async def second_process(stack: Stack, redis_url: str) -> AsyncIterator[Quart]:
    """Another app on the same Redis and Twilio, as a second ``serve`` worker would be."""
    redis = client_from_url(redis_url)
    app = create_app(stack.app.config["HANDRAISE_SETTINGS"], redis=redis)
    try:
        async with ServedApp(app, health_path="/healthz"):
            yield app
    finally:
        await redis.aclose()


def watchers(*apps: Quart) -> list[NextWatcher]:
    return [app.extensions["handraise_next"] for app in apps]


async def settled(stack: Stack, room: Room, *apps: Quart) -> None:
    """Every watcher has read the room's events up to now (so it has decided)."""
    last = await last_event_id(stack.redis, room.id)
    await until(lambda: all(w.cursors.get(room.id) == last for w in watchers(*apps)), timeout=15)


async def raise_by_keypad(stack: Stack, room: Room, sid: str) -> None:
    mark = stack.sim.events[-1].seq
    if room.keypad_mode == "star":
        stack.sim.press(sid, "*")
        await stack.sim.wait_event("gather-start", call_sid=sid, num_digits=1, after=mark)
        stack.sim.press(sid, "1")
        await stack.sim.wait_event("conference", call_sid=sid, event="participant-join", after=mark)
    else:
        stack.sim.press(sid, "*1")
        await stack.sim.wait_event("heard", call_sid=sid, kind="announcement", after=mark,
                                   text="Hand raised. You are number 1 in line.", timeout=15)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["stream", "star"])
async def test_each_caller_whose_hand_becomes_first_hears_youre_next_once(
        redis_server: str, mode: str) -> None:
    async with phone_stack(redis_server) as stack, second_process(stack, redis_server) as other:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Next up", keypad_mode=mode)
        room = created.room
        await until(lambda: stack.redis.exists(marker_key(room.id)))  # a watcher knows the room
        await stack.join(created.host_code, "+15550109000", host=True)
        calls = [await stack.join(room.access_code, f"+1555010482{i}") for i in range(4)]
        (a, a_pid), (b, b_pid), (c, c_pid), (d, d_pid) = calls

        await raise_by_keypad(stack, room, a)  # into an empty queue: "number 1" says it all
        for pid in (b_pid, c_pid, d_pid):
            await stack.queue.raise_hand(room.id, pid, source="web")
        assert (await stack.host.call_on(room.id)).ok  # a speaks; b is first
        await stack.sim.wait_event("heard", call_sid=b, kind="announcement", text=NEXT, timeout=15)
        assert (await stack.host.lower_hand(room.id, b_pid)).ok  # c is first
        await stack.sim.wait_event("heard", call_sid=c, kind="announcement", text=NEXT, timeout=15)
        await stack.sim.hang_up(c)  # d is first
        await stack.sim.wait_event("heard", call_sid=d, kind="announcement", text=NEXT, timeout=15)
        assert (await stack.host.mute_all(room.id)).ok  # no change in line: nothing said

        await settled(stack, room, stack.app, other)
        assert [asked_to_announce_next(stack, p) for p in (a_pid, b_pid, c_pid, d_pid)] == [0, 1, 1, 1]
        assert [announced(stack, s).count(NEXT) for s in (a, b, c, d)] == [0, 1, 1, 1]
        assert stack.sim.state(d)["conference"]["label"] == d_pid  # never left the room
        assert not stack.errors()


async def test_with_announce_next_off_nobody_is_told(redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Quiet", announce_next="no")
        room = created.room
        assert room.announce_next is False
        await until(lambda: stack.redis.exists(marker_key(room.id)))
        await stack.join(created.host_code, "+15550109000", host=True)
        (a, a_pid), (b, b_pid) = [await stack.join(room.access_code, f"+1555010482{i}")
                                  for i in range(2)]
        for pid in (a_pid, b_pid):
            await stack.queue.raise_hand(room.id, pid, source="web")
        assert (await stack.host.call_on(room.id)).ok
        await settled(stack, room, stack.app)
        assert await stack.redis.hget(marker_key(room.id), "head") == b_pid  # decided, not said
        assert asked_to_announce_next(stack, b_pid) == 0 and NEXT not in announced(stack, b)

        await update_room(stack.redis, room.id, announce_next=True)
        await stack.queue.raise_hand(room.id, a_pid, source="web")
        assert (await stack.host.call_on(room.id)).ok  # b speaks, a is first again
        await stack.sim.wait_event("heard", call_sid=a, kind="announcement", text=NEXT, timeout=15)
