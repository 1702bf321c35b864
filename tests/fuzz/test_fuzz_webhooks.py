"""The voice webhooks, fuzzed: any signed form and query string gets valid TwiML (2xx) or a
4xx, never a 5xx, and only the participant the request names is touched."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

import pytest
from fuzzkit import ACCOUNT_SID, PUBLIC, TOKEN, Fuzz, examples, texts
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator
from twimlcheck import check_twiml

from handraise.rooms import create_room
from handraise.store import key

pytestmark = pytest.mark.filterwarnings("ignore:.*(BasicAuth|auth' parameter).*:DeprecationWarning")

ROUTES = ["/voice/incoming", "/voice/prejoin", "/voice/rejoin", "/voice/after-dial",
          "/voice/star-keys", "/voice/prompt", "/voice/prompt-keys", "/voice/wait",
          "/voice/announce", "/voice/conference-events"]
MEDIA_ONLY = {"/voice/wait", "/voice/announce"}
CALL_A, CALL_B = "CA" + "a1" * 16, "CA" + "b2" * 16

# Placeholders replaced by the example's own room and participants.
ROOM, A, CODE, HOST_CODE = "<room>", "<a>", "<code>", "<host code>"

numbers = st.one_of(st.integers(-3, 10**6).map(str), texts, st.just("²"), st.just("9" * 5000))
forms = st.fixed_dictionaries({}, optional={
    "CallSid": st.one_of(st.just(CALL_A), st.just("CA" + "9" * 32), texts),
    "AccountSid": st.just(ACCOUNT_SID),
    "From": st.one_of(st.just("+15550100009"), texts),
    "Digits": st.one_of(st.sampled_from(["*1", "*2", "1", "2", "0", "*0", "", "#", CODE, HOST_CODE]),
                        texts),
    "DialCallStatus": st.one_of(st.sampled_from(["answered", "completed", "failed"]), texts),
    "StatusCallbackEvent": st.one_of(st.sampled_from(
        ["participant-join", "participant-leave", "participant-mute", "participant-unmute",
         "participant-hold", "participant-unhold", "conference-start", "conference-end",
         "participant-speech-start"]), texts),
    "SequenceNumber": numbers,
    "ConferenceSid": st.one_of(st.just("CF" + "c" * 32), texts),
    "ParticipantLabel": st.one_of(st.just(A), st.just("p_new"), texts),
    "Muted": st.one_of(st.sampled_from(["true", "false"]), texts),
    "Hold": st.one_of(st.sampled_from(["true", "false"]), texts),
    "ReasonParticipantLeft": texts,
    "ParticipantCallStatus": st.one_of(st.just("in-progress"), texts),
    "CallStatus": st.one_of(st.just("in-progress"), texts),
})
queries = st.fixed_dictionaries({}, optional={
    "room": st.one_of(st.just(ROOM), st.just("r_nowhere"), texts),
    "pid": st.one_of(st.just(A), st.just("p_new"), texts),
    "attempt": numbers,
    "msg": st.one_of(st.sampled_from(["raised", "lowered", "live", "pin", "not_raised"]), texts),
    "n": numbers,
})


def _fill(values: dict[str, str], subst: dict[str, str]) -> dict[str, str]:
    return {k: subst.get(v, v) for k, v in values.items()}


async def _scenario(fuzz: Fuzz, route: str, method: str, form: dict[str, str],
                    query: dict[str, str], star: bool) -> None:
    redis, q = fuzz.redis, fuzz.queue
    created = await create_room(redis, "Fuzzed call", keypad_mode="star" if star else "stream")
    room = created.room
    a = await q.join(room.id, call_sid=CALL_A, number="+15550100001", participant_id="p_a" + room.id[1:])
    b = await q.join(room.id, call_sid=CALL_B, number="+15550100002", name="Bea")
    await q.raise_hand(room.id, b, source="web")
    b_before = await redis.hgetall(key(room.id, "p", b))
    b_score = await redis.zscore(key(room.id, "hands"), b)
    subst = {ROOM: room.id, A: a, CODE: room.access_code, HOST_CODE: created.host_code}
    form, query = _fill(form, subst), _fill(query, subst)

    full = route + ("?" + urlencode(query) if query else "")
    signed = RequestValidator(TOKEN).compute_signature(PUBLIC + full, form if method == "POST" else {})
    client = fuzz.app.test_client()
    headers = {"X-Twilio-Signature": signed}
    if method == "POST":
        response = await client.post(full, form=form, headers=headers)
    else:
        response = await client.get(route, query_string=query, headers=headers)
    body = await response.get_data(as_text=True)
    assert response.status_code < 500, body
    assert response.status_code != 403, "a signed request was refused"
    if response.status_code == 200:
        assert response.content_type.startswith("text/xml")
        check_twiml(body, media_only=route in MEDIA_ONLY)
    assert await redis.hgetall(key(room.id, "p", b)) == b_before
    assert await redis.zscore(key(room.id, "hands"), b) == b_score


@settings(max_examples=examples(250), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(ROUTES), form=forms, query=queries, star=st.booleans())
@example(route="/voice/announce", form={}, query={"msg": "raised", "n": "²"}, star=False)
@example(route="/voice/prejoin", form={}, query={"room": ROOM, "pid": "p\x1f"}, star=False)
def test_any_signed_webhook_gets_twiml_or_a_4xx_and_touches_no_one_else(
        fuzz: Fuzz, caplog: pytest.LogCaptureFixture, route: str, form: dict[str, str],
        query: dict[str, str], star: bool) -> None:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="handraise"):
        fuzz.run(_scenario(fuzz, route, "POST", form, query, star))
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not failures, failures[0].getMessage()


@settings(max_examples=examples(60), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(forms)
def test_the_voice_url_by_get_takes_any_query_string(fuzz: Fuzz, query: dict[str, Any]) -> None:
    # An operator may set the number's voice URL to GET: Twilio's parameters come as a query.
    fuzz.run(_scenario(fuzz, "/voice/incoming", "GET", {}, query, False))
