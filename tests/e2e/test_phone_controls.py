"""Host controls and star keypad mode end to end (app over HTTP, emulator, real Redis)."""

from __future__ import annotations

import pytest
from phonekit import Stack, phone_stack, until
from quart import Response, request

from handraise.pins import lookup_pin, pin_of
from handraise.rooms import create_room, get_room

# Each takes well under 3 s here, so none is marked slow.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*(BasicAuth|auth' parameter).*:DeprecationWarning"),
]


async def test_star_mode_steps_out_reads_one_key_and_puts_the_caller_back(redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Star room", keypad_mode="star")
        room = created.room
        await stack.join(created.host_code, "+15550100001", host=True)
        sid, pid = await stack.join(room.access_code, "+15550100002")
        assert stack.sim.state(sid)["streams"] == []  # star mode forks no audio
        mark = stack.sim.events[-1].seq
        stack.sim.press(sid, "*")
        await stack.sim.wait_event("gather-start", call_sid=sid, num_digits=1, after=mark)
        stack.sim.press(sid, "1")
        await stack.sim.wait_event("conference", call_sid=sid, event="participant-join", after=mark)
        assert stack.sim.state(sid)["conference"]["label"] == pid
        assert stack.sim.state(sid)["conference"]["muted"] is True
        hands = await stack.queue.queue(room.id)
        assert [(h.participant, h.source) for h in hands] == [(pid, "keypad")]
        assert "You are number 1" in stack.said(sid)
        assert (await stack.queue.snapshot(room.id)).participant(pid) is not None


async def test_mute_all_lower_all_and_end_conference(redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Controls", end_on_host_exit=False)
        room = created.room
        host, _ = await stack.join(created.host_code, "+15550100001", host=True)
        calls = [await stack.join(room.access_code, f"+1555010000{i}") for i in (2, 3, 4)]
        (a, a_pid), (b, b_pid), (c, c_pid) = calls
        assert (await stack.host.call_on(room.id, a_pid)).ok
        assert (await stack.host.unmute(room.id, b_pid)).ok
        assert stack.sim.state(b)["conference"]["muted"] is False

        result = await stack.host.mute_all(room.id)
        assert result.ok and result.message == "Muted 2 callers."
        assert all(stack.sim.state(s)["conference"]["muted"] for s in (a, b, c))
        assert stack.sim.state(host)["conference"]["muted"] is False  # hosts keep their voice
        assert await stack.queue.speaker(room.id) is None

        for pid in (b_pid, c_pid):
            await stack.queue.raise_hand(room.id, pid, source="web")
        result = await stack.host.lower_all(room.id)
        assert result.ok and result.message == "2 hands lowered."
        assert await stack.queue.queue(room.id) == []

        result = await stack.host.end_conference(room.id)
        assert result.ok
        for sid in (host, a, b, c):
            await stack.sim.wait_event("call-ended", call_sid=sid)
        assert "The meeting has ended" in stack.said(a)
        state = await stack.queue.snapshot(room.id)
        assert state.participants == [] and state.queue == []
        assert (await get_room(stack.redis, room.id)).status == "open"  # reusable next time


async def test_a_caller_outside_the_conference_is_kept_until_their_call_is_gone(
        redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Gone")
        room = created.room
        await stack.join(created.host_code, "+15550100001", host=True)
        sid, pid = await stack.reach_prejoin(room, "+15550100002")
        await until(lambda: _has_conference(stack, room.id))

        # Still in the pre-join window: not in the conference, but very much on the line.
        result = await stack.host.unmute(room.id, pid)
        assert not result.ok and "not in the conference right now" in result.message
        assert (await stack.queue.snapshot(room.id)).participant(pid) is not None

        # Reconciling keeps them: Twilio does not list them, but their call is live.
        assert (await stack.host.reconcile(room.id)).message.endswith("0 removed.")
        assert (await stack.queue.snapshot(room.id)).participant(pid) is not None

        # They hang up before joining: no conference callback will ever say so.
        await stack.sim.hang_up(sid)
        result = await stack.host.unmute(room.id, pid)
        assert not result.ok and "already left" in result.message
        assert (await stack.queue.snapshot(room.id)).participant(pid) is None


async def test_a_caller_who_hangs_up_in_the_pre_join_window_is_dropped_without_a_callback(
        redis_server: str) -> None:
    async with phone_stack(redis_server, reconcile_interval_s=0.1) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Ghosts")
        room = created.room
        await stack.join(created.host_code, "+15550100001", host=True)
        _, kept = await stack.join(room.access_code, "+15550100002")
        ghost, ghost_pid = await stack.reach_prejoin(room, "+15550100003")
        await stack.queue.raise_hand(room.id, ghost_pid, source="web")
        pin = await stack.redis.get(f"hr:{{{room.id}}}:pin:{ghost_pid}")
        assert pin and await lookup_pin(stack.redis, pin) == (room.id, ghost_pid)
        await stack.sim.hang_up(ghost)  # no conference callback will ever say so

        async def ghost_gone() -> bool:
            return (await stack.queue.snapshot(room.id)).participant(ghost_pid) is None

        await until(ghost_gone)  # the app's own periodic reconciliation, not a manual call
        state = await stack.queue.snapshot(room.id)
        assert len(state.participants) == 2 and state.participant(kept) is not None
        assert state.queue == []

        async def pin_revoked() -> bool:  # the step after leaving: give it its moment
            return await lookup_pin(stack.redis, pin) is None

        await until(pin_revoked)


async def test_a_pre_join_hang_up_is_dropped_even_with_no_conference_running(
        redis_server: str) -> None:
    async with phone_stack(redis_server, reconcile_interval_s=0.1) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Nobody yet")
        room = created.room
        early = await stack.dial_in(room.access_code, "+15550100002")
        await stack.sim.wait_event("gather-start", call_sid=early, num_digits=2)
        assert len((await stack.queue.snapshot(room.id)).participants) == 1
        await stack.sim.hang_up(early)

        async def empty() -> bool:
            return (await stack.queue.snapshot(room.id)).participants == []

        await until(empty)
        assert (await get_room(stack.redis, room.id)).conference_sid is None


async def _has_conference(stack: Stack, room: str) -> bool:
    return (await get_room(stack.redis, room)).conference_sid is not None


async def test_a_failed_call_lookup_keeps_the_caller_and_says_so(redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Lookup down")
        room = created.room
        await stack.join(created.host_code, "+15550100001", host=True)
        sid, pid = await stack.reach_prejoin(room, "+15550100002")
        await until(lambda: _has_conference(stack, room.id))

        # The emulator answers the call lookup with a server error (Twilio having a bad minute).
        @stack.sim.app.before_request
        async def fail_call_lookups() -> Response | None:
            if request.method == "GET" and request.path.endswith(f"/Calls/{sid}.json"):
                return Response('{"code": 20500, "message": "Internal Server Error"}',
                                status=500, content_type="application/json")
            return None

        result = await stack.host.unmute(room.id, pid)
        assert not result.ok and "could not be reached" in result.message
        assert (await stack.queue.snapshot(room.id)).participant(pid) is not None
        assert stack.sim.state(sid)["status"] == "in-progress"



async def _conference_end_delivered(stack: Stack, after: int) -> None:
    """Wait until the app has answered the conference-end status callback."""
    await stack.sim.wait_for(
        lambda e: e.kind == "webhook" and e.data.get("purpose") == "conference-status-callback"
        and e.data["params"].get("StatusCallbackEvent") == "conference-end"
        and e.data.get("status") == 200, after=after)


async def _raise_in_prejoin_and_join(stack: Stack, room: str, sid: str, pid: str) -> None:
    """The caller still in the pre-join window presses *1: same id, hand up, PIN read."""
    mark = stack.sim.events[-1].seq
    stack.sim.press(sid, "*1")
    await stack.sim.wait_event("conference", call_sid=sid, event="participant-join", after=mark)
    assert stack.sim.state(sid)["conference"]["label"] == pid
    said = stack.said(sid)
    assert "briefly unavailable" not in said
    assert "Your hand is raised. You are number 1 in line." in said and "your PIN is" in said
    assert [h.participant for h in await stack.queue.queue(room)] == [pid]
    pin = await stack.redis.get(f"hr:{{{room}}}:pin:{pid}")
    assert pin and await lookup_pin(stack.redis, pin) == (room, pid)


async def test_the_conference_ending_keeps_a_caller_still_in_the_pre_join_window(
        redis_server: str) -> None:
    # A real-length (3 s) pre-join window, so the test acts inside it; it ends at the *1.
    async with phone_stack(redis_server, wait_time_scale=1.0) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Early end")
        room = created.room
        p1 = await stack.dial_in(room.access_code, "+15550100001")
        await stack.sim.wait_event("gather-start", call_sid=p1, num_digits=2)
        stack.sim.press(p1, "*2")  # skip the window: P1 waits alone in the conference
        await stack.sim.wait_event("conference", call_sid=p1, event="participant-join")
        p2, p2_pid = await stack.reach_prejoin(room, "+15550100002")
        mark = stack.sim.events[-1].seq
        await stack.sim.hang_up(p1)  # the last one leaves: the conference ends
        await _conference_end_delivered(stack, mark)
        state = await stack.queue.snapshot(room.id)
        assert [p.id for p in state.participants] == [p2_pid]  # P1 gone, P2 kept
        await _raise_in_prejoin_and_join(stack, room.id, p2, p2_pid)


async def test_the_host_ending_the_conference_keeps_a_caller_in_the_pre_join_window(
        redis_server: str) -> None:
    # A real-length (3 s) pre-join window, so the test acts inside it; it ends at the *1.
    async with phone_stack(redis_server, wait_time_scale=1.0) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Host ends")
        room = created.room
        host, _ = await stack.join(created.host_code, "+15550100001", host=True)
        await until(lambda: _has_conference(stack, room.id))
        p2, p2_pid = await stack.reach_prejoin(room, "+15550100002")
        mark = stack.sim.events[-1].seq
        assert (await stack.host.end_conference(room.id)).ok
        await stack.sim.wait_event("call-ended", call_sid=host, after=mark)
        await _conference_end_delivered(stack, mark)
        state = await stack.queue.snapshot(room.id)
        assert [p.id for p in state.participants] == [p2_pid]
        await _raise_in_prejoin_and_join(stack, room.id, p2, p2_pid)


async def test_star_mode_star_then_0_repeats_the_pin_and_puts_the_caller_back(redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Star PIN", keypad_mode="star")
        room = created.room
        await stack.join(created.host_code, "+15550100001", host=True)
        sid, pid = await stack.join(room.access_code, "+15550100002")
        pin = await pin_of(stack.redis, room.id, pid)
        assert pin is not None
        mark = stack.sim.events[-1].seq
        stack.sim.press(sid, "*")
        await stack.sim.wait_event("gather-start", call_sid=sid, num_digits=1, after=mark)
        await until(lambda: "0 to hear the keys, your web PIN" in stack.said(sid))  # its Say plays just after
        stack.sim.press(sid, "0")
        await stack.sim.wait_event("conference", call_sid=sid, event="participant-join", after=mark)
        assert stack.said(sid).count(", ".join(pin)) == 4
        assert await stack.queue.queue(room.id) == []

