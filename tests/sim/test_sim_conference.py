"""Conferences: start/end rules, status callbacks (§3.3) and the REST API via ``twilio``."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from simkit import ACCOUNT_SID, AUTH_TOKEN, TwimlApp, make_sim
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from handraise.sim import Simulator
from handraise.sim.client import emulator_client

EVENTS = "start end join leave mute hold modify announcement"
ALL_EVENTS = {"ConferenceSid", "FriendlyName", "AccountSid", "SequenceNumber", "Timestamp",
              "StatusCallbackEvent"}
PARTICIPANT = {"CallSid", "Muted", "Hold", "Coaching", "EndConferenceOnExit",
               "StartConferenceOnEnter"}


def moderated_app(app: TwimlApp, *, hangup_on_star: bool = False) -> None:
    """From …0000 is the host; everyone else joins muted, waiting for the host.

    The host's statusCallback differs on purpose: only the first joiner's counts (§3.1).
    """

    def voice(p: dict[str, str]) -> str:
        if p["From"].endswith("0000"):
            return ('<Response><Dial><Conference startConferenceOnEnter="true" '
                    'endConferenceOnExit="true" participantLabel="host" '
                    f'statusCallback="/ignored" statusCallbackEvent="{EVENTS}">room-1'
                    "</Conference></Dial></Response>")
        label = "caller-" + p["From"][-4:]
        star = ' hangupOnStar="true" action="/after-dial"' if hangup_on_star else ""
        return (f"<Response><Dial{star}><Conference muted=\"true\" "
                'startConferenceOnEnter="false" waitUrl="/wait" '
                f'participantLabel="{label}" statusCallback="/conf-events" '
                f'statusCallbackEvent="{EVENTS}">room-1</Conference>'
                "</Dial><Say>after the conference</Say></Response>")

    app.routes["/voice"] = voice
    app.routes["/wait"] = lambda p: "<Response><Say>Please wait for the host</Say></Response>"
    app.routes["/conf-events"] = lambda p: "<Response/>"
    app.routes["/announce"] = lambda p: "<Response><Say>Your hand is raised</Say></Response>"
    app.routes["/after-dial"] = lambda p: (
        '<Response><Gather numDigits="1" action="/hand" timeout="5"/></Response>')
    app.routes["/hand"] = lambda p: "<Response><Hangup/></Response>"
    app.routes["/prompt"] = lambda p: "<Response><Say>Prompted</Say></Response>"


def callbacks(app: TwimlApp) -> list[dict[str, str]]:
    return [h.params for h in app.hits_to("/conf-events")]


async def wait_callback(sim: Simulator, event: str, *, call_sid: str | None = None,
                        after: int = 0) -> dict[str, Any]:
    found = await sim.wait_for(
        lambda e: e.kind == "webhook" and e.data["purpose"] == "conference-status-callback"
        and e.data["params"]["StatusCallbackEvent"] == event
        and (call_sid is None or e.data["params"].get("CallSid") == call_sid), after=after)
    params: dict[str, Any] = found.data["params"]
    return params


def client_for(sim: Simulator) -> Client:
    return emulator_client(sim.base_url, ACCOUNT_SID, AUTH_TOKEN)


async def test_moderated_conference_lifecycle(twiml_app: TwimlApp, sim: Simulator) -> None:
    moderated_app(twiml_app)
    caller = sim.place_call("+15550101234")
    await sim.wait_event("conference", call_sid=caller, event="participant-join")
    heard = await sim.wait_event("heard", call_sid=caller, kind="wait")
    assert heard.data["text"] == "Please wait for the host"
    client = client_for(sim)
    # One waiting participant without startConferenceOnEnter: not started yet (§3.1, §4.2).
    [waiting] = await asyncio.to_thread(client.conferences.list, friendly_name="room-1")
    assert waiting.status == "init"
    host = sim.place_call("+15550100000")
    start = await wait_callback(sim, "conference-start")
    assert start.keys() >= ALL_EVENTS
    conf_sid = start["ConferenceSid"]
    assert conf_sid == waiting.sid

    # Mute, unmute and hold through the official client (§4.1), callbacks per §3.3.
    p = await asyncio.to_thread(
        client.conferences(conf_sid).participants(caller).update, muted=False)
    assert p.muted is False and p.call_sid == caller and p.label == "caller-1234"
    unmute = await wait_callback(sim, "participant-unmute", call_sid=caller)
    assert unmute["Muted"] == "false" and unmute.keys() >= PARTICIPANT
    await asyncio.to_thread(client.conferences(conf_sid).participants("caller-1234").update,
                            hold=True)
    hold = await wait_callback(sim, "participant-hold", call_sid=caller)
    assert hold["Hold"] == "true" and hold["ParticipantLabel"] == "caller-1234"

    # Private announcement: only the caller hears it (§4.1 AnnounceUrl).
    await asyncio.to_thread(client.conferences(conf_sid).participants(caller).update,
                            announce_url=twiml_app.url + "/announce")
    end = await wait_callback(sim, "announcement-end")
    assert end["AnnounceUrl"] == twiml_app.url + "/announce" and end["CallSid"] == caller
    assert "Your hand is raised" in [e.get("text") for e in sim.transcript(caller)]
    assert "Your hand is raised" not in [e.get("text") for e in sim.transcript(host)]

    # The host hangs up: endConferenceOnExit ends it for everyone (§3.3 reasons).
    await sim.hang_up(host)
    ended = await wait_callback(sim, "conference-end")
    assert ended["ReasonConferenceEnded"] == "participant-with-end-conference-on-exit-left"
    assert ended["CallSidEndingConference"] == host
    assert ended["ParticipantLabelEndingConference"] == "host"
    await sim.wait_event("call-ended", call_sid=caller)
    assert sim.transcript(caller)[-1]["text"] == "after the conference"

    sent = callbacks(twiml_app)
    assert all(h.valid for h in twiml_app.hits_to("/conf-events"))
    assert [int(c["SequenceNumber"]) for c in sent] == list(range(1, len(sent) + 1))
    names = [c["StatusCallbackEvent"] for c in sent]
    assert names[:3] == ["participant-join", "participant-join", "conference-start"]
    leaves = {c["CallSid"]: c for c in sent if c["StatusCallbackEvent"] == "participant-leave"}
    assert leaves[host]["ReasonParticipantLeft"] == "participant_hung_up"
    assert leaves[host]["ParticipantCallStatus"] == "completed"
    assert leaves[caller]["ReasonParticipantLeft"] == "moderator_ended_conference"
    assert names[-1] == "conference-end"
    # statusCallback comes from the first participant only (§3.1): nothing to /ignored.
    assert twiml_app.hits_to("/ignored") == []


async def test_rest_redirect_removes_participant(twiml_app: TwimlApp, sim: Simulator) -> None:
    moderated_app(twiml_app)
    host = sim.place_call("+15550100000")
    caller = sim.place_call("+15550105555")
    start = await wait_callback(sim, "conference-start")
    conf_sid = start["ConferenceSid"]
    client = client_for(sim)
    call = await asyncio.to_thread(client.calls(caller).update,
                                   url=twiml_app.url + "/prompt", method="POST")
    assert call.sid == caller and call.status == "in-progress"
    leave = await wait_callback(sim, "participant-leave", call_sid=caller)
    assert leave["ReasonParticipantLeft"] == "participant_updated_via_api"
    await sim.wait_event("heard", call_sid=caller, text="Prompted")
    listed = await asyncio.to_thread(client.conferences(conf_sid).participants.list)
    assert [p.call_sid for p in listed] == [host]
    with pytest.raises(TwilioRestException) as info:
        await asyncio.to_thread(client.conferences(conf_sid).participants(caller).fetch)
    assert info.value.code == 20404 and info.value.status == 404


async def test_conferences_list_and_end_via_api(twiml_app: TwimlApp, sim: Simulator) -> None:
    moderated_app(twiml_app)
    sim.place_call("+15550100000")
    caller = sim.place_call("+15550106666")
    await wait_callback(sim, "conference-start")
    client = client_for(sim)
    [conf] = await asyncio.to_thread(client.conferences.list, friendly_name="room-1",
                                     status="in-progress")
    assert conf.friendly_name == "room-1" and conf.status == "in-progress"
    assert conf.sid.startswith("CF") and len(conf.sid) == 34
    assert await asyncio.to_thread(client.conferences.list, friendly_name="other") == []
    done = await asyncio.to_thread(client.conferences(conf.sid).update, status="completed")
    assert done.status == "completed"
    ended = await wait_callback(sim, "conference-end")
    assert ended["ReasonConferenceEnded"] == "conference-ended-via-api"
    leave = await wait_callback(sim, "participant-leave", call_sid=caller)
    assert leave["ReasonParticipantLeft"] == "conference_ended_via_api"


async def test_hangup_on_star_posts_dial_action(twiml_app: TwimlApp, sim: Simulator) -> None:
    moderated_app(twiml_app, hangup_on_star=True)
    sim.place_call("+15550100000")
    caller = sim.place_call("+15550107777")
    await wait_callback(sim, "conference-start")
    sim.press(caller, "*")
    await sim.wait_event("gather-start", call_sid=caller)
    sim.press(caller, "1")
    await sim.wait_event("call-ended", call_sid=caller)
    [action] = twiml_app.hits_to("/after-dial")
    assert action.params["DialCallStatus"] == "answered"
    assert "DialCallSid" not in action.params and "DialCallDuration" not in action.params
    assert twiml_app.hits_to("/hand")[0].params["Digits"] == "1"


async def test_duplicate_label_is_16025_and_next_verb_runs(
        twiml_app: TwimlApp, sim: Simulator) -> None:
    twiml_app.routes["/voice"] = lambda p: (
        '<Response><Dial><Conference participantLabel="same">r</Conference></Dial>'
        "<Say>not added</Say></Response>")
    first = sim.place_call("+15550101111")
    await sim.wait_event("conference", call_sid=first, event="participant-join")
    second = sim.place_call("+15550102222")
    error = await sim.wait_event("error", call_sid=second)
    assert error.data["code"] == 16025
    await sim.wait_event("heard", call_sid=second, text="not added")


async def test_full_conference_is_16020(twiml_app: TwimlApp, sim: Simulator) -> None:
    twiml_app.routes["/voice"] = lambda p: (
        '<Response><Dial><Conference maxParticipants="1">r</Conference></Dial></Response>')
    first = sim.place_call()
    await sim.wait_event("conference", call_sid=first, event="participant-join")
    second = sim.place_call()
    error = await sim.wait_event("error", call_sid=second)
    assert error.data["code"] == 16020


async def test_time_limit_ends_dial(twiml_app: TwimlApp) -> None:
    twiml_app.routes["/voice"] = lambda p: (
        '<Response><Dial timeLimit="100" action="/done"><Conference>r</Conference></Dial>'
        "</Response>")
    twiml_app.routes["/done"] = lambda p: "<Response/>"
    async with make_sim(twiml_app, wait_time_scale=0.001) as sim:
        sid = sim.place_call()
        await sim.wait_event("call-ended", call_sid=sid)
        assert twiml_app.hits_to("/done")[0].params["DialCallStatus"] == "completed"


async def test_rest_auth_and_error_shape(sim: Simulator) -> None:
    url = f"{sim.base_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/CA{'0' * 32}.json"
    async with httpx.AsyncClient(trust_env=False) as http:
        denied = await http.get(url, auth=(ACCOUNT_SID, "wrong"))
        missing = await http.get(url, auth=(ACCOUNT_SID, AUTH_TOKEN))
    assert denied.status_code == 401 and denied.json()["code"] == 20003
    assert "detail" in denied.json()
    body = missing.json()
    assert missing.status_code == 404
    assert body == {"code": 20404, "message": body["message"],
                    "more_info": "https://www.twilio.com/docs/errors/20404", "status": 404}


async def test_announce_to_all_speaker_events_and_inline_twiml(
        twiml_app: TwimlApp, sim: Simulator) -> None:
    twiml_app.routes["/voice"] = lambda p: (
        '<Response><Dial><Conference statusCallback="/conf-events" '
        'statusCallbackEvent="start speaker announcement">talk</Conference></Dial></Response>')
    twiml_app.routes["/conf-events"] = lambda p: ""
    twiml_app.routes["/to-all"] = lambda p: "<Response><Say>Five minutes left</Say></Response>"
    first, second = sim.place_call(), sim.place_call()
    start = await wait_callback(sim, "conference-start")
    client = client_for(sim)
    await asyncio.to_thread(client.conferences(start["ConferenceSid"]).update,
                            announce_url=twiml_app.url + "/to-all")
    done = await wait_callback(sim, "announcement-end")
    assert "CallSid" not in done  # a conference announcement names no participant
    for sid in (first, second):
        assert "Five minutes left" in [e.get("text") for e in sim.transcript(sid)]
    sim.speak(first, 50)
    talk = await wait_callback(sim, "participant-speech-start", call_sid=first)
    assert talk["Muted"] == "false"
    await wait_callback(sim, "participant-speech-stop", call_sid=first)
    call = await asyncio.to_thread(client.calls(second).update,
                                   twiml="<Response><Say>Inline</Say></Response>")
    assert call.sid == second
    await sim.wait_event("call-ended", call_sid=second)
    assert sim.transcript(second)[-1]["text"] == "Inline"
    assert [h.params["StatusCallbackEvent"] for h in twiml_app.hits_to("/conf-events")] == [
        "conference-start", "announcement-end", "participant-speech-start",
        "participant-speech-stop"]


async def test_kick_by_label_and_fetch(twiml_app: TwimlApp, sim: Simulator) -> None:
    moderated_app(twiml_app)
    sim.place_call("+15550100000")
    caller = sim.place_call("+15550108888")
    start = await wait_callback(sim, "conference-start")
    client = client_for(sim)
    conf = await asyncio.to_thread(client.conferences(start["ConferenceSid"]).fetch)
    assert conf.status == "in-progress" and conf.friendly_name == "room-1"
    fetched = await asyncio.to_thread(conf.participants("caller-8888").fetch)
    assert fetched.call_sid == caller and fetched.muted is True and fetched.status == "connected"
    assert await asyncio.to_thread(conf.participants("caller-8888").delete) is True
    leave = await wait_callback(sim, "participant-leave", call_sid=caller)
    assert leave["ParticipantCallStatus"] == "in-progress"
    # The kicked call goes on with the verb after <Dial>.
    await sim.wait_event("heard", call_sid=caller, text="after the conference")
    still = await asyncio.to_thread(conf.fetch)
    assert still.status == "in-progress"


@pytest.mark.parametrize(("attrs", "code"), [
    ('participantLabel="CA0123456789abcdef0123456789abcdef"', 16023),
    ('participantLabel="a/b"', 16023),
    ('coach="CA00000000000000000000000000000000"', 13240),
])
async def test_bad_conference_attributes_are_reported(
        twiml_app: TwimlApp, sim: Simulator, attrs: str, code: int) -> None:
    twiml_app.routes["/voice"] = lambda p: (
        f"<Response><Dial><Conference {attrs}>r</Conference></Dial>"
        "<Say>next verb</Say></Response>")
    sid = sim.place_call()
    error = await sim.wait_event("error", call_sid=sid)
    assert error.data["code"] == code
    await sim.wait_event("heard", call_sid=sid, text="next verb")
    assert sim.engine.active_conference("r") is None
