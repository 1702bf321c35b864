"""In-call keypad, stream mode, end to end: emulator audio -> /voice/stream -> the hand queue."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from argparse import Namespace

import pytest
from phonekit import ACCOUNT_SID, Stack, StoppableRedis, phone_stack, until
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from handraise.cli import _rooms_show
from handraise.config import Settings
from handraise.dsp import synth
from handraise.phone.streams import KeypadCheck, keypad_checks, last_gather
from handraise.phone.twiml import spoken_digits
from handraise.pins import pin_of
from handraise.rooms import create_room

# Each takes about a second here, so none is marked slow.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*(BasicAuth|auth' parameter).*:DeprecationWarning"),
]


async def _check(stack: Stack, room: str, pid: str) -> KeypadCheck | None:
    return next((c for c in await keypad_checks(stack.redis, room) if c.participant == pid), None)


async def test_star_1_in_the_conference_raises_the_hand_and_star_2_lowers_it(
        redis_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Stream room")  # keypad mode "stream"
        room = created.room
        await stack.join(created.host_code, "+15550100001", host=True)
        sid, pid = await stack.join(room.access_code, "+15550100002")
        assert [s["url"].endswith("/voice/stream") for s in stack.sim.state(sid)["streams"]] == [True]

        stack.sim.press(sid, "*1")  # inside the conference: only the stream hears it
        await stack.sim.wait_event("heard", call_sid=sid, kind="announcement",
                                   text="Hand raised. You are number 1 in line.", timeout=15)
        hands = await stack.queue.queue(room.id)
        assert [(h.participant, h.source) for h in hands] == [(pid, "keypad")]
        assert stack.sim.state(sid)["conference"]["label"] == pid  # never left the room
        check = await until(lambda: _check(stack, room.id, pid))
        assert check.tones_seen and not check.stopped  # known during the call already

        stack.sim.press(sid, "*2")
        await stack.sim.wait_event("heard", call_sid=sid, kind="announcement",
                                   text="Your hand was lowered.", timeout=15)
        assert await stack.queue.queue(room.id) == []
        mark = stack.sim.events[-1].seq
        stack.sim.press(sid, "*2")  # nothing to lower: the caller is told so, not misled
        await stack.sim.wait_event("heard", call_sid=sid, kind="announcement", after=mark,
                                   text="Your hand was not raised.", timeout=15)

        await stack.sim.hang_up(sid)
        final = await until(lambda: _stopped(stack, room.id, pid))
        assert final.tones_seen and final.digits == 6 and final.frames > 0
        assert not stack.errors()
        # What the operator reads after the call (README, "On a phone call").
        await _rooms_show(Settings(redis_url=redis_server), Namespace(room=room.id, json=False))
        assert f"{pid}  keypad tones seen in stream: yes" in capsys.readouterr().out


async def test_without_tones_in_the_stream_nothing_is_raised_and_the_self_test_says_no(
        redis_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    async with phone_stack(redis_server, keypad_tones_in_stream=False) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Silent keys")
        room = created.room
        await stack.join(created.host_code, "+15550100001", host=True)
        sid, pid = await stack.join(room.access_code, "+15550100002")
        mark = stack.sim.events[-1].seq
        stack.sim.press(sid, "*1")
        # Let a second of audio (50 frames) pass the detector after the press.
        frames = stack.sim.state(sid)["streams"][0]["frames_sent"]
        await until(lambda: stack.sim.state(sid)["streams"][0]["frames_sent"] > frames + 50)
        await stack.sim.hang_up(sid)
        final = await until(lambda: _stopped(stack, room.id, pid))
        assert final.tones_seen is False and final.digits == 0 and final.frames > 50
        assert await stack.queue.queue(room.id) == []
        assert not any(e.kind == "heard" and e.data.get("kind") == "announcement"
                       for e in stack.sim.events[mark:])
        await _rooms_show(Settings(redis_url=redis_server), Namespace(room=room.id, json=True))
        # The host's leg is streamed too (their keys): one check each.
        checks = json.loads(capsys.readouterr().out)["keypad_check"]
        [shown] = [c for c in checks if c["participant"] == pid]
        assert shown["tones_seen"] is False and len(checks) == 2


async def test_a_forged_or_unsigned_upgrade_is_refused(redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        url = stack.served.base_url.replace("http://", "ws://") + "/voice/stream"
        for headers in ({}, {"X-Twilio-Signature": "Zm9yZ2Vk"}):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url, additional_headers=headers, proxy=None):
                    pass
            assert refused.value.response.status_code == 403


async def test_malformed_frames_are_survived_and_unknown_participants_closed(
        redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        room = (await create_room(stack.redis, "Robust")).room
        sid = "CA" + "12ab" * 8  # we play Twilio's part here, frame by frame
        pid = await stack.queue.join(room.id, call_sid=sid, label="p_robust")
        url = stack.served.base_url.replace("http://", "ws://") + "/voice/stream"
        signed = {"X-Twilio-Signature": stack.sim.engine.validator.compute_signature(url, {})}

        def start(participant: str, call_sid: str = sid) -> str:
            return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": "MZ1",
                               "start": {"accountSid": ACCOUNT_SID, "streamSid": "MZ1",
                                         "callSid": call_sid, "tracks": ["inbound"],
                                         "customParameters": {"room": room.id,
                                                              "participant": participant},
                                         "mediaFormat": {"encoding": "audio/x-mulaw",
                                                         "sampleRate": 8000, "channels": 1}}})

        def media(payload: str) -> str:
            return json.dumps({"event": "media", "streamSid": "MZ1", "sequenceNumber": "2",
                               "media": {"track": "inbound", "chunk": "1", "timestamp": "0",
                                         "payload": payload}})

        frames = synth.to_frames(synth.dtmf("7", tone_ms=100, gap_ms=100))
        async with connect(url, additional_headers=signed, proxy=None) as ws:
            await ws.send(media(base64.b64encode(frames[0]).decode()))  # before start
            await ws.send(start(pid))
            for junk in ("{not json", "[1]", json.dumps({"event": "dance"}),
                         media("!!!not base64!!!"), media(""),
                         media(base64.b64encode(bytes(4000)).decode())):
                await ws.send(junk)
            for frame in frames:
                await ws.send(media(base64.b64encode(frame).decode()))
            await ws.send(json.dumps({"event": "stop", "streamSid": "MZ1", "sequenceNumber": "3",
                                      "stop": {"accountSid": ACCOUNT_SID, "callSid": sid}}))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is None or closed.value.rcvd.code == 1000
        # The socket stayed open through the junk: the key after it was heard.
        check = await until(lambda: _stopped(stack, room.id, pid))
        assert check.tones_seen and check.digits == 1 and check.frames == len(frames)

        for who, call_sid in (("p_nobody", sid), (pid, "CA" + "0" * 32)):
            async with connect(url, additional_headers=signed, proxy=None) as ws:
                await ws.send(start(who, call_sid))
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 10)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def _stopped(stack: Stack, room: str, pid: str) -> KeypadCheck | None:
    check = await _check(stack, room, pid)
    return check if check is not None and check.stopped else None


async def test_a_lost_redis_while_raising_is_logged_and_the_stream_keeps_listening(
        stoppable: StoppableRedis, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="handraise.phone.media")
    async with phone_stack(stoppable.url) as stack:
        created = await create_room(stack.redis, "Flaky")
        room = created.room
        await stack.join(created.host_code, "+15550100001", host=True)
        sid, pid = await stack.join(room.access_code, "+15550100002")

        stoppable.stop()
        stack.sim.press(sid, "*1")
        await until(lambda: any("redis unavailable" in r.getMessage() for r in caplog.records))
        stoppable.start()

        mark = stack.sim.events[-1].seq
        stack.sim.press(sid, "*1")  # same socket, still read: this one is raised
        await stack.sim.wait_event("heard", call_sid=sid, kind="announcement", after=mark,
                                   text="Hand raised. You are number 1 in line.", timeout=15)
        assert [h.participant for h in await stack.queue.queue(room.id)] == [pid]
        assert [s["status"] for s in stack.sim.state(sid)["streams"]] == ["in-progress"]


async def test_star_1_in_the_pre_join_window_counts_once(redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Once")
        room = created.room
        await stack.join(created.host_code, "+15550100001", host=True)
        sid = await stack.dial_in(room.access_code, "+15550100002")
        await stack.sim.wait_event("gather-start", call_sid=sid, num_digits=2)
        stack.sim.press(sid, "*1")  # the Gather reads it, and the stream hears it too
        await stack.sim.wait_event("conference", call_sid=sid, event="participant-join")
        pid = stack.sim.state(sid)["conference"]["label"]
        # The stream's *1 was matched with the Gather's and spent, not acted on.
        await until(lambda: _gather_spent(stack, room.id, pid))
        assert [(h.participant, h.source) for h in await stack.queue.queue(room.id)] == [
            (pid, "prompt")]
        assert "Your hand is raised. You are number 1" in stack.said(sid)
        assert not any(t.get("kind") == "announcement" for t in stack.sim.transcript(sid))


async def _gather_spent(stack: Stack, room: str, pid: str) -> bool:
    mark = await last_gather(stack.redis, room, pid)
    return mark is not None and mark[1] == ""


async def test_star_0_in_the_conference_repeats_the_page_address_and_pin_privately(
        redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Forgetful")
        room = created.room
        await stack.join(created.host_code, "+15550100001", host=True)
        sid, pid = await stack.join(room.access_code, "+15550100002")
        pin = await pin_of(stack.redis, room.id, pid)
        assert pin is not None
        assert stack.said(sid).count(spoken_digits(pin)) == 2  # heard twice before joining
        stack.sim.press(sid, "*0")
        await until(lambda: stack.said(sid).count(spoken_digits(pin)) == 4)
        assert "slash join" in stack.said(sid)
        assert stack.sim.state(sid)["conference"]["label"] == pid  # never left the conference
        assert await stack.queue.queue(room.id) == []
        rest = [e for e in stack.sim.events if e.kind == "rest"]
        assert not any(pin in str(e.data) for e in rest)  # the PIN is in no URL Twilio fetches
