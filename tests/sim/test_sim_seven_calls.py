"""Done-when test of the emulator: seven calls in one moderated conference.

A tiny TwiML app in the shape of handraise (access code, stream fork, early-hand window,
muted participants, host prompt by REST redirect) drives every part of the emulator;
everything observed — webhooks, callbacks, stream messages, REST answers — is checked
against TWILIO.md.
"""

from __future__ import annotations

import asyncio
from email.utils import parsedate_to_datetime
from typing import Any

from simkit import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    Socket,
    TwimlApp,
    detect_digits,
    make_sim,
    media_of,
    stream_audio,
    until,
)

from handraise.sim import Simulator
from handraise.sim.client import emulator_client

HOST_CODE, ROOM_CODE = "9999", "1234"
EVENTS = "start end join leave mute hold announcement"
STANDARD = {"CallSid", "AccountSid", "From", "To", "CallStatus", "ApiVersion", "Direction"}
COMMON = {"ConferenceSid", "FriendlyName", "AccountSid", "SequenceNumber", "Timestamp",
          "StatusCallbackEvent"}
PARTICIPANT = {"CallSid", "Muted", "Hold", "Coaching", "EndConferenceOnExit",
               "StartConferenceOnEnter"}
REQUIRED = {
    "participant-leave": PARTICIPANT | {"ReasonParticipantLeft", "ParticipantCallStatus"},
    "conference-end": {"ReasonConferenceEnded", "Reason"},
    "announcement-end": {"AnnounceUrl"},
}


def label_of(params: dict[str, str]) -> str:
    return "p" + params["From"][-1]


def install_app(app: TwimlApp) -> dict[str, str]:
    """The moderated-conference app; returns the early hands it recorded (label -> digits)."""
    ws = app.url.replace("http://", "ws://")
    early: dict[str, str] = {}

    def dial(label: str, host: bool = False) -> str:
        role = ('startConferenceOnEnter="true" endConferenceOnExit="true"' if host else
                'muted="true" startConferenceOnEnter="false" beep="false"')
        return (f'<Dial><Conference {role} participantLabel="{label}" '
                f'statusCallback="/events" statusCallbackEvent="{EVENTS}" waitUrl="">'
                "weekly-call</Conference></Dial><Say>The meeting has ended. Goodbye.</Say>")

    def voice(p: dict[str, str]) -> str:
        return ('<Response><Gather numDigits="4" action="/code" timeout="30">'
                "<Say>Enter your access code</Say></Gather><Hangup/></Response>")

    def code(p: dict[str, str]) -> str:
        if p["Digits"] == HOST_CODE:
            return f"<Response><Say>Welcome, host</Say>{dial('host', host=True)}</Response>"
        if p["Digits"] != ROOM_CODE:
            return "<Response><Say>Wrong code</Say><Redirect>/voice</Redirect></Response>"
        label = label_of(p)
        return (f'<Response><Start><Stream url="{ws}/ws/{label}">'
                f'<Parameter name="room" value="weekly"/>'
                f'<Parameter name="participant" value="{label}"/></Stream></Start>'
                '<Gather numDigits="2" finishOnKey="" timeout="3" action="/early-hand">'
                "<Say>Press star 1 now to raise your hand</Say></Gather>"
                "<Redirect>/join</Redirect></Response>")

    def early_hand(p: dict[str, str]) -> str:
        early[label_of(p)] = p["Digits"]
        return "<Response><Redirect>/join</Redirect></Response>"

    app.routes["/voice"] = voice
    app.routes["/code"] = code
    app.routes["/early-hand"] = early_hand
    app.routes["/join"] = lambda p: f"<Response>{dial(label_of(p))}</Response>"
    app.routes["/events"] = lambda p: ""
    app.routes["/announce"] = lambda p: (
        "<Response><Say>Hand raised. You are number 3.</Say></Response>")
    app.routes["/prompt"] = lambda p: (
        '<Response><Gather numDigits="2" finishOnKey="" timeout="30" action="/early-hand">'
        "<Say>The host asks: press star 1 to raise your hand</Say></Gather>"
        "<Redirect>/join</Redirect></Response>")
    return early


async def answer(sim: Simulator, sid: str, code: str, *, after: int = 0,
                 num_digits: int | None = None) -> None:
    """Wait for the call's next Gather (after event ``after``) and press ``code``."""
    match: dict[str, Any] = {} if num_digits is None else {"num_digits": num_digits}
    await sim.wait_event("gather-start", call_sid=sid, after=after, **match)
    sim.press(sid, code)


def check_stream(sock: Socket, call_sid: str) -> None:
    assert sock.valid, f"{sock.path}: unsigned or badly signed upgrade (§1.6)"
    events = [m["event"] for m in sock.messages]
    assert events[:2] == ["connected", "start"] and events[-1] == "stop"
    assert set(events[2:-1]) == {"media"}  # unidirectional: never dtmf (§1.1)
    start = sock.messages[1]["start"]
    assert start["callSid"] == call_sid and start["accountSid"] == ACCOUNT_SID
    assert start["customParameters"]["participant"] == sock.path.rsplit("/", 1)[1]
    seqs = [m["sequenceNumber"] for m in sock.messages[1:]]
    assert seqs == [str(i) for i in range(1, len(seqs) + 1)]
    media = media_of(sock)
    assert [m["media"]["chunk"] for m in media] == [str(i) for i in range(1, len(media) + 1)]
    assert sock.messages[-1]["stop"] == {"accountSid": ACCOUNT_SID, "callSid": call_sid}


def check_callbacks(hits: list[dict[str, str]]) -> None:
    assert [int(h["SequenceNumber"]) for h in hits] == list(range(1, len(hits) + 1))
    for h in hits:
        event = h["StatusCallbackEvent"]
        need = COMMON | REQUIRED.get(event, PARTICIPANT if event.startswith("participant")
                                     else set())
        assert need <= h.keys(), f"{event} lacks {need - h.keys()}"
        assert h["AccountSid"] == ACCOUNT_SID and h["FriendlyName"] == "weekly-call"
        parsedate_to_datetime(h["Timestamp"])  # RFC 2822, e.g. "Thu, 1 Jun 2017 …"
        for flag in ("Muted", "Hold", "Coaching", "EndConferenceOnExit"):
            assert h.get(flag, "false") in ("true", "false")


async def test_seven_calls_in_one_moderated_conference(twiml_app: TwimlApp) -> None:
    early = install_app(twiml_app)
    async with make_sim(twiml_app, wait_time_scale=0.25) as sim:
        client = emulator_client(sim.base_url, ACCOUNT_SID, AUTH_TOKEN)
        host = sim.place_call("+15550100000")
        await answer(sim, host, HOST_CODE)
        await sim.wait_event("conference", call_sid=host, event="participant-join")

        callers: dict[str, str] = {}
        for n in range(1, 7):
            sid = sim.place_call(f"+1555010010{n}")
            callers[f"p{n}"] = sid
            if n == 6:  # p6 types a wrong code first and is sent round again
                await answer(sim, sid, "0000")
                wrong = await sim.wait_event("heard", call_sid=sid, text="Wrong code")
                await answer(sim, sid, ROOM_CODE, after=wrong.seq)
            else:
                await answer(sim, sid, ROOM_CODE)
            if n in (1, 2):  # p1 and p2 raise a hand in the window before joining
                await answer(sim, sid, "*1", num_digits=2)
        for sid in callers.values():
            await sim.wait_event("conference", call_sid=sid, event="participant-join",
                                 timeout=15)
        assert early == {"p1": "*1", "p2": "*1"}
        [conf] = await asyncio.to_thread(client.conferences.list, friendly_name="weekly-call",
                                         status="in-progress")
        listed = await asyncio.to_thread(client.conferences(conf.sid).participants.list)
        assert sorted(p.label for p in listed) == ["host", "p1", "p2", "p3", "p4", "p5", "p6"]
        assert {p.label: p.muted for p in listed} == {
            "host": False, **{f"p{n}": True for n in range(1, 7)}}

        # p3 presses *1 in the conference: tones go into its stream (stream keypad mode);
        # the app tells p3 privately where it stands.
        p3_sock = next(s for s in twiml_app.sockets if s.path == "/ws/p3")
        pressed_at = len(media_of(p3_sock))
        sim.press(callers["p3"], "*1")
        await asyncio.to_thread(client.conferences(conf.sid).participants("p3").update,
                                announce_url=twiml_app.url + "/announce")
        await sim.wait_event("heard", call_sid=callers["p3"], kind="announcement")

        # The host calls on p1: unmute by label.
        p1 = await asyncio.to_thread(client.conferences(conf.sid).participants("p1").update,
                                     muted=False)
        assert p1.muted is False and p1.call_sid == callers["p1"]
        await sim.wait_event("conference", call_sid=callers["p1"], event="participant-unmute")

        # Host prompt: p4 is redirected out of the room, answers *1 and rejoins.
        mark = sim.events[-1].seq
        redirected = await asyncio.to_thread(client.calls(callers["p4"]).update,
                                             url=twiml_app.url + "/prompt", method="POST")
        assert redirected.sid == callers["p4"] and redirected.status == "in-progress"
        await answer(sim, callers["p4"], "*1", after=mark)
        await sim.wait_event("conference", call_sid=callers["p4"], event="participant-join",
                             after=mark)
        assert early["p4"] == "*1"

        # Let the streams run a little, then the host ends the meeting through the API.
        # (Two keys last at most ~0.6 s; let p3's tones reach the socket before the end.)
        await until(lambda: len(media_of(p3_sock)) >= pressed_at + 40)
        ended = await asyncio.to_thread(client.conferences(conf.sid).update, status="completed")
        assert ended.status == "completed"
        for sid in [host, *callers.values()]:
            await sim.wait_event("call-ended", call_sid=sid, timeout=15)
        await until(lambda: len(twiml_app.sockets) == 6 and all(
            s.closed for s in twiml_app.sockets))
        await until(lambda: any(h.params["StatusCallbackEvent"] == "conference-end"
                                for h in twiml_app.hits_to("/events")))
        rest_events = [e.data for e in sim.events if e.kind == "rest"]
        transcripts = {label: sim.transcript(sid) for label, sid in callers.items()}
        errors = [e.data for e in sim.events if e.kind == "error"]

    # Every webhook is signed and carries the standard parameters (§5, §7).
    voice_hits = [h for h in twiml_app.hits if h.path != "/events"]
    assert voice_hits and all(h.valid for h in twiml_app.hits)
    assert all(h.params.keys() >= STANDARD for h in voice_hits)
    # Conference callbacks: documented parameters, SequenceNumber 1..n (§3.3).
    hits = [h.params for h in twiml_app.hits_to("/events")]
    check_callbacks(hits)
    names = [h["StatusCallbackEvent"] for h in hits]
    assert names.count("conference-start") == 1 and names[-1] == "conference-end"
    assert hits[-1]["ReasonConferenceEnded"] == "conference-ended-via-api"
    p4_leaves = [h for h in hits if h["StatusCallbackEvent"] == "participant-leave"
                 and h["CallSid"] == callers["p4"]]
    assert [h["ReasonParticipantLeft"] for h in p4_leaves] == [
        "participant_updated_via_api", "conference_ended_via_api"]
    announced = [h for h in hits if h["StatusCallbackEvent"] == "announcement-end"]
    assert [h["CallSid"] for h in announced] == [callers["p3"]]
    # Streams: one per participant, surviving Dial and the REST redirect, ended by stop.
    by_label = {s.path.rsplit("/", 1)[1]: s for s in twiml_app.sockets}
    assert sorted(by_label) == ["p1", "p2", "p3", "p4", "p5", "p6"]
    for label, sock in by_label.items():
        check_stream(sock, callers[label])
    assert detect_digits(stream_audio(by_label["p3"])) == "*1"
    assert detect_digits(stream_audio(by_label["p5"])) == ""
    # The p4 stream kept flowing through the redirect: its timestamps have no gap.
    p4_media = media_of(by_label["p4"])
    assert [m["media"]["timestamp"] for m in p4_media] == [
        str(20 * i) for i in range(len(p4_media))]
    # What each caller heard.
    assert "Hand raised. You are number 3." in [e.get("text") for e in transcripts["p3"]]
    assert all("Hand raised. You are number 3." not in [e.get("text") for e in t]
               for label, t in transcripts.items() if label != "p3")
    assert all(t[-1]["text"] == "The meeting has ended. Goodbye." for t in transcripts.values())
    assert all(200 <= r["status"] < 300 for r in rest_events)
    assert errors == []
