"""The call engine: signed webhooks, TwiML verbs, Gather, Redirect and TwiML errors."""

from __future__ import annotations

import pytest
from simkit import ACCOUNT_SID, TwimlApp

from handraise.sim import Simulator, TwimlError
from handraise.sim.twiml import parse_twiml

STANDARD = {"CallSid", "AccountSid", "From", "To", "CallStatus", "ApiVersion", "Direction",
            "Caller", "Called"}


def test_conference_outside_dial_is_a_schema_error() -> None:
    with pytest.raises(TwimlError) as info:
        parse_twiml("<Response><Conference>room</Conference></Response>")
    assert info.value.code == 12200


def test_gather_with_a_dial_child_is_error_13320() -> None:
    with pytest.raises(TwimlError) as info:
        parse_twiml("<Response><Gather><Dial><Conference>r</Conference></Dial></Gather>"
                    "</Response>")
    assert info.value.code == 13320


def test_bad_finish_on_key_is_only_warning_13310() -> None:
    verbs, warnings = parse_twiml('<Response><Gather finishOnKey="xy"/></Response>')
    assert [w.code for w in warnings] == [13310]
    assert verbs[0].attrs["finishOnKey"] == "#"


def test_malformed_xml_is_12100() -> None:
    with pytest.raises(TwimlError) as info:
        parse_twiml("<Response><Say>unclosed</Response>")
    assert info.value.code == 12100


async def test_voice_webhook_is_signed_and_carries_standard_params(
        twiml_app: TwimlApp, sim: Simulator) -> None:
    twiml_app.routes["/voice"] = lambda p: "<Response><Say>Hello there</Say></Response>"
    sid = sim.place_call("+15550100001", "+15550109999")
    await sim.wait_event("call-ended", call_sid=sid)
    [hit] = twiml_app.hits_to("/voice")
    assert hit.valid, "X-Twilio-Signature must validate with RequestValidator"
    assert hit.params.keys() >= STANDARD
    assert hit.params["CallSid"] == sid and hit.params["AccountSid"] == ACCOUNT_SID
    assert hit.params["CallStatus"] == "ringing" and hit.params["Direction"] == "inbound"
    assert hit.params["From"] == "+15550100001" and hit.params["ApiVersion"] == "2010-04-01"
    heard = sim.transcript(sid)
    assert [(e["kind"], e.get("text")) for e in heard] == [("say", "Hello there")]
    assert sim.state(sid)["status"] == "completed"


async def test_star_one_reaches_the_gather_action(twiml_app: TwimlApp, sim: Simulator) -> None:
    twiml_app.routes["/voice"] = lambda p: (
        '<Response><Gather numDigits="2" finishOnKey="" action="/hand" timeout="10">'
        "<Say>Press star 1</Say></Gather><Say>No input</Say></Response>")
    twiml_app.routes["/hand"] = lambda p: f"<Response><Say>Got {p['Digits']}</Say></Response>"
    sid = sim.place_call()
    await sim.wait_event("gather-start", call_sid=sid)
    sim.press(sid, "*1")
    await sim.wait_event("call-ended", call_sid=sid)
    [hit] = twiml_app.hits_to("/hand")
    assert hit.valid and hit.method == "POST"
    assert hit.params["Digits"] == "*1"
    assert hit.params["CallStatus"] == "in-progress"
    assert [e["text"] for e in sim.transcript(sid)] == ["Press star 1", "Got *1"]


async def test_finish_on_key_is_not_part_of_digits(twiml_app: TwimlApp, sim: Simulator) -> None:
    twiml_app.routes["/voice"] = lambda p: (
        '<Response><Gather action="/pin" timeout="10"/></Response>')
    twiml_app.routes["/pin"] = lambda p: "<Response><Hangup/></Response>"
    sid = sim.place_call()
    await sim.wait_event("gather-start", call_sid=sid)
    sim.press(sid, "123#")
    await sim.wait_event("call-ended", call_sid=sid)
    assert twiml_app.hits_to("/pin")[0].params["Digits"] == "123"


async def test_gather_timeout_falls_through_without_request(twiml_app: TwimlApp) -> None:
    from conftest import make_sim

    twiml_app.routes["/voice"] = lambda p: (
        '<Response><Gather action="/never" timeout="5"><Say>Say something</Say></Gather>'
        "<Say>Fell through</Say></Response>")
    async with make_sim(twiml_app, wait_time_scale=0.01) as sim:
        sid = sim.place_call()
        await sim.wait_event("call-ended", call_sid=sid)
        assert twiml_app.hits_to("/never") == []
        assert [e["text"] for e in sim.transcript(sid)] == ["Say something", "Fell through"]


async def test_action_on_empty_result_posts_empty_digits(twiml_app: TwimlApp) -> None:
    from conftest import make_sim

    twiml_app.routes["/voice"] = lambda p: (
        '<Response><Gather action="/empty" timeout="1" actionOnEmptyResult="true"/>'
        "</Response>")
    twiml_app.routes["/empty"] = lambda p: "<Response/>"
    async with make_sim(twiml_app, wait_time_scale=0.01) as sim:
        sid = sim.place_call()
        await sim.wait_event("call-ended", call_sid=sid)
        assert twiml_app.hits_to("/empty")[0].params["Digits"] == ""


async def test_redirect_get_signs_the_query_string(twiml_app: TwimlApp, sim: Simulator) -> None:
    twiml_app.routes["/voice"] = lambda p: (
        '<Response><Redirect method="GET">/next?step=2</Redirect></Response>')
    twiml_app.routes["/next"] = lambda p: f"<Response><Say>step {p['step']}</Say></Response>"
    sid = sim.place_call()
    await sim.wait_event("call-ended", call_sid=sid)
    [hit] = twiml_app.hits_to("/next")
    assert hit.method == "GET" and hit.valid
    assert "CallSid=" in hit.url and "step=2" in hit.url
    assert sim.transcript(sid)[0]["text"] == "step 2"


async def test_invalid_twiml_ends_the_call_with_its_error(
        twiml_app: TwimlApp, sim: Simulator) -> None:
    twiml_app.routes["/voice"] = lambda p: (
        "<Response><Say>before</Say><Conference>room</Conference></Response>")
    sid = sim.place_call()
    event = await sim.wait_event("error", call_sid=sid)
    assert event.data["code"] == 12200
    await sim.wait_event("call-ended", call_sid=sid)
    state = sim.state(sid)
    assert state["status"] == "completed"
    # Twilio validates the whole document first: "before" is never spoken.
    assert [e["text"] for e in state["transcript"]] == [
        "We are sorry, an application error has occurred. Goodbye."]


async def test_http_error_from_app_is_11200(twiml_app: TwimlApp, sim: Simulator) -> None:
    sid = sim.place_call(voice_url=twiml_app.url + "/missing")
    event = await sim.wait_event("error", call_sid=sid)
    assert event.data["code"] == 11200


async def test_play_digits_and_reject(twiml_app: TwimlApp, sim: Simulator) -> None:
    twiml_app.routes["/voice"] = lambda p: (
        '<Response><Play digits="1w2"/><Reject reason="busy"/></Response>')
    sid = sim.place_call()
    await sim.wait_event("call-ended", call_sid=sid)
    assert sim.transcript(sid)[0]["digits"] == "1w2"
    assert sim.state(sid)["status"] == "busy"


async def test_webhooks_without_keep_alive_each_get_their_answer(twiml_app: TwimlApp) -> None:
    """``webhook_keepalive=False`` (a TCP balancer spreads every webhook): one connection
    each, still signed and answered."""
    from conftest import make_sim

    twiml_app.routes["/voice"] = lambda p: '<Response><Redirect>/next</Redirect></Response>'
    twiml_app.routes["/next"] = lambda p: "<Response><Say>Second</Say></Response>"
    async with make_sim(twiml_app, webhook_keepalive=False) as sim:
        sid = sim.place_call()
        await sim.wait_event("call-ended", call_sid=sid)
        assert [h.valid for h in twiml_app.hits_to("/voice") + twiml_app.hits_to("/next")] == [
            True, True]
        assert [e["text"] for e in sim.transcript(sid)] == ["Second"]
        assert [e.data["status"] for e in sim.events if e.kind == "webhook"] == [200, 200]
