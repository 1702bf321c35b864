"""The companion page and the phone together: what the caller hears after a web raise."""

from __future__ import annotations

import re

import httpx
import pytest
from phonekit import phone_stack, until

from handraise.pins import pin_of
from handraise.rooms import create_room

pytestmark = [pytest.mark.filterwarnings("ignore:.*(BasicAuth|auth' parameter).*:DeprecationWarning")]


@pytest.mark.parametrize("announce", [True, False], ids=["room-announces", "page-only"])
async def test_a_web_raise_is_confirmed_on_the_phone_only_when_the_room_says_so(
        redis_server: str, announce: bool) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Confirm", announce_web=announce)
        room = created.room
        await stack.join(created.host_code, "+15550100001", host=True)
        sid, pid = await stack.join(room.access_code, "+15550100002")
        pin = await pin_of(stack.redis, room.id, pid)
        async with httpx.AsyncClient(base_url=stack.served.base_url) as client:
            assert (await client.post("/join", data={"pin": pin})).status_code == 303
            page = (await client.get("/me")).text
            token = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page)
            assert token
            mark = stack.sim.events[-1].seq
            raised = await client.post("/me/raise", data={"csrf_token": token.group(1)})
            assert raised.status_code == 303
        [hand] = await stack.queue.queue(room.id)
        assert hand.source == "web"
        if announce:
            await until(lambda: "Hand raised. You are number 1 in line." in stack.said(sid))
        else:
            # Let a later private announcement pass first: had the raise been announced, it came before.
            assert (await stack.host.announce(room.id, pid, "muted")).ok
            await until(lambda: "You have been muted." in stack.said(sid))
            heard = [e for e in stack.sim.events[mark:] if e.kind == "heard" and e.call_sid == sid]
            assert [e.data.get("text") for e in heard] == ["You have been muted."]
