"""A moderated meeting end to end: the app served over HTTP, the Twilio emulator, real Redis.

Host and seven callers dial in by code; wrong codes are handled; a caller raises a hand in
the pre-join window; the host calls them on (unmuted, private announcement), says done
(muted), prompts a caller out and back with their state intact; hang-ups clear hands; the
host leaving ends the conference and clears the room.
"""

from __future__ import annotations

import pytest
from phonekit import Stack, phone_stack, until

from handraise.pins import lookup_pin
from handraise.rooms import create_room, get_room

# Each takes well under 3 s here, so none is marked slow.
pytestmark = [
    # twilio's async client still passes aiohttp a BasicAuth; not ours to fix.
    pytest.mark.filterwarnings("ignore:.*(BasicAuth|auth' parameter).*:DeprecationWarning"),
]

# The Media Streams WebSocket (phone/media.py) is the in-call keypad issue: until it exists
# the emulator reports a handshake error for the stream fork, which this test tolerates.
STREAM_NOT_SERVED = 31920


def _number(i: int) -> str:
    return f"+1555010{i:04d}"


async def _wrong_code(access: str, host: str) -> str:
    code = "482913"
    while code in (access, host):
        code = str(int(code) + 1)
    return code


async def _in_conference(stack: Stack, sid: str) -> dict[str, object]:
    event = await stack.sim.wait_event("conference", call_sid=sid, event="participant-join")
    return event.data


async def test_a_moderated_meeting_with_a_host_and_seven_callers(redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Weekly call")
        room = created.room
        wrong = await _wrong_code(room.access_code, created.host_code)

        # A caller who gets it wrong three times is told goodbye and hung up on.
        lost = await stack.dial_in(wrong, _number(99))
        for _ in range(2):
            await stack.sim.wait_event("gather-start", call_sid=lost, num_digits=6,
                                       after=stack.sim.events[-1].seq)
            stack.sim.press(lost, wrong)
        await stack.sim.wait_event("call-ended", call_sid=lost)
        assert stack.said(lost).count("not recognised") == 2
        assert "Goodbye" in stack.said(lost)
        assert stack.sim.state(lost)["conference"] is None

        # The host joins unmuted.
        host = await stack.dial_in(created.host_code, _number(1))
        await _in_conference(stack, host)

        callers: list[str] = []
        for i in range(7):
            if i == 3:  # one caller mistypes once, then gets in
                sid = await stack.dial_in(wrong, _number(10 + i))
                mark = stack.sim.events[-1].seq
                await stack.sim.wait_event("gather-start", call_sid=sid, num_digits=6, after=mark)
                stack.sim.press(sid, room.access_code)
            else:
                sid = await stack.dial_in(room.access_code, _number(10 + i))
            await stack.sim.wait_event("gather-start", call_sid=sid, num_digits=2)
            if i == 0:
                stack.sim.press(sid, "*1")  # raise in the pre-join window
            await _in_conference(stack, sid)
            callers.append(sid)
        assert "not recognised" in stack.said(callers[3])

        # Everyone is known; callers are muted, the host is not; the labels are our ids.
        state = await until(lambda: _all_joined(stack, room.id, 8))
        by_call = {p.call_sid: p for p in state.participants}
        assert by_call[host].role == "host" and not by_call[host].muted
        for sid in callers:
            p = by_call[sid]
            assert p.role == "participant" and p.muted
            conf = stack.sim.state(sid)["conference"]
            assert conf["label"] == p.id and conf["muted"] is True
            assert _number(10 + callers.index(sid)) not in conf["label"]
        first = by_call[callers[0]]
        assert [(h.participant, h.source) for h in state.queue] == [(first.id, "prompt")]
        assert "Your hand is raised. You are number 1" in stack.said(callers[0])
        assert (await get_room(stack.redis, room.id)).conference_sid is not None

        # The web PIN the caller heard links to their own participant.
        heard = stack.said(callers[0]).split("your PIN is ")[1].split(".")[0]
        pin = "".join(c for c in heard if c.isdigit())
        assert await lookup_pin(stack.redis, pin) == (room.id, first.id)

        # The host calls on the first hand: unmuted in the emulator, told privately.
        result = await stack.host.call_on(room.id)
        assert result.ok and result.participant == first.id
        assert stack.sim.state(callers[0])["conference"]["muted"] is False
        await stack.sim.wait_event("heard", call_sid=callers[0], kind="announcement",
                                   text="You are live. Go ahead.")
        assert not any("You are live" in stack.said(s) for s in [host, *callers[1:]])
        assert await stack.queue.speaker(room.id) == first.id
        assert await stack.queue.queue(room.id) == []
        await until(lambda: _muted(stack, room.id, first.id, False))

        # Done: muted again, no speaker.
        result = await stack.host.done(room.id)
        assert result.ok
        assert stack.sim.state(callers[0])["conference"]["muted"] is True
        assert await stack.queue.speaker(room.id) is None

        # Prompt: caller 2 is live, is pulled into a Gather, raises, and comes back live.
        second = by_call[callers[1]]
        assert (await stack.host.call_on(room.id, second.id)).ok
        mark = stack.sim.events[-1].seq
        assert (await stack.host.prompt(room.id, second.id)).ok
        await stack.sim.wait_event("gather-start", call_sid=callers[1], after=mark)
        left = await stack.sim.wait_event("conference", call_sid=callers[1],
                                          event="participant-leave", after=mark)
        assert left.data["params"]["ReasonParticipantLeft"] == "participant_updated_via_api"
        stack.sim.press(callers[1], "*1")
        await stack.sim.wait_event("conference", call_sid=callers[1], event="participant-join",
                                   after=mark)
        back = stack.sim.state(callers[1])["conference"]
        assert back["label"] == second.id and back["muted"] is False
        assert back["friendly_name"] == room.conference_name
        assert [h.participant for h in await stack.queue.queue(room.id)] == [second.id]
        assert (await stack.queue.participant(room.id, second.id)).muted is False
        assert (await stack.host.done(room.id, second.id)).ok

        # Lower a hand: private "lowered"; then a hang-up clears a web-raised hand.
        assert (await stack.host.lower_hand(room.id, second.id)).ok
        await stack.sim.wait_event("heard", call_sid=callers[1], kind="announcement",
                                   text="Your hand was lowered.")
        fourth = by_call[callers[4]]
        position, _ = await stack.queue.raise_hand(room.id, fourth.id, source="web")
        assert (await stack.host.announce(room.id, fourth.id, "raised", position)).ok
        await stack.sim.wait_event("heard", call_sid=callers[4], kind="announcement",
                                   text="Hand raised. You are number 1 in line.")
        fourth_pin = await stack.redis.get(f"hr:{{{room.id}}}:pin:{fourth.id}")
        await stack.sim.hang_up(callers[4])
        state = await until(lambda: _gone(stack, room.id, fourth.id))
        assert state.queue == []
        assert await lookup_pin(stack.redis, fourth_pin) is None

        # Host removes a caller: their call ends and they leave the room's state.
        fifth = by_call[callers[5]]
        assert (await stack.host.remove(room.id, fifth.id)).ok
        await stack.sim.wait_event("call-ended", call_sid=callers[5])
        assert (await stack.queue.snapshot(room.id)).participant(fifth.id) is None

        # The host hangs up: the conference ends for everyone and the room's live state clears.
        await stack.sim.hang_up(host)
        for sid in (callers[0], callers[1], callers[2], callers[3], callers[6]):
            await stack.sim.wait_event("call-ended", call_sid=sid)
            assert "The meeting has ended" in stack.said(sid)
        state = await until(lambda: _empty(stack, room.id))
        assert state.queue == [] and state.speaker is None
        assert (await get_room(stack.redis, room.id)).conference_sid is None
        assert await lookup_pin(stack.redis, pin) is None

        assert [e for e in stack.errors() if e["code"] != STREAM_NOT_SERVED] == []
        # Every webhook was signed and accepted; none answered 4xx/5xx.
        statuses = {e.data.get("status") for e in stack.sim.events if e.kind == "webhook"}
        assert statuses == {200}


async def _all_joined(stack: Stack, room: str, n: int) -> object:
    state = await stack.queue.snapshot(room)
    joined = [p for p in state.participants if p.call_sid]
    return state if len(joined) == n and (await get_room(stack.redis, room)).conference_sid else None


async def _muted(stack: Stack, room: str, pid: str, muted: bool) -> bool:
    return (await stack.queue.participant(room, pid)).muted is muted


async def _gone(stack: Stack, room: str, pid: str) -> object:
    state = await stack.queue.snapshot(room)
    return state if state.participant(pid) is None else None


async def _empty(stack: Stack, room: str) -> object:
    """Everyone gone and the conference-end callback seen (it comes after the leaves)."""
    state = await stack.queue.snapshot(room)
    ended = (await get_room(stack.redis, room)).conference_sid is None
    return state if not state.participants and ended else None
