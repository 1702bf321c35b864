"""The JSON API's host actions end to end: the app over HTTP, the Twilio emulator, real Redis.

Each action goes through ``/api/v1`` with a token, and the emulator's conference must change
as it does when the dashboard's button is pressed (both call the same HostControls).
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from phonekit import HOST_PASSWORD, Stack, phone_stack, until

from handraise.rooms import create_room
from handraise.tokens import create_token

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*(BasicAuth|auth' parameter).*:DeprecationWarning"),
]


class Api:
    def __init__(self, http: httpx.AsyncClient, room: str) -> None:
        self.http, self.room = http, room

    async def act(self, path: str, method: str = "POST") -> dict[str, Any]:
        response = await self.http.request(method, f"/api/v1/rooms/{self.room}{path}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert body["ok"] is True
        return body


def muted(stack: Stack, sid: str) -> bool:
    return bool(stack.sim.state(sid)["conference"]["muted"])


async def test_every_host_action_through_the_api_changes_the_conference(redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "API controls", end_on_host_exit=False)
        room = created.room
        host, _ = await stack.join(created.host_code, "+15550100001", host=True)
        (a, a_pid), (b, b_pid), (c, c_pid) = [
            await stack.join(room.access_code, f"+1555010000{i}") for i in (2, 3, 4)]
        secret, _ = await create_token(stack.redis, "e2e")
        async with httpx.AsyncClient(base_url=stack.served.base_url, trust_env=False, timeout=20,
                                     headers={"Authorization": f"Bearer {secret}"}) as http:
            api = Api(http, room.id)

            # Raised on their behalf: they hear their place, as after *1.
            mark = stack.sim.events[-1].seq
            raised = await api.act(f"/participants/{a_pid}/hand", "PUT")
            assert raised["position"] == 1
            await stack.sim.wait_event("heard", call_sid=a, kind="announcement", after=mark,
                                       text="Hand raised. You are number 1 in line.")

            # Call on the next hand: unmuted and told privately; done: muted again.
            await api.act("/call-next")
            assert not muted(stack, a) and await stack.queue.speaker(room.id) == a_pid
            await stack.sim.wait_event("heard", call_sid=a, kind="announcement", after=mark,
                                       text="You are live. Go ahead.")
            await api.act("/done")
            assert muted(stack, a) and await stack.queue.speaker(room.id) is None

            # Unmute and mute one; call on one directly.
            await api.act(f"/participants/{b_pid}/unmute")
            assert not muted(stack, b)
            await api.act(f"/participants/{b_pid}/mute")
            assert muted(stack, b)
            await api.act(f"/participants/{c_pid}/call-on")
            assert not muted(stack, c) and await stack.queue.speaker(room.id) == c_pid

            # Mute all: every caller, never the host; the turn ends.
            await api.act(f"/participants/{b_pid}/unmute")
            result = await api.act("/mute-all")
            assert result["message"] == "Muted 2 callers."
            assert all(muted(stack, s) for s in (a, b, c)) and not muted(stack, host)
            assert await stack.queue.speaker(room.id) is None

            # Lower one (they hear it), lower all.
            mark = stack.sim.events[-1].seq
            await api.act(f"/participants/{b_pid}/hand", "PUT")
            await api.act(f"/participants/{b_pid}/lower")
            await stack.sim.wait_event("heard", call_sid=b, kind="announcement", after=mark,
                                       text="Your hand was lowered.")
            for pid in (a_pid, c_pid):
                await api.act(f"/participants/{pid}/hand", "PUT")
            assert (await api.act("/lower-all"))["message"] == "2 hands lowered."
            assert await stack.queue.queue(room.id) == []

            # Prompt: pulled out of the conference into a Gather, by a REST update.
            mark = stack.sim.events[-1].seq
            await api.act(f"/participants/{c_pid}/prompt")
            await stack.sim.wait_event("gather-start", call_sid=c, after=mark)
            left = await stack.sim.wait_event("conference", call_sid=c, event="participant-leave",
                                              after=mark)
            assert left.data["params"]["ReasonParticipantLeft"] == "participant_updated_via_api"
            stack.sim.press(c, "*1")
            await stack.sim.wait_event("conference", call_sid=c, event="participant-join", after=mark)

            # Remove: their call ends and the room forgets them.
            await api.act(f"/participants/{b_pid}/remove")
            await stack.sim.wait_event("call-ended", call_sid=b)
            assert (await stack.queue.snapshot(room.id)).participant(b_pid) is None

            # End: the conference ends for everyone; the room stays open.
            await api.act("/end")
            for sid in (host, a, c):
                await stack.sim.wait_event("call-ended", call_sid=sid)
            status = (await http.get(f"/api/v1/rooms/{room.id}")).json()["status"]
            assert status == "open"


async def test_the_api_and_the_dashboard_leave_the_conference_in_the_same_state(
        redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Same layer")
        room = created.room
        await stack.join(created.host_code, "+15550100001", host=True)
        (by_page, page_pid), (by_api, api_pid) = [
            await stack.join(room.access_code, f"+1555010000{i}") for i in (2, 3)]
        secret, _ = await create_token(stack.redis, "e2e")
        base = stack.served.base_url
        async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=20) as page, \
                httpx.AsyncClient(base_url=base, trust_env=False, timeout=20,
                                  headers={"Authorization": f"Bearer {secret}"}) as api:
            assert (await page.post("/host/login", data={"password": HOST_PASSWORD})).status_code == 303
            csrf = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', (await page.get("/host")).text)
            assert csrf
            headers = {"X-CSRF-Token": csrf.group(1), "HX-Request": "true"}

            async def press(pid: str, action: str) -> tuple[httpx.Response, httpx.Response]:
                pressed = await page.post(f"/host/rooms/{room.id}/participants/{page_pid}/{action}",
                                          headers=headers)
                called = await api.post(f"/api/v1/rooms/{room.id}/participants/{pid}/{action}")
                assert pressed.status_code == called.status_code == 200, (action, called.text)
                assert called.json()["message"] in pressed.text  # the same sentence
                return pressed, called

            for action, expect_muted in (("unmute", False), ("mute", True), ("unmute", False)):
                await press(api_pid, action)
                assert muted(stack, by_page) is muted(stack, by_api) is expect_muted, action
            # Call on: the page's first, then the API's, which mutes the page's speaker again.
            await press(api_pid, "call-on")
            assert await stack.queue.speaker(room.id) == api_pid
            await until(lambda: muted(stack, by_page) and not muted(stack, by_api))
