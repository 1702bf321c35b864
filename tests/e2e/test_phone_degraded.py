"""Degraded mode: Redis stops mid-meeting; callers still join, state recovers when it returns."""

from __future__ import annotations

import pytest
from phonekit import Stack, StoppableRedis, phone_stack, until

from handraise.rooms import create_room

# Each takes well under 3 s here, so none is marked slow.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*(BasicAuth|auth' parameter).*:DeprecationWarning"),
]

UNAVAILABLE = "Hand raising is briefly unavailable"


async def test_callers_join_while_redis_is_down_and_are_known_once_it_is_back(
        stoppable: StoppableRedis) -> None:
    async with phone_stack(stoppable.url) as stack:
        created = await create_room(stack.redis, "Standup")
        room = created.room
        host = await stack.dial_in(created.host_code, "+15550100001")
        await stack.sim.wait_event("conference", call_sid=host, event="participant-join")
        early = await stack.dial_in(room.access_code, "+15550100002")
        await stack.sim.wait_event("conference", call_sid=early, event="participant-join")
        # This caller is in the pre-join window when Redis goes away.
        midway = await stack.dial_in(room.access_code, "+15550100003")
        await stack.sim.wait_event("gather-start", call_sid=midway, num_digits=2)
        before = await until(lambda: _count(stack, room.id, 3))
        assert before == 3

        stoppable.stop()
        stack.sim.press(midway, "*1")  # the raise cannot be recorded
        await stack.sim.wait_event("conference", call_sid=midway, event="participant-join")
        late = await stack.dial_in(room.access_code, "+15550100004")
        await stack.sim.wait_event("conference", call_sid=late, event="participant-join")
        for sid in (midway, late):
            conf = stack.sim.state(sid)["conference"]
            assert conf is not None and conf["muted"] is True
            assert conf["friendly_name"] == room.conference_name
            assert UNAVAILABLE in " ".join(str(t.get("text")) for t in stack.sim.transcript(sid))
        # The host can still act on the call; the dashboard gets a clear message, not a crash.
        result = await stack.host.call_on(room.id)
        assert not result.ok and "unavailable" in result.message
        assert all(stack.sim.state(s)["status"] == "in-progress" for s in (host, early, midway, late))

        stoppable.start()
        newest = await stack.dial_in(room.access_code, "+15550100005")
        await stack.sim.wait_event("conference", call_sid=newest, event="participant-join")
        # The next callback reconciles with Twilio's participant list: all five are known.
        assert await until(lambda: _count(stack, room.id, 5)) == 5
        state = await stack.queue.snapshot(room.id)
        labels = {stack.sim.state(s)["conference"]["label"] for s in (host, early, midway, late, newest)}
        assert {p.id for p in state.participants} == labels
        assert all(p.muted for p in state.participants if p.role == "participant")
        # And the queue works again.
        pid = stack.sim.state(late)["conference"]["label"]
        await stack.queue.raise_hand(room.id, pid, source="web")
        assert (await stack.host.call_on(room.id)).ok
        assert stack.sim.state(late)["conference"]["muted"] is False
        statuses = {e.data.get("status") for e in stack.sim.events if e.kind == "webhook"}
        assert statuses == {200}  # every webhook answered, even while Redis was down


async def _count(stack: Stack, room: str, n: int) -> int | None:
    state = await stack.queue.snapshot(room)
    return len(state.participants) if len(state.participants) == n else None
