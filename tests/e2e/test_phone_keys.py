"""Where am I (*3), help (*0) and the host's own keys (*5-*9), end to end through the emulator,
in stream rooms (tones in the forked audio) and star rooms (* steps out, a Gather reads one key)."""

from __future__ import annotations

import pytest
from phonekit import Stack, phone_stack, until

from handraise.phone.twiml import spoken_digits
from handraise.pins import pin_of
from handraise.rooms import Room, create_room

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*(BasicAuth|auth' parameter).*:DeprecationWarning"),
]


async def heard(stack: Stack, sid: str, text: str, mark: int) -> None:
    """Wait until ``sid`` privately heard ``text`` (an announcement) after ``mark``."""
    await stack.sim.wait_event("heard", call_sid=sid, kind="announcement", text=text, after=mark,
                               timeout=15)


def announced(stack: Stack, sid: str, mark: int = 0) -> list[str]:
    return [str(e.data.get("text")) for e in stack.sim.events[mark:]
            if e.kind == "heard" and e.call_sid == sid and e.data.get("kind") == "announcement"]


async def star_key(stack: Stack, sid: str, digit: str) -> int:
    """Star rooms: press *, wait for the one-key menu, press ``digit``, wait to be back in."""
    mark = stack.sim.events[-1].seq
    stack.sim.press(sid, "*")
    await stack.sim.wait_event("gather-start", call_sid=sid, num_digits=1, after=mark)
    stack.sim.press(sid, digit)
    await stack.sim.wait_event("conference", call_sid=sid, event="participant-join", after=mark,
                               timeout=15)
    return mark


def said_since(stack: Stack, sid: str, mark: int) -> str:
    return " | ".join(str(e.data.get("text", "")) for e in stack.sim.events[mark:]
                      if e.kind == "heard" and e.call_sid == sid)


async def meeting(stack: Stack, name: str, **settings: object) -> tuple[Room, str, str]:
    """A room with its host dialled in; (room, host CallSid, host participant id)."""
    await stack.redis.flushall()
    created = await create_room(stack.redis, name, **settings)
    host, host_pid = await stack.join(created.host_code, "+15550109000", host=True)
    return created.room, host, host_pid


# --- where am I -------------------------------------------------------------------------------


async def test_star_3_in_a_stream_room_tells_the_caller_their_place_privately(redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        room, host, _ = await meeting(stack, "Where")
        a, a_pid = await stack.join(room.access_code, "+15550104821")
        b, b_pid = await stack.join(room.access_code, "+15550107733")

        mark = stack.sim.events[-1].seq
        stack.sim.press(b, "*3")
        await heard(stack, b, "Your hand is not raised.", mark)

        await stack.queue.raise_hand(room.id, a_pid, source="web")
        await stack.queue.raise_hand(room.id, b_pid, source="web")
        mark = stack.sim.events[-1].seq
        stack.sim.press(b, "*3")
        await heard(stack, b, "Your hand is raised. You are number 2 in line.", mark)
        assert announced(stack, a, mark) == [] and announced(stack, host, mark) == []  # private
        assert stack.sim.state(b)["conference"]["label"] == b_pid  # never left the conference
        assert [h.participant for h in await stack.queue.queue(room.id)] == [a_pid, b_pid]  # unchanged

        assert (await stack.host.call_on(room.id, b_pid)).ok
        mark = stack.sim.events[-1].seq
        stack.sim.press(b, "*3")
        await heard(stack, b, "You are live: the host called on you.", mark)
        assert not stack.errors()


async def test_where_keys_are_the_rooms_own(redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        room, _, _ = await meeting(stack, "Own keys", where_keys="#3")
        sid, pid = await stack.join(room.access_code, "+15550104821")
        await stack.queue.raise_hand(room.id, pid, source="web")
        mark = stack.sim.events[-1].seq
        stack.sim.press(sid, "*3")  # no longer a command here
        stack.sim.press(sid, "#3")
        await heard(stack, sid, "Your hand is raised. You are number 1 in line.", mark)
        assert announced(stack, sid, mark) == ["Your hand is raised. You are number 1 in line."]


async def test_star_then_3_in_a_star_room_says_the_place_and_puts_the_caller_back(
        redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        room, _, _ = await meeting(stack, "Star where", keypad_mode="star")
        _, a_pid = await stack.join(room.access_code, "+15550104821")
        b, b_pid = await stack.join(room.access_code, "+15550107733")
        mark = await star_key(stack, b, "3")
        assert "Your hand is not raised." in said_since(stack, b, mark)
        await stack.queue.raise_hand(room.id, a_pid, source="web")
        await stack.queue.raise_hand(room.id, b_pid, source="web")
        mark = await star_key(stack, b, "3")
        assert "Your hand is raised. You are number 2 in line." in said_since(stack, b, mark)
        assert [h.participant for h in await stack.queue.queue(room.id)] == [a_pid, b_pid]
        assert stack.sim.state(b)["conference"]["muted"] is True  # back in, still muted


# --- help -----------------------------------------------------------------------------------


async def test_star_0_tells_the_rooms_keys_the_pin_and_the_page_and_the_join_prompt_says_so_once(
        redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        room, _, _ = await meeting(stack, "Help", lower_keys="*9", host_mute_all_keys="*4")
        sid, pid = await stack.join(room.access_code, "+15550104821")
        assert stack.said(sid).count("press star 0") == 1  # the join prompt, once
        pin = await pin_of(stack.redis, room.id, pid)
        assert pin is not None
        mark = stack.sim.events[-1].seq
        stack.sim.press(sid, "*0")
        await until(lambda: spoken_digits(pin) in said_since(stack, sid, mark), timeout=15)
        [help_text] = announced(stack, sid, mark)
        assert help_text.startswith("Press star 1 to raise your hand, star 9 to lower it, "
                                    "star 3 to hear your place in line")
        assert "star 0 to hear the keys" in help_text and "slash join" in help_text
        assert "star 4" not in help_text and "star 5" not in help_text  # the host's keys
        assert not any(pin in str(e.data) for e in stack.sim.events if e.kind == "rest")


async def test_star_then_0_in_a_star_room_tells_the_keys_and_the_pin(redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        room, _, _ = await meeting(stack, "Star help", keypad_mode="star")
        sid, pid = await stack.join(room.access_code, "+15550104821")
        pin = await pin_of(stack.redis, room.id, pid)
        assert pin is not None
        mark = await star_key(stack, sid, "0")
        said = said_since(stack, sid, mark)
        assert "Press 1 to raise your hand, 2 to lower it, 3 to hear your place in line" in said
        assert "Press star 1 to raise your hand" in said and said.count(spoken_digits(pin)) == 2


# --- the host on the phone -------------------------------------------------------------------


async def test_the_host_runs_the_meeting_from_the_keypad_in_a_stream_room(redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        room, host, _ = await meeting(stack, "Host keys")
        assert [s["url"].endswith("/voice/stream") for s in stack.sim.state(host)["streams"]] == [True]
        a, a_pid = await stack.join(room.access_code, "+15550104821")
        b, b_pid = await stack.join(room.access_code, "+15550107733")
        await stack.queue.raise_hand(room.id, a_pid, source="web")
        await stack.queue.raise_hand(room.id, b_pid, source="web")

        mark = stack.sim.events[-1].seq
        stack.sim.press(host, "*7")
        await heard(stack, host, "Two hands up. Next: caller ending 4 8 2 1.", mark)

        stack.sim.press(host, "*5")
        await heard(stack, host, "They are live.", mark)
        assert await stack.queue.speaker(room.id) == a_pid
        assert stack.sim.state(a)["conference"]["muted"] is False
        await heard(stack, a, "You are live. Go ahead.", mark)

        stack.sim.press(host, "*6")
        await heard(stack, host, "Done; they are muted again.", mark)
        assert stack.sim.state(a)["conference"]["muted"] is True
        assert await stack.queue.speaker(room.id) is None

        stack.sim.press(host, "*8")
        await heard(stack, host, "1 hand lowered.", mark)
        assert await stack.queue.queue(room.id) == []

        assert (await stack.host.unmute(room.id, b_pid)).ok
        stack.sim.press(host, "*9")
        await heard(stack, host, "Muted 1 caller.", mark)
        assert stack.sim.state(b)["conference"]["muted"] is True
        assert stack.sim.state(host)["conference"]["muted"] is False  # the host keeps their voice
        # Every answer went to the host alone.
        answers = set(announced(stack, host, mark))
        assert len(answers) == 5
        assert not answers & set(announced(stack, a, mark) + announced(stack, b, mark))

        mark = stack.sim.events[-1].seq
        stack.sim.press(host, "*0")
        await until(lambda: announced(stack, host, mark), timeout=15)
        [host_help] = announced(stack, host, mark)
        assert host_help.startswith("Press star 5 to call on the next hand, star 6 to end the "
                                    "speaker's turn, star 7 to hear the queue")
        assert "star 1" not in host_help and "PIN" not in host_help
        assert not stack.errors()


async def test_a_participant_pressing_a_host_key_is_told_so_and_nothing_happens(
        redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        room, host, _ = await meeting(stack, "Not yours")
        a, a_pid = await stack.join(room.access_code, "+15550104821")
        b, _ = await stack.join(room.access_code, "+15550107733")
        await stack.queue.raise_hand(room.id, a_pid, source="web")
        mark = stack.sim.events[-1].seq
        for keys in ("*5", "*8", "*9"):
            stack.sim.press(b, keys)
        await until(lambda: announced(stack, b, mark).count("That key is for the host.") == 3,
                    timeout=15)
        assert await stack.queue.speaker(room.id) is None
        assert [h.participant for h in await stack.queue.queue(room.id)] == [a_pid]
        assert stack.sim.state(a)["conference"]["muted"] is True
        assert announced(stack, host, mark) == []


async def test_the_host_runs_the_meeting_from_the_keypad_in_a_star_room(redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        room, host, host_pid = await meeting(stack, "Star host", keypad_mode="star")
        a, a_pid = await stack.join(room.access_code, "+15550104821")
        b, b_pid = await stack.join(room.access_code, "+15550107733")
        await stack.queue.raise_hand(room.id, a_pid, source="web")
        await stack.queue.raise_hand(room.id, b_pid, source="web")

        mark = await star_key(stack, host, "7")
        said = said_since(stack, host, mark)
        assert "Press 5 to call on the next hand, 6 to end the speaker's turn" in said
        assert "Two hands up. Next: caller ending 4 8 2 1." in said
        # Stepping out did not end the meeting for the others.
        assert stack.sim.state(a)["conference"]["label"] == a_pid
        assert stack.sim.state(host)["conference"]["muted"] is False

        mark = await star_key(stack, host, "5")
        assert "They are live." in said_since(stack, host, mark)
        assert await stack.queue.speaker(room.id) == a_pid
        assert stack.sim.state(a)["conference"]["muted"] is False

        # A participant's * then 5 is not the host's.
        mark = await star_key(stack, b, "5")
        assert "That key is for the host." in said_since(stack, b, mark)
        assert await stack.queue.speaker(room.id) == a_pid
        assert [h.participant for h in await stack.queue.queue(room.id)] == [b_pid]

        # The host hangs up: the room ends the meeting (end_on_host_exit), as Twilio would.
        await stack.sim.hang_up(host)
        for sid in (a, b):
            await stack.sim.wait_event("call-ended", call_sid=sid, timeout=15)
        assert "The meeting has ended" in stack.said(a)
        assert (await stack.queue.snapshot(room.id)).participant(host_pid) is None


async def test_host_keys_are_the_rooms_own_and_never_shared_with_participants(
        redis_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    from argparse import Namespace

    from handraise.cli import _rooms_show
    from handraise.config import Settings
    from handraise.errors import Invalid
    from handraise.rooms import update_room

    async with phone_stack(redis_server) as stack:
        room, host, _ = await meeting(stack, "Own host keys", host_queue_keys="#7")
        with pytest.raises(Invalid, match="host_call_next_keys and raise_keys cannot both be"):
            await update_room(stack.redis, room.id, host_call_next_keys="*1")
        _, a_pid = await stack.join(room.access_code, "+15550104821")
        await stack.queue.raise_hand(room.id, a_pid, source="web")
        mark = stack.sim.events[-1].seq
        stack.sim.press(host, "*7")  # not a command any more
        stack.sim.press(host, "#7")
        await heard(stack, host, "One hand up. Next: caller ending 4 8 2 1.", mark)
        assert announced(stack, host, mark) == ["One hand up. Next: caller ending 4 8 2 1."]
        await _rooms_show(Settings(redis_url=redis_server), Namespace(room=room.id, json=False))
        assert ("host keys on the phone: *5 calls on next, *6 done, #7 hears the queue"
                in capsys.readouterr().out)


async def test_a_star_room_host_who_hangs_up_in_the_key_menu_still_ends_the_meeting(
        redis_server: str) -> None:
    async with phone_stack(redis_server, reconcile_interval_s=0.2) as stack:
        room, host, _ = await meeting(stack, "Host gone", keypad_mode="star")
        a, _ = await stack.join(room.access_code, "+15550104821")
        mark = stack.sim.events[-1].seq
        stack.sim.press(host, "*")
        await stack.sim.wait_event("gather-start", call_sid=host, num_digits=1, after=mark)
        await stack.sim.hang_up(host)  # outside the conference: no callback says so
        await stack.sim.wait_event("call-ended", call_sid=a, timeout=15)
        assert "The meeting has ended" in stack.said(a)


async def test_a_second_host_who_hangs_up_before_joining_ends_nothing(redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Two hosts", keypad_mode="star")
        room = created.room
        await stack.join(created.host_code, "+15550109000", host=True)
        a, a_pid = await stack.join(room.access_code, "+15550104821")
        # A second host's call, known to the room but over before it reached the conference
        # (the welcome is too short to hang up in reliably, so the call ends at the code prompt).
        late = stack.sim.place_call("+15550109001", "+15550109999")
        await stack.sim.wait_event("gather-start", call_sid=late, num_digits=6)
        await stack.sim.hang_up(late)
        late_pid = await stack.queue.join(room.id, role="host", call_sid=late, muted=False)

        result = await stack.host.reconcile(room.id)  # what the periodic one runs
        assert result.ok and result.message.endswith("1 removed.")
        state = await stack.queue.snapshot(room.id)
        assert state.participant(late_pid) is None and state.participant(a_pid) is not None
        assert stack.sim.state(a)["conference"]["label"] == a_pid  # the meeting goes on
