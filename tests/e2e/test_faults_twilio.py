"""A slow Twilio: its REST API answering late or not at all. Host actions report the
timeout, everything else goes on being answered, and the queue is not half-changed."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import httpx
import pytest
from phonekit import Stack, phone_stack, until

from handraise.rooms import create_room
from handraise.tokens import create_token

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*(BasicAuth|auth' parameter).*:DeprecationWarning"),
]

TIMEOUT_S = 5.0  # long enough for the other requests to be seen answered meanwhile


async def test_call_on_while_twilio_hangs_reports_the_timeout_and_changes_nothing(
        redis_server: str) -> None:
    async with phone_stack(redis_server, app_settings={"twilio_timeout_s": TIMEOUT_S}) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Slow Twilio", end_on_host_exit=False)
        room = created.room
        await stack.join(created.host_code, "+15550100001", host=True)
        a, a_pid = await stack.join(room.access_code, "+15550100002")
        b, b_pid = await stack.join(room.access_code, "+15550100003")
        await stack.queue.raise_hand(room.id, a_pid, source="web")
        secret, _ = await create_token(stack.redis, "e2e")
        async with httpx.AsyncClient(base_url=stack.served.base_url, trust_env=False, timeout=30,
                                     headers={"Authorization": f"Bearer {secret}"}) as http:
            stack.sim.config.rest_delay_s = math.inf  # Twilio takes the request, never answers
            mark = stack.sim.events[-1].seq
            action = asyncio.ensure_future(http.post(f"/api/v1/rooms/{room.id}/call-next"))
            await stack.sim.wait_event("rest-delayed", after=mark)

            # While the host's action waits on Twilio, the app answers everything else.
            assert (await http.get("/healthz")).status_code == 200
            late = await stack.dial_in(room.access_code, "+15550100004")  # a voice webhook
            await stack.sim.wait_event("gather-start", call_sid=late, num_digits=2, after=mark)
            stack.sim.press(b, "*1")  # a keypad raise (its announcement waits on Twilio too)
            await until(lambda: _hands(stack, room.id, [a_pid, b_pid]))
            assert not action.done()  # all of that while the call-on was still waiting

            response = await action
            assert response.status_code == 409, response.text
            message = response.json()["message"]
            assert message.startswith(f"Twilio did not answer within {TIMEOUT_S:g} s"), message
            assert "nothing was changed" in message
            # Not half-changed: the hand is still first, nobody speaks, the caller is muted.
            state = await stack.queue.snapshot(room.id)
            assert state.speaker is None
            assert [h.participant for h in state.queue] == [a_pid, b_pid]
            participant = state.participant(a_pid)
            assert participant is not None and participant.muted
            assert stack.sim.state(a)["conference"]["muted"] is True

            # Twilio answers again: the same button works, and only then is the state changed.
            stack.sim.config.rest_delay_s = 0.0
            response = await http.post(f"/api/v1/rooms/{room.id}/call-next")
            assert response.status_code == 200, response.text
            state = await stack.queue.snapshot(room.id)
            assert state.speaker == a_pid
            assert [h.participant for h in state.queue] == [b_pid]
            assert stack.sim.state(a)["conference"]["muted"] is False


async def test_a_slow_twilio_within_the_timeout_only_delays_the_action(redis_server: str) -> None:
    async with phone_stack(redis_server, app_settings={"twilio_timeout_s": 5.0}) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Slow but there", end_on_host_exit=False)
        room = created.room
        await stack.join(created.host_code, "+15550100001", host=True)
        a, a_pid = await stack.join(room.access_code, "+15550100002")
        await stack.queue.raise_hand(room.id, a_pid, source="web")
        stack.sim.config.rest_delay_s = 0.5
        result = await stack.host.call_on(room.id)
        assert result.ok, result.message
        assert (await stack.queue.speaker(room.id)) == a_pid
        assert stack.sim.state(a)["conference"]["muted"] is False


async def _hands(stack: Stack, room: str, expected: list[str]) -> bool:
    return [h.participant for h in await stack.queue.queue(room)] == expected


async def test_an_unmute_twilio_applies_after_the_timeout_is_undone_so_nothing_is_half_changed(
        redis_server: str) -> None:
    async with phone_stack(redis_server, app_settings={"twilio_timeout_s": 1.0}) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Late Twilio", end_on_host_exit=False)
        room = created.room
        await stack.join(created.host_code, "+15550100001", host=True)
        a, a_pid = await stack.join(room.access_code, "+15550100002")
        await stack.queue.raise_hand(room.id, a_pid, source="web")
        stack.sim.config.rest_delay_s = 2.0  # answers, and applies, after the app gave up
        mark = stack.sim.events[-1].seq
        result = await stack.host.call_on(room.id)
        assert not result.ok and result.message.startswith("Twilio did not answer within 1 s")
        # Twilio applies the unmute late, then the mute sent behind it.
        updates = await until(lambda: _participant_updates(stack, a_pid, mark, 2), timeout=15)
        assert [u["params"].get("Muted") for u in updates] == ["false", "true"]
        assert stack.sim.state(a)["conference"]["muted"] is True
        # And the room agrees once the callbacks are in: muted, not speaking, hand still up.
        await until(lambda: _muted(stack, room.id, a_pid))
        state = await stack.queue.snapshot(room.id)
        assert state.speaker is None and [h.participant for h in state.queue] == [a_pid]


def _participant_updates(stack: Stack, label: str, after: int, n: int) -> list[dict[str, Any]] | None:
    found = [e.data for e in stack.sim.events if e.seq > after and e.kind == "rest"
             and e.data["method"] == "POST" and e.data["path"].endswith(f"/Participants/{label}.json")]
    return found if len(found) >= n else None


async def _muted(stack: Stack, room: str, pid: str) -> bool:
    p = (await stack.queue.snapshot(room)).participant(pid)
    return p is not None and p.muted
