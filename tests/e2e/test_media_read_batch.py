"""HANDRAISE_MEDIA_READ_BATCH: the media sockets read every N detection ticks, in real time.

The emulator, like a careful Twilio, sends ``stop`` at a hang-up and then waits for the
app's Close before it lets go of the socket (10 s, then it aborts): the app must read that
last, short message and answer it, however many ticks it waits between reads.
"""

from __future__ import annotations

import pytest
from phonekit import phone_stack, until

from handraise.config import DEFAULT_MEDIA_READ_BATCH
from handraise.phone.streams import keypad_checks
from handraise.rooms import create_room

pytestmark = [pytest.mark.filterwarnings("ignore:.*(BasicAuth|auth' parameter).*:DeprecationWarning")]


@pytest.mark.parametrize("batch", [1, DEFAULT_MEDIA_READ_BATCH, 3, 5])  # 0: auto
async def test_keys_are_heard_and_the_end_of_the_stream_is_seen_with_batched_reads(
        redis_server: str, batch: int) -> None:
    # The emulator streams in real time: one 20 ms frame every 20 ms, as Twilio does.
    async with phone_stack(redis_server,
                           app_settings={"media_read_batch": batch}) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Batched reads")
        room = created.room
        await stack.join(created.host_code, "+15550100001", host=True)
        sid, pid = await stack.join(room.access_code, "+15550100002")
        stack.sim.press(sid, "*1")
        await stack.sim.wait_event("heard", call_sid=sid, kind="announcement",
                                   text="Hand raised. You are number 1 in line.", timeout=15)
        assert [h.participant for h in await stack.queue.queue(room.id)] == [pid]
        await stack.sim.hang_up(sid)
        stopped_event = await stack.sim.wait_event("stream-stopped", call_sid=sid, timeout=15)
        # The app read the stop and closed the socket itself: the emulator got its Close
        # (a stop left unread would end in an aborted socket, with no Close from the app).
        assert stopped_event.data["app_close_code"] == 1000

        async def stopped() -> bool:
            checks = [c for c in await keypad_checks(stack.redis, room.id) if c.participant == pid]
            return bool(checks) and checks[0].stopped

        await until(stopped, timeout=15)  # the stream's last messages were read
