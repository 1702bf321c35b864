"""Consent to speak and the speaking limit, end to end (app over HTTP, emulator, real Redis).

The floor's durations are app settings, made short here (``FAST``); the emulator's own
waits are scaled (``wait_time_scale``). Nothing sleeps: every wait polls with a deadline.
"""

from __future__ import annotations

from typing import Any

import pytest
from phonekit import Stack, phone_stack, until

from handraise.events import read_events
from handraise.rooms import create_room, get_room

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*(BasicAuth|auth' parameter).*:DeprecationWarning"),
]

INVITED = "The host invites you to speak. Press 1 to go live, or 2 to stay muted."
#: Short floor timers: tests cannot wait 15 s of real time.
FAST: dict[str, Any] = {"invite_timeout_s": 1.5, "speak_warn_s": 1.0, "speak_grace_s": 1.0,
                        "timer_interval_s": 0.05}


async def _types(stack: Stack, room: str) -> list[str]:
    return [e.type for e in await read_events(stack.redis, room)]


def _muted(stack: Stack, sid: str) -> bool:
    return bool(stack.sim.state(sid)["conference"]["muted"])


async def _consent_room(stack: Stack, **settings: Any) -> tuple[str, str]:
    created = await create_room(stack.redis, "Consent", unmute="consent", **settings)
    await stack.join(created.host_code, "+15550100001", host=True)
    return created.room.id, created.room.access_code


async def test_stream_room_call_on_invites_and_1_on_the_keypad_goes_live(redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        room, code = await _consent_room(stack)
        sid, pid = await stack.join(code, "+15550104821")
        stack.sim.press(sid, "*1")
        await stack.sim.wait_event("heard", call_sid=sid, kind="announcement",
                                   text="Hand raised. You are number 1 in line.", timeout=15)

        result = await stack.host.call_on(room)
        assert result.ok and result.message == "Invited Caller 4821; waiting for their answer."
        await stack.sim.wait_event("heard", call_sid=sid, kind="announcement", text=INVITED,
                                   timeout=15)
        assert _muted(stack, sid)  # invited, not unmuted
        assert await stack.queue.speaker(room) is None

        stack.sim.press(sid, "1")  # a bare 1 in the conference: the stream reads the answer
        await stack.sim.wait_event("heard", call_sid=sid, kind="announcement",
                                   text="You are live. Go ahead.", timeout=15)
        assert not _muted(stack, sid)
        assert stack.sim.state(sid)["conference"]["label"] == pid  # never left the room
        assert await stack.queue.speaker(room) == pid
        types = await _types(stack, room)
        assert types.index("speaker.invited") < types.index("speaker.accepted") \
            < types.index("speaker.called")

        # Outside an invitation a bare 1 is nothing: the muted caller stays muted.
        assert (await stack.host.done(room)).ok
        mark = stack.sim.events[-1].seq
        stack.sim.press(sid, "1")
        stack.sim.press(sid, "*1")
        await stack.sim.wait_event("heard", call_sid=sid, kind="announcement", after=mark,
                                   text="Hand raised. You are number 1 in line.", timeout=15)
        assert _muted(stack, sid) and (await _types(stack, room)).count("speaker.accepted") == 1
        assert not stack.errors()


async def test_stream_room_2_declines_and_call_on_next_invites_the_next_hand(redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        room, code = await _consent_room(stack)
        a, a_pid = await stack.join(code, "+15550104821")
        b, b_pid = await stack.join(code, "+15550105555")
        for pid in (a_pid, b_pid):
            await stack.queue.raise_hand(room, pid, source="web")

        assert (await stack.host.call_on(room)).ok  # Call on next: the first hand
        await stack.sim.wait_event("heard", call_sid=a, kind="announcement", text=INVITED, timeout=15)
        busy = await stack.host.call_on(room)
        assert not busy.ok and "has not answered the invitation yet" in busy.message

        stack.sim.press(a, "2")
        await stack.sim.wait_event("heard", call_sid=a, kind="announcement", text="You stay muted.",
                                   timeout=15)
        # Declining lowered that hand, and Call on next went on to the next hand by itself.
        await stack.sim.wait_event("heard", call_sid=b, kind="announcement", text=INVITED, timeout=15)
        assert [h.participant for h in await stack.queue.queue(room)] == [b_pid]
        invitation = (await get_room(stack.redis, room)).invitation
        assert invitation is not None and invitation.participant == b_pid and invitation.pending
        assert _muted(stack, a) and _muted(stack, b)

        # A direct Unmute in a consent room is an invitation too: nobody is unmuted unasked.
        stack.sim.press(b, "1")
        await until(lambda: not _muted(stack, b))
        assert (await stack.host.mute(room, b_pid)).ok
        assert (await stack.host.done(room)).ok
        result = await stack.host.unmute(room, a_pid)
        assert result.ok and result.message.startswith("Invited")
        await stack.sim.wait_event("heard", call_sid=a, kind="announcement", text=INVITED,
                                   after=stack.sim.events[-1].seq - 50, timeout=15)
        assert _muted(stack, a)


async def test_an_unanswered_invitation_is_declined_as_no_answer_and_the_next_is_invited(
        redis_server: str) -> None:
    async with phone_stack(redis_server, app_settings=FAST) as stack:
        await stack.redis.flushall()
        room, code = await _consent_room(stack)
        a, a_pid = await stack.join(code, "+15550104821")
        b, b_pid = await stack.join(code, "+15550105555")
        for pid in (a_pid, b_pid):
            await stack.queue.raise_hand(room, pid, source="web")
        assert (await stack.host.call_on(room)).ok
        await stack.sim.wait_event("heard", call_sid=a, kind="announcement", text=INVITED, timeout=15)
        # Nobody presses anything: the app's own sweep declines it at the deadline.
        await stack.sim.wait_event("heard", call_sid=a, kind="announcement", timeout=15,
                                   text="No answer, so you stay muted. Raise your hand again "
                                        "when you are ready.")
        await stack.sim.wait_event("heard", call_sid=b, kind="announcement", text=INVITED, timeout=15)
        declined = [e for e in await read_events(stack.redis, room) if e.type == "speaker.declined"]
        assert [(e.participant, e.data["reason"]) for e in declined[:1]] == [(a_pid, "no answer")]
        assert _muted(stack, a)


async def test_star_room_invitation_is_a_short_gather_and_1_puts_the_caller_back_live(
        redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        room, code = await _consent_room(stack, keypad_mode="star")
        sid, pid = await stack.join(code, "+15550104821")
        other, other_pid = await stack.join(code, "+15550105555")
        assert (await stack.host.call_on(room, other_pid)).ok
        await stack.sim.wait_event("gather-start", call_sid=other, num_digits=1)
        stack.sim.press(other, "1")
        await until(lambda: stack.sim.state(other).get("conference") and not _muted(stack, other))

        mark = stack.sim.events[-1].seq
        assert (await stack.host.call_on(room, pid)).ok
        await stack.sim.wait_event("gather-start", call_sid=sid, num_digits=1, after=mark)
        await until(lambda: INVITED in stack.said(sid))  # its Say plays just after
        assert await stack.queue.speaker(room) == other_pid  # the floor changes only on a yes
        stack.sim.press(sid, "1")
        await stack.sim.wait_event("conference", call_sid=sid, event="participant-join", after=mark)
        assert stack.sim.state(sid)["conference"]["label"] == pid
        assert not _muted(stack, sid)
        assert await stack.queue.speaker(room) == pid
        await until(lambda: _muted(stack, other))  # the previous speaker's turn ended
        assert "You are live. Go ahead." in stack.said(sid)

        # 2 keeps them muted and back in the room.
        assert (await stack.host.done(room)).ok
        mark = stack.sim.events[-1].seq
        assert (await stack.host.call_on(room, pid)).ok
        await stack.sim.wait_event("gather-start", call_sid=sid, num_digits=1, after=mark)
        stack.sim.press(sid, "2")
        await stack.sim.wait_event("conference", call_sid=sid, event="participant-join", after=mark)
        assert _muted(stack, sid) and await stack.queue.speaker(room) is None
        assert (await get_room(stack.redis, room)).invitation.status == "declined"  # type: ignore[union-attr]
        assert not stack.errors()


async def test_the_speaking_limit_cues_shows_over_time_and_auto_mutes(redis_server: str) -> None:
    async with phone_stack(redis_server, app_settings=FAST) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Limited", speak_limit_s=2, auto_mute=True)
        room = created.room.id
        await stack.join(created.host_code, "+15550100001", host=True)
        sid, pid = await stack.join(created.room.access_code, "+15550104821")
        assert (await stack.host.call_on(room, pid)).ok
        assert not _muted(stack, sid)
        await stack.sim.wait_event("heard", call_sid=sid, kind="announcement", text="1 seconds left.",
                                   timeout=15)
        await until(lambda: _has(stack, room, "speaker.over_time"), timeout=15)
        assert not _muted(stack, sid)  # the grace before the mute
        await stack.sim.wait_event("heard", call_sid=sid, kind="announcement",
                                   text="Time is up, thank you.", timeout=15)
        await until(lambda: _muted(stack, sid))
        await until(lambda: _no_speaker(stack, room))  # Twilio first, then the turn ends
        types = await _types(stack, room)
        assert types.count("speaker.over_time") == 1 and types.count("speaker.done") == 1
        cues = [t for t in stack.sim.transcript(sid) if t.get("text") == "1 seconds left."]
        assert len(cues) == 1


async def _speaker_is(stack: Stack, room: str, pid: str) -> bool:
    return await stack.queue.speaker(room) == pid


async def _no_speaker(stack: Stack, room: str) -> bool:
    return await stack.queue.speaker(room) is None


async def _has(stack: Stack, room: str, kind: str) -> bool:
    return kind in await _types(stack, room)


async def test_the_api_sets_consent_call_next_invites_and_the_speaker_shows_the_invitation(
        redis_server: str) -> None:
    import httpx

    from handraise.tokens import create_token

    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "API consent")
        room = created.room.id
        await stack.join(created.host_code, "+15550100001", host=True)
        sid, pid = await stack.join(created.room.access_code, "+15550104821")
        await stack.queue.raise_hand(room, pid, source="web")
        secret, _ = await create_token(stack.redis, "e2e")
        api = f"/api/v1/rooms/{room}"
        async with httpx.AsyncClient(base_url=stack.served.base_url,
                                     trust_env=False, timeout=20,
                                     headers={"Authorization": f"Bearer {secret}"}) as http:
            patched = await http.patch(api, json={"unmute": "consent", "speak_limit_s": 90.0})
            assert patched.status_code == 200, patched.text
            assert patched.json()["unmute"] == "consent" and patched.json()["speak_limit_s"] == 90
            acted = await http.post(api + "/call-next")
            assert acted.status_code == 200 and acted.json()["message"].startswith("Invited")
            await stack.sim.wait_event("heard", call_sid=sid, kind="announcement", text=INVITED,
                                       timeout=15)
            speaker = (await http.get(api + "/speaker")).json()
            assert speaker["speaker"] is None and speaker["over_time"] is False
            assert speaker["invitation"]["participant"] == pid
            assert speaker["invitation"]["status"] == "pending"
            assert speaker["invitation"]["next"] is True
            stack.sim.press(sid, "1")
            await until(lambda: _speaker_is(stack, room, pid))
            speaker = (await http.get(api + "/speaker")).json()
            assert speaker["speaker"]["participant"] == pid
            assert speaker["invitation"]["status"] == "accepted"


async def test_star_room_go_live_on_the_page_while_the_phone_waits_in_the_gather(
        redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        room, code = await _consent_room(stack, keypad_mode="star")
        sid, pid = await stack.join(code, "+15550104821")
        mark = stack.sim.events[-1].seq
        assert (await stack.host.call_on(room, pid)).ok
        await stack.sim.wait_event("gather-start", call_sid=sid, num_digits=1, after=mark)
        # The companion page's Go live (the same HostControls call its route makes).
        result = await stack.host.answer(room, pid, accept=True, source="web")
        assert result.ok
        await stack.sim.wait_event("conference", call_sid=sid, event="participant-join", after=mark)
        assert not _muted(stack, sid) and await stack.queue.speaker(room) == pid
        assert not stack.errors()


async def test_an_invitation_that_cannot_reach_the_caller_is_taken_back(redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        room, code = await _consent_room(stack)
        sid, pid = await stack.join(code, "+15550105555")
        _, waiting = await stack.reach_prejoin(await get_room(stack.redis, room), "+15550104821")
        await until(lambda: _has_conference(stack, room))
        result = await stack.host.call_on(room, waiting)  # still in the pre-join window
        assert not result.ok and "not in the conference right now" in result.message
        assert (await get_room(stack.redis, room)).invitation is None
        assert (await stack.host.call_on(room, pid)).ok  # nobody is held up by it
        await stack.sim.wait_event("heard", call_sid=sid, kind="announcement", text=INVITED,
                                   timeout=15)


async def _has_conference(stack: Stack, room: str) -> bool:
    return (await get_room(stack.redis, room)).conference_sid is not None


@pytest.mark.parametrize("mode", ["stream", "star"])
async def test_a_room_chooses_its_own_answer_keys(redis_server: str, mode: str) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        room, code = await _consent_room(stack, keypad_mode=mode, accept_keys="*4", reply_keys="#4",
                                         decline_keys="8")
        sid, pid = await stack.join(code, "+15550104821")
        mark = stack.sim.events[-1].seq
        assert (await stack.host.call_on(room, pid)).ok
        line = "The host invites you to speak. Press star 4 to go live, or 8 to stay muted."
        if mode == "stream":
            await stack.sim.wait_event("heard", call_sid=sid, kind="announcement", text=line,
                                       timeout=15)
            stack.sim.press(sid, "1")  # the default key means nothing here
        else:
            await stack.sim.wait_event("gather-start", call_sid=sid, num_digits=2, after=mark)
            await until(lambda: line in stack.said(sid))  # its Say plays just after
        stack.sim.press(sid, "*4")
        await until(lambda: stack.sim.state(sid).get("conference") and not _muted(stack, sid))
        await until(lambda: _speaker_is(stack, room, pid))  # Twilio first, then the turn
        assert (await _types(stack, room)).count("speaker.accepted") == 1
