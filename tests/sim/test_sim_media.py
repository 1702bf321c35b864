"""Media Streams (§1): message sequence, 20 ms mu-law frames, keypad tones, REST streams."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest
from simkit import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    TwimlApp,
    detect_digits,
    make_sim,
    media_of,
    stream_audio,
    until,
)
from twilio.base.exceptions import TwilioRestException

from handraise.sim import Simulator
from handraise.sim.client import emulator_client

STREAM_TWIML = (
    '<Response><Start><Stream name="keys" url="{url}/ws/keys">'
    '<Parameter name="room" value="r1"/><Parameter name="participant" value="p7"/>'
    "</Stream></Start>{rest}</Response>")


async def test_ten_second_stream_has_500_frames_with_the_pressed_digits(
        twiml_app: TwimlApp) -> None:
    twiml_app.routes["/voice"] = lambda p: STREAM_TWIML.format(
        url=twiml_app.url.replace("http", "ws"), rest='<Pause length="10"/>')
    # 5x faster than real time on both clocks, so 10 s of call take 2 s of test.
    async with make_sim(twiml_app, media_time_scale=0.2, stream_speed=5.0) as sim:
        sid = sim.place_call()
        await sim.wait_event("stream-started", call_sid=sid)
        await until(lambda: len(twiml_app.sockets) == 1 and len(
            media_of(twiml_app.sockets[0])) >= 50)
        sim.press(sid, "*1")
        await until(lambda: len(media_of(twiml_app.sockets[0])) >= 250)
        sim.press(sid, "#")
        await sim.wait_event("call-ended", call_sid=sid, timeout=20)
        await until(lambda: twiml_app.sockets[0].closed)
    sock = twiml_app.sockets[0]
    assert sock.valid, "the upgrade must be signed over the ws:// URL (§1.6)"
    events = [m["event"] for m in sock.messages]
    assert events[:2] == ["connected", "start"] and events[-1] == "stop"
    media = media_of(sock)
    # 10 s of 20 ms frames. The count follows the wall clock (x5), so a loaded machine may
    # add or drop a few; the timestamps below are exact.
    assert 480 <= len(media) <= 520
    assert [m["media"]["chunk"] for m in media] == [str(i) for i in range(1, len(media) + 1)]
    assert [m["media"]["timestamp"] for m in media] == [str(20 * i) for i in range(len(media))]
    seqs = [m["sequenceNumber"] for m in sock.messages[1:]]
    assert seqs == [str(i) for i in range(1, len(seqs) + 1)]
    assert all(len(base64.b64decode(m["media"]["payload"])) == 160 for m in media)
    assert detect_digits(stream_audio(sock)) == "*1#"


async def test_stream_messages_match_the_protocol(twiml_app: TwimlApp, sim: Simulator) -> None:
    twiml_app.routes["/voice"] = lambda p: STREAM_TWIML.format(
        url=twiml_app.url.replace("http", "ws"),
        rest='<Gather numDigits="2" finishOnKey="" action="/hand" timeout="30"/>')
    twiml_app.routes["/hand"] = lambda p: "<Response><Hangup/></Response>"
    sid = sim.place_call()
    await sim.wait_event("gather-start", call_sid=sid)
    await until(lambda: len(twiml_app.sockets) == 1 and len(
        media_of(twiml_app.sockets[0])) >= 3)
    sim.press(sid, "*1")
    await sim.wait_event("call-ended", call_sid=sid)
    await until(lambda: twiml_app.sockets[0].closed)
    sock = twiml_app.sockets[0]
    connected, start = sock.messages[:2]
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert start["sequenceNumber"] == "1" and start["streamSid"].startswith("MZ")
    assert start["start"] == {
        "accountSid": ACCOUNT_SID, "streamSid": start["streamSid"], "callSid": sid,
        "tracks": ["inbound"], "customParameters": {"room": "r1", "participant": "p7"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}
    media = media_of(sock)[0]
    assert media["media"]["track"] == "inbound" and media["streamSid"] == start["streamSid"]
    assert isinstance(media["sequenceNumber"], str) and isinstance(media["media"]["chunk"], str)
    stop = sock.messages[-1]
    assert stop["event"] == "stop" and stop["stop"] == {"accountSid": ACCOUNT_SID,
                                                        "callSid": sid}
    assert "dtmf" not in {m["event"] for m in sock.messages}  # unidirectional (§1.1)
    assert twiml_app.hits_to("/hand")[0].params["Digits"] == "*1"


async def test_keypad_tones_can_be_left_out_of_the_stream(twiml_app: TwimlApp) -> None:
    twiml_app.routes["/voice"] = lambda p: STREAM_TWIML.format(
        url=twiml_app.url.replace("http", "ws"),
        rest='<Gather numDigits="2" finishOnKey="" action="/hand" timeout="30"/>')
    twiml_app.routes["/hand"] = lambda p: '<Response><Pause length="1"/></Response>'
    async with make_sim(twiml_app, keypad_tones_in_stream=False, media_time_scale=0.5) as sim:
        sid = sim.place_call()
        await sim.wait_event("gather-start", call_sid=sid)
        sim.press(sid, "*1")
        await sim.wait_event("call-ended", call_sid=sid)
        await until(lambda: twiml_app.sockets[0].closed)
    assert twiml_app.hits_to("/hand")[0].params["Digits"] == "*1"
    assert len(media_of(twiml_app.sockets[0])) > 10
    assert detect_digits(stream_audio(twiml_app.sockets[0])) == ""


async def test_stop_stream_verb_and_rest_streams(twiml_app: TwimlApp, sim: Simulator) -> None:
    ws = twiml_app.url.replace("http", "ws")
    twiml_app.routes["/voice"] = lambda p: STREAM_TWIML.format(
        url=ws, rest='<Gather action="/next" timeout="30"/>')
    twiml_app.routes["/next"] = lambda p: (
        '<Response><Stop><Stream name="keys"/></Stop><Gather timeout="30"/></Response>')
    sid = sim.place_call()
    await sim.wait_event("gather-start", call_sid=sid)
    client = emulator_client(sim.base_url, ACCOUNT_SID, AUTH_TOKEN)
    stream = await asyncio.to_thread(client.calls(sid).streams.create, url=f"{ws}/ws/rest",
                                     name="second", parameter1_name="via",
                                     parameter1_value="rest")
    assert stream.sid.startswith("MZ") and stream.name == "second"
    assert stream.status == "in-progress"
    await sim.wait_event("stream-started", call_sid=sid, name="second")
    sim.press(sid, "5#")  # leaves the first Gather; /next stops the "keys" stream
    await sim.wait_event("stream-stopped", call_sid=sid, name="keys")
    stopped = await asyncio.to_thread(client.calls(sid).streams("second").update,
                                      status="stopped")
    assert stopped.status == "stopped"
    await until(lambda: all(s.closed for s in twiml_app.sockets) and len(twiml_app.sockets) == 2)
    by_path = {s.path: s for s in twiml_app.sockets}
    assert by_path["/ws/rest"].messages[1]["start"]["customParameters"] == {"via": "rest"}
    assert by_path["/ws/keys"].messages[-1]["event"] == "stop"
    assert sim.state(sid)["status"] == "in-progress"  # stopping streams keeps the call
    await sim.hang_up(sid)


async def test_connect_stream_sends_dtmf_and_blocks(twiml_app: TwimlApp, sim: Simulator) -> None:
    ws = twiml_app.url.replace("http", "ws")
    twiml_app.routes["/voice"] = lambda p: (
        f'<Response><Connect><Stream url="{ws}/ws/bidi"/></Connect>'
        "<Say>after connect</Say></Response>")
    twiml_app.close_ws_after["/ws/bidi"] = 12  # the app hangs up the socket after 12 messages
    sid = sim.place_call()
    await sim.wait_event("stream-started", call_sid=sid)
    sim.press(sid, "42")
    await sim.wait_event("heard", call_sid=sid, text="after connect")
    sock = twiml_app.sockets[0]
    dtmf = [m for m in sock.messages if m["event"] == "dtmf"]
    assert [m["dtmf"] for m in dtmf] == [{"track": "inbound_track", "digit": "4"},
                                         {"track": "inbound_track", "digit": "2"}]
    seqs = [m["sequenceNumber"] for m in sock.messages[1:]]
    assert seqs == [str(i) for i in range(1, len(seqs) + 1)]  # dtmf shares the numbering


async def test_speech_is_audible_in_the_stream(twiml_app: TwimlApp, sim: Simulator) -> None:
    twiml_app.routes["/voice"] = lambda p: STREAM_TWIML.format(
        url=twiml_app.url.replace("http", "ws"), rest='<Gather timeout="30"/>')
    sid = sim.place_call()
    await sim.wait_event("stream-started", call_sid=sid)
    await until(lambda: len(twiml_app.sockets) == 1 and len(
        media_of(twiml_app.sockets[0])) >= 5)
    quiet = stream_audio(twiml_app.sockets[0])
    sim.speak(sid, 300)
    await until(lambda: len(media_of(twiml_app.sockets[0])) >= 30)
    await sim.hang_up(sid)
    loud = stream_audio(twiml_app.sockets[0])
    assert np.sqrt(np.mean(quiet**2)) < 0.01 < np.sqrt(np.mean(loud**2))


async def test_a_rest_stream_on_a_call_that_has_ended_is_refused(
        twiml_app: TwimlApp, sim: Simulator) -> None:
    twiml_app.routes["/voice"] = lambda p: '<Response><Gather timeout="30"/></Response>'
    sid = sim.place_call()
    await sim.wait_event("gather-start", call_sid=sid)
    await sim.hang_up(sid)
    client = emulator_client(sim.base_url, ACCOUNT_SID, AUTH_TOKEN)
    ws = twiml_app.url.replace("http", "ws")
    with pytest.raises(TwilioRestException) as refused:
        await asyncio.to_thread(client.calls(sid).streams.create, url=f"{ws}/ws/late")
    assert (refused.value.status, refused.value.code) == (400, 21220)
    assert twiml_app.sockets == []  # nothing was streamed for it
