"""A full meeting end to end: the 251st caller hears that it is full, not a Twilio error."""

from __future__ import annotations

import pytest
from phonekit import phone_stack

from handraise.queue import MAX_PARTICIPANTS
from handraise.rooms import create_room

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*(BasicAuth|auth' parameter).*:DeprecationWarning"),
]

FULL = ("This meeting is full: it already has 250 callers, the most a call can have. "
        "Please try again later.")


async def test_the_caller_after_the_last_seat_hears_the_meeting_is_full(redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        room = (await create_room(stack.redis, "All hands", keypad_mode="star")).room
        for i in range(MAX_PARTICIPANTS - 1):
            await stack.queue.join(room.id, call_sid=f"CA{i:032x}", label=f"p{i}",
                                   participant_id=f"p{i}")
        # The last seat: a caller still in the pre-join window holds it.
        last, _ = await stack.reach_prejoin(room, "+15550100250")
        assert len((await stack.queue.snapshot(room.id)).participants) == MAX_PARTICIPANTS

        over = await stack.dial_in(room.access_code, "+15550100251")
        await stack.sim.wait_event("call-ended", call_sid=over)
        said = [t.get("text") for t in stack.sim.transcript(over) if t["kind"] == "say"]
        assert said[-1] == FULL
        assert stack.sim.state(over)["conference"] is None
        assert stack.errors() == []  # no 16020 "Conference is full", no application error
        assert len((await stack.queue.snapshot(room.id)).participants) == MAX_PARTICIPANTS
        assert stack.sim.state(last)["status"] == "in-progress"  # the one inside stays
