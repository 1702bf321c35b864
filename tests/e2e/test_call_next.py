"""Call on next passes over a hand whose caller is outside the conference (still joining)."""

from __future__ import annotations

import pytest
from phonekit import phone_stack, until

from handraise.rooms import create_room

pytestmark = [pytest.mark.filterwarnings("ignore:.*(BasicAuth|auth' parameter).*:DeprecationWarning")]


async def test_call_on_next_skips_a_caller_still_in_the_prejoin_window_and_keeps_their_place(
        redis_server: str) -> None:
    # Gather timeouts in real time: the pre-join window lasts its 3 seconds.
    async with phone_stack(redis_server, wait_time_scale=1.0) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Pass over")
        room = created.room
        await stack.join(created.host_code, "+15550100001", host=True)
        sid, pid = await stack.join(room.access_code, "+15550100003")
        early_sid, early = await stack.reach_prejoin(room, "+15550100002")
        # Raised from the companion page while still joining: first in line, not in the call.
        await stack.queue.raise_hand(room.id, early, source="web")
        await stack.queue.raise_hand(room.id, pid, source="web")
        assert not (await stack.queue.participant(room.id, early)).conference_sid

        result = await stack.host.call_on(room.id)
        assert result.ok and result.participant == pid, result
        await until(lambda: not stack.sim.state(sid)["conference"]["muted"])
        assert [h.participant for h in await stack.queue.queue(room.id)] == [early]

        await stack.sim.wait_event("conference", call_sid=early_sid, event="participant-join", timeout=20)
        await until(lambda: stack.queue.participant(room.id, early))
        nxt = await until(lambda: _called(stack, room.id))
        assert nxt.ok and nxt.participant == early


async def _called(stack, room: str):  # type: ignore[no-untyped-def]
    """Call on next once the early caller is in the call (their join callback may lag)."""
    result = await stack.host.call_on(room)
    return result if result.ok else None
