"""The companion page and the JSON API, fuzzed: PINs, names, topics and ids get a 2xx, 3xx
or 4xx, never a 5xx, and only the session's (or the named) participant is ever touched."""

from __future__ import annotations

import itertools
import json
import logging
import re
from typing import Any
from urllib.parse import quote

import pytest
from fuzzkit import Fuzz, examples, json_values, texts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handraise.pins import issue_pin
from handraise.rooms import create_room
from handraise.store import key
from handraise.tokens import create_token

pytestmark = pytest.mark.filterwarnings("ignore:.*(BasicAuth|auth' parameter).*:DeprecationWarning")

SLOW = settings(max_examples=examples(60), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
_clients = itertools.count(1)
A, B, PIN = "<a>", "<b>", "<pin>"


async def _meeting(fuzz: Fuzz) -> tuple[str, str, str, dict[str, str], float | None]:
    """A room with caller a (holding a PIN) and caller b (hand up, topic set)."""
    redis, q = fuzz.redis, fuzz.queue
    # Each example is a new minute for the PIN limiter: its ceilings would soon answer
    # every example with a 429 and hide the rest.
    limits = [k async for k in redis.scan_iter(match="hr:limit:*")]
    if limits:
        await redis.delete(*limits)
    room = (await create_room(redis, "Fuzzed page")).room.id
    a = await q.join(room, call_sid="CA" + "a1" * 16, number="+15550100001")
    b = await q.join(room, call_sid="CA" + "b2" * 16, number="+15550100002", name="Bea")
    await q.raise_hand(room, b, source="keypad")
    await q.set_topic(room, b, "Bea's point")
    pin = await issue_pin(redis, room, a)
    return room, a, pin, await redis.hgetall(key(room, "p", b)), await redis.zscore(key(room, "hands"), b)


async def _untouched(fuzz: Fuzz, room: str, b: str, record: dict[str, str], score: float | None) -> None:
    assert await fuzz.redis.hgetall(key(room, "p", b)) == record
    assert await fuzz.redis.zscore(key(room, "hands"), b) == score


pins = st.one_of(st.just(PIN), st.builds(lambda s: s.replace("#", PIN), st.sampled_from(
    [" # ", "#-", "# #", "\t#\n"])), texts, st.text(alphabet="0123456789 -.", max_size=20))
actions = st.one_of(st.sampled_from(["raise", "lower", "topic", "name", "unlink", "raise"]), texts)
action_forms = st.fixed_dictionaries({}, optional={
    "csrf_token": st.one_of(st.just("<csrf>"), texts),
    "participant": st.one_of(st.just(A), st.just(B), texts),
    "topic": texts,
    "name": texts,
})


def _status_ok(status: int, what: str) -> None:
    assert status < 500, f"{what}: {status}"


async def _page(fuzz: Fuzz, pin_typed: str, steps: list[tuple[str, dict[str, str], bool]]) -> None:
    room, a, pin, b_record, b_score = await _meeting(fuzz)
    b = next(p.id for p in (await fuzz.queue.snapshot(room)).participants if p.id != a)
    client = fuzz.app.test_client()
    me = {"client": (f"10.77.{next(_clients) % 250}.{next(_clients) % 250}", 4000)}
    linked = await client.post("/join", form={"pin": pin_typed.replace(PIN, pin)}, scope_base=me)
    _status_ok(linked.status_code, "POST /join")
    if re.sub(r"[\s\-.]", "", pin_typed.replace(PIN, pin)) == pin:
        assert linked.status_code == 303, linked.status_code  # the right PIN links
    page = await client.get("/me")
    _status_ok(page.status_code, "GET /me")
    found = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', await page.get_data(as_text=True))
    csrf = found.group(1) if found else ""
    for action, form, htmx in steps:
        form = {k: {A: a, B: b, "<csrf>": csrf}.get(v, v) for k, v in form.items()}
        response = await client.post("/me/" + quote(action, safe=""), form=form,
                                     headers={"HX-Request": "true"} if htmx else {})
        _status_ok(response.status_code, f"POST /me/{action}")
    await _untouched(fuzz, room, b, b_record, b_score)
    source = await fuzz.redis.hget(key(room, "p", a), "hand_source")
    assert source in (None, "web")  # a's hand moved from this page only


@SLOW
@given(pins, st.lists(st.tuples(actions, action_forms, st.booleans()), max_size=6))
def test_the_companion_page_answers_every_pin_and_form_and_moves_only_its_own_hand(
        fuzz: Fuzz, caplog: pytest.LogCaptureFixture, pin_typed: str,
        steps: list[tuple[str, dict[str, str], bool]]) -> None:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="handraise"):
        fuzz.run(_page(fuzz, pin_typed, steps))
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not failures, failures[0].getMessage()


ids = st.one_of(st.just(A), st.just("p_nobody"), st.text(alphabet="abc_-0Z.%/", max_size=70), texts)
api_calls = st.one_of(
    st.tuples(st.just("PUT"), ids, st.none()),
    st.tuples(st.just("DELETE"), ids, st.none()),
    st.tuples(st.just("RENAME"), ids, st.one_of(st.fixed_dictionaries({"name": texts}), json_values)),
    st.tuples(st.just("ROOM"), st.just(""), st.one_of(st.fixed_dictionaries({"name": texts}), json_values)),
)


async def _api(fuzz: Fuzz, calls: list[tuple[str, str, Any]]) -> None:
    room, a, _pin, b_record, b_score = await _meeting(fuzz)
    b = next(p.id for p in (await fuzz.queue.snapshot(room)).participants if p.id != a)
    secret, _ = await create_token(fuzz.redis, "fuzz", rate_per_min=100_000)
    client = fuzz.app.test_client()
    auth = {"Authorization": f"Bearer {secret}"}
    for verb, pid, body in calls:
        path = f"/api/v1/rooms/{room}/participants/{quote(pid.replace(A, a), safe='')}"
        if verb == "PUT":
            response = await client.put(path + "/hand", headers=auth)
        elif verb == "DELETE":
            response = await client.delete(path + "/hand", headers=auth)
        elif verb == "RENAME":
            response = await client.post(path + "/rename", data=json.dumps(body),
                                         headers={**auth, "Content-Type": "application/json"})
        else:
            response = await client.post("/api/v1/rooms", data=json.dumps(body),
                                         headers={**auth, "Content-Type": "application/json"})
        _status_ok(response.status_code, f"{verb} {path} {body!r:.80}")
        if response.status_code >= 400:
            problem = await response.get_json()
            assert isinstance(problem, dict) and (problem.get("detail") or problem.get("title")), problem
    await _untouched(fuzz, room, b, b_record, b_score)


@SLOW
@given(st.lists(api_calls, min_size=1, max_size=6))
def test_the_api_answers_every_id_and_body_and_touches_only_who_is_named(
        fuzz: Fuzz, caplog: pytest.LogCaptureFixture, calls: list[tuple[str, str, Any]]) -> None:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="handraise"):
        fuzz.run(_api(fuzz, calls))
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not failures, failures[0].getMessage()


def test_the_page_scenario_can_reach_the_callers_own_hand(fuzz: Fuzz) -> None:
    # Else the property above would hold vacuously (a page that never links moves nothing).
    async def run() -> None:
        room, a, pin, _, _ = await _meeting(fuzz)
        client = fuzz.app.test_client()
        assert (await client.post("/join", form={"pin": pin})).status_code == 303
        page = await (await client.get("/me")).get_data(as_text=True)
        found = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page)
        assert found
        raised = await client.post("/me/raise", form={"csrf_token": found.group(1)})
        assert raised.status_code == 303
        assert await fuzz.redis.hget(key(room, "p", a), "hand_source") == "web"

    fuzz.run(run())
