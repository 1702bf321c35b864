"""A call end to end with the app on a Redis Cluster (HANDRAISE_REDIS_URL=redis+cluster://…).

The app connects by itself from the URL, as ``handraise serve`` would: webhooks, the media
stream, the host's controls, the companion PIN and the hook worker all run on the cluster.
"""

from __future__ import annotations

import pytest
from phonekit import Stack, phone_stack, until

from handraise.events import read_events
from handraise.pins import lookup_pin
from handraise.rooms import create_room
from handraise.store import is_cluster

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.filterwarnings("ignore:.*(BasicAuth|auth' parameter).*:DeprecationWarning"),
]


async def test_a_call_on_a_cluster_raises_by_keypad_is_called_on_and_hangs_up_cleanly(
        redis_cluster: str) -> None:
    async with phone_stack(redis_cluster, app_connects=True) as stack:
        assert is_cluster(stack.app.extensions["handraise"].redis)
        assert stack.app.extensions["handraise"].redis is not stack.redis  # its own client
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Clustered")
        room = created.room
        host, hpid = await stack.join(created.host_code, "+15550100001", host=True)
        sid, pid = await stack.join(room.access_code, "+15550100002")
        heard = stack.said(sid).split("your PIN is ")[1].split(".")[0]
        assert await lookup_pin(stack.redis, "".join(c for c in heard if c.isdigit())) == (room.id, pid)

        stack.sim.press(sid, "*1")  # in the conference: the media stream hears it
        await stack.sim.wait_event("heard", call_sid=sid, kind="announcement",
                                   text="Hand raised. You are number 1 in line.", timeout=15)
        assert [(h.participant, h.source) for h in await stack.queue.queue(room.id)] == [(pid, "keypad")]

        result = await stack.host.call_on(room.id)
        assert result.ok and result.participant == pid
        assert stack.sim.state(sid)["conference"]["muted"] is False
        assert await stack.queue.speaker(room.id) == pid

        await stack.sim.hang_up(sid)
        await until(lambda: _gone(stack, room.id, pid))
        assert await stack.queue.speaker(room.id) is None
        await stack.sim.hang_up(host)  # the host leaving ends the meeting
        await until(lambda: _no_one(stack, room.id))
        events = await read_events(stack.redis, room.id)
        left = sorted(e.participant or "" for e in events if e.type == "participant.left")
        assert left == sorted([pid, hpid])
        assert not stack.errors()


async def _gone(stack: Stack, room: str, pid: str) -> bool:
    return pid not in {p.id for p in (await stack.queue.snapshot(room)).participants}


async def _no_one(stack: Stack, room: str) -> bool:
    return not (await stack.queue.snapshot(room)).participants
