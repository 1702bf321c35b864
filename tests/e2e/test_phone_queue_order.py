"""Replies, the fair order and undoing "Lower all hands", end to end: the keypad through the
emulator (stream and star modes), the host's controls, the JSON API, and what each caller
heard privately."""

from __future__ import annotations

from argparse import Namespace
from typing import Any

import httpx
import pytest
from phonekit import Stack, phone_stack, until

from handraise.cli import _rooms_show
from handraise.config import Settings
from handraise.rooms import create_room
from handraise.store import key
from handraise.tokens import create_token

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*(BasicAuth|auth' parameter).*:DeprecationWarning"),
]


async def heard(stack: Stack, sid: str, text: str, mark: int) -> None:
    await stack.sim.wait_event("heard", call_sid=sid, kind="announcement", text=text, after=mark,
                               timeout=15)


async def order(stack: Stack, room: str) -> list[tuple[str, str]]:
    return [(h.participant, h.kind) for h in await stack.queue.queue(room)]


async def test_star_4_raises_a_reply_ahead_of_points_that_becomes_a_point_when_the_turn_ends(
        redis_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Replies")  # stream mode, reply_keys *4
        room = created.room
        await stack.join(created.host_code, "+15550100001", host=True)
        (s, s_pid), (a, a_pid), (b, b_pid) = [
            await stack.join(room.access_code, f"+1555010000{i}") for i in (2, 3, 4)]

        mark = stack.sim.events[-1].seq
        stack.sim.press(b, "*4")  # nobody speaks yet: nothing to reply to, nothing raised
        await heard(stack, b, "Nobody is speaking, so there is nothing to reply to.", mark)
        assert await stack.queue.queue(room.id) == []

        assert (await stack.host.call_on(room.id, s_pid)).ok
        mark = stack.sim.events[-1].seq
        stack.sim.press(a, "*1")
        await heard(stack, a, "Hand raised. You are number 1 in line.", mark)
        stack.sim.press(b, "*4")
        await heard(stack, b, "Reply raised. You are number 1 in line.", mark)  # ahead of a's point
        assert await order(stack, room.id) == [(b_pid, "reply"), (a_pid, "point")]
        [reply, _] = await stack.queue.queue(room.id)
        assert (reply.reply_to, reply.source) == (s_pid, "keypad")
        stack.sim.press(s, "*4")  # the speaker cannot reply to themselves
        await heard(stack, s, "You are speaking now, so there is nothing to reply to.", mark)
        await stack.queue.update(room.id, s_pid, name="Sam")
        await _rooms_show(Settings(redis_url=redis_server), Namespace(room=room.id, json=False))
        assert "via keypad  reply to Sam" in capsys.readouterr().out

        # A caller still in the pre-join window replies with the same keys.
        c, c_pid = await stack.reach_prejoin(room, "+15550100005")
        stack.sim.press(c, "*4")
        await stack.sim.wait_event("conference", call_sid=c, event="participant-join")
        assert "Your reply is raised. You are number 2 in line." in stack.said(c)
        assert await order(stack, room.id) == [(b_pid, "reply"), (c_pid, "reply"), (a_pid, "point")]

        # The speaker is done: the replies become ordinary hands in place (after a's).
        assert (await stack.host.done(room.id)).ok
        assert await order(stack, room.id) == [(a_pid, "point"), (b_pid, "point"), (c_pid, "point")]
        assert stack.sim.state(s)["conference"]["muted"] is True
        assert not stack.errors()


async def test_star_mode_reads_4_after_star_as_a_reply(redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Star replies", keypad_mode="star")
        room = created.room
        await stack.join(created.host_code, "+15550100001", host=True)
        (_s, s_pid), (_a, a_pid), (b, b_pid) = [
            await stack.join(room.access_code, f"+1555010000{i}") for i in (2, 3, 4)]
        await stack.queue.raise_hand(room.id, a_pid, source="web")
        assert (await stack.host.call_on(room.id, s_pid)).ok

        mark = stack.sim.events[-1].seq
        stack.sim.press(b, "*")
        await stack.sim.wait_event("gather-start", call_sid=b, num_digits=1, after=mark)
        await until(lambda: "4 to reply to the speaker" in stack.said(b))  # its Say plays just after
        stack.sim.press(b, "4")
        await stack.sim.wait_event("conference", call_sid=b, event="participant-join", after=mark)
        assert "Your reply is raised. You are number 1 in line." in stack.said(b)
        assert await order(stack, room.id) == [(b_pid, "reply"), (a_pid, "point")]
        assert stack.sim.state(b)["conference"]["muted"] is True  # back in, still muted
        assert not stack.errors()


async def test_fair_order_puts_first_time_speakers_first_in_every_reader(redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Fair turns", order="fair")
        room = created.room
        await stack.join(created.host_code, "+15550100001", host=True)
        (a, a_pid), (b, b_pid), (c, c_pid) = [
            await stack.join(room.access_code, f"+1555010000{i}") for i in (2, 3, 4)]
        assert (await stack.host.call_on(room.id, a_pid)).ok  # a has spoken
        assert (await stack.host.done(room.id)).ok

        mark = stack.sim.events[-1].seq
        stack.sim.press(a, "*1")
        await heard(stack, a, "Hand raised. You are number 1 in line.", mark)
        stack.sim.press(b, "*1")  # raised later, but has not spoken: goes first
        await heard(stack, b, "Hand raised. You are number 1 in line.", mark)
        stack.sim.press(c, "*1")
        await heard(stack, c, "Hand raised. You are number 2 in line.", mark)
        assert await stack.queue.line(room.id) == [b_pid, c_pid, a_pid]

        secret, _ = await create_token(stack.redis, "e2e")
        async with httpx.AsyncClient(base_url=stack.served.base_url, trust_env=False, timeout=20,
                                     headers={"Authorization": f"Bearer {secret}"}) as http:
            queue = (await http.get(f"/api/v1/rooms/{room.id}/queue")).json()
            assert [(h["participant"], h["position"], h["kind"]) for h in queue["hands"]] == \
                [(b_pid, 1, "point"), (c_pid, 2, "point"), (a_pid, 3, "point")]
            people = (await http.get(f"/api/v1/rooms/{room.id}/participants")).json()
            positions = {p["id"]: p["hand_position"] for p in people["participants"]}
            assert (positions[b_pid], positions[c_pid], positions[a_pid]) == (1, 2, 3)
            assert (await http.patch(f"/api/v1/rooms/{room.id}", json={"order": "fifo"})).json()[
                "order"] == "fifo"
            queue = (await http.get(f"/api/v1/rooms/{room.id}/queue")).json()
            assert [h["participant"] for h in queue["hands"]] == [a_pid, b_pid, c_pid]
            await http.patch(f"/api/v1/rooms/{room.id}", json={"order": "fair"})

        # "Call on next" follows the same order: b, then c.
        assert (await stack.host.call_on(room.id)).participant == b_pid
        assert stack.sim.state(b)["conference"]["muted"] is False
        assert (await stack.host.call_on(room.id)).participant == c_pid
        assert await stack.queue.line(room.id) == [a_pid]
        assert not stack.errors()


async def test_undo_lower_all_through_the_api_and_from_another_process(redis_server: str) -> None:
    async with phone_stack(redis_server) as stack, \
            phone_stack(redis_server, reconcile_interval_s=600) as other:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Undo")
        room = created.room
        await stack.join(created.host_code, "+15550100001", host=True)
        (a, a_pid), (_b, b_pid), (c, c_pid) = [
            await stack.join(room.access_code, f"+1555010000{i}") for i in (2, 3, 4)]
        mark = stack.sim.events[-1].seq
        for n, sid in enumerate((c, a), start=1):
            stack.sim.press(sid, "*1")
            await heard(stack, sid, f"Hand raised. You are number {n} in line.", mark)
        await stack.queue.raise_hand(room.id, b_pid, source="web")
        await stack.queue.set_topic(room.id, b_pid, "Line 4")
        before = [(h.participant, h.position, h.raised_at, h.source)
                  for h in await stack.queue.queue(room.id)]
        assert [p for p, *_ in before] == [c_pid, a_pid, b_pid]

        secret, _ = await create_token(stack.redis, "e2e")

        async def post(base: str, path: str) -> tuple[int, dict[str, Any]]:
            async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=20,
                                         headers={"Authorization": f"Bearer {secret}"}) as http:
                r = await http.post(f"/api/v1/rooms/{room.id}{path}")
                return r.status_code, r.json()

        assert (await post(stack.served.base_url, "/lower-all"))[1]["message"] == "3 hands lowered."
        assert await stack.queue.queue(room.id) == []
        stack.sim.press(a, "*1")  # a raises again meanwhile: not a second hand after the undo
        await until(lambda: stack.queue.position(room.id, a_pid))
        # The other process (another served app on the same Redis) undoes it.
        status, body = await post(other.served.base_url, "/undo-lower-all")
        assert (status, body["message"]) == (200, "3 hands are back in the queue.")
        after = [(h.participant, h.position, h.raised_at, h.source)
                 for h in await stack.queue.queue(room.id)]
        assert after == before
        assert (await stack.queue.participant(room.id, b_pid)).topic == "Line 4"

        status, body = await post(stack.served.base_url, "/undo-lower-all")  # once only
        assert (status, body["detail"]) == (409, "Nothing to undo.")
        await post(stack.served.base_url, "/lower-all")
        await stack.redis.pexpire(key(room.id, "undo-lower-all"), 1)  # as if 15 s went by
        await until(lambda: _gone(stack, key(room.id, "undo-lower-all")))
        status, body = await post(stack.served.base_url, "/undo-lower-all")
        assert (status, body["detail"]) == (409, "Nothing to undo.")
        assert await stack.queue.queue(room.id) == []
        assert not stack.errors() and not other.errors()


async def _gone(stack: Stack, name: str) -> bool:
    return not await stack.redis.exists(name)
