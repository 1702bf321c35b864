"""The JSON API over HTTP: auth and scopes, problems, rooms, the queue, hands on behalf,
refusals, events (page and stream), and the webhooks the served app sends."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hookkit import receiver
from quart import Quart
from quart.typing import TestClientProtocol as QuartClient
from webkit import settings, signed_in

from handraise.app import create_app
from handraise.events import read_events
from handraise.hooks import add_hook
from handraise.queue import Queue
from handraise.rooms import create_room, get_room
from handraise.sim import ServedApp
from handraise.store import Redis, client_from_url, free_port
from handraise.tokens import create_token, revoke_token

PROBLEM = "application/problem+json"


@dataclass
class Api:
    app: Quart
    client: QuartClient
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def call(self, method: str, path: str, *, token: str | None = None,
                   **kwargs: Any) -> tuple[int, Any, Any]:
        """(status, JSON body, headers) of one request with the token (or ``token``)."""
        headers = {"Authorization": f"Bearer {token or self.token}", **kwargs.pop("headers", {})}
        response = await self.client.open("/api/v1" + path, method=method, headers=headers, **kwargs)
        return response.status_code, await response.get_json(force=True), response.headers


@contextlib.asynccontextmanager
async def api(redis: Redis, **token_options: Any) -> AsyncIterator[Api]:
    app = create_app(settings(), redis=redis)
    async with app.test_app():
        secret, _ = await create_token(redis, "tests", **token_options)
        yield Api(app, app.test_client(), secret)


def _api_rules(app: Quart) -> list[Any]:
    return [r for r in app.url_map.iter_rules()
            if r.rule.startswith("/api/v1/") and r.endpoint != "openapi"]


def _example(rule: str) -> str:
    return rule.replace("<id:room>", "rnothere").replace("<id:pid>", "pnothere")


async def test_without_a_token_or_session_every_api_route_answers_a_401_problem(redis: Redis) -> None:
    app = create_app(settings(), redis=redis)
    async with app.test_app():
        client = app.test_client()
        rules = _api_rules(app)
        assert len(rules) >= 20
        for rule in rules:
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                response = await client.open(_example(rule.rule), method=method)
                assert response.status_code == 401, (method, rule.rule)
                assert response.content_type == PROBLEM
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
                body = await response.get_json(force=True)
                assert body["status"] == 401 and body["code"] == "unauthenticated"


async def test_the_openapi_document_describes_every_api_route_and_quart_schema_adds_no_pages(
        redis: Redis) -> None:
    app = create_app(settings(), redis=redis)
    async with app.test_app():
        response = await app.test_client().get("/api/v1/openapi.json")
        assert response.status_code == 200
        doc = await response.get_json()
    assert all(path.startswith("/api/v1/") for path in doc["paths"])
    for rule in _api_rules(app):
        path = rule.rule.replace("<id:room>", "{room}").replace("<id:pid>", "{pid}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            operation = doc["paths"][path][method.lower()]
            assert operation["summary"], path
            assert {"401", "429", "503"} <= set(map(str, operation["responses"])), path
    documented = {r.rule for r in app.url_map.iter_rules() if r.endpoint == "openapi"}
    assert documented == {"/api/v1/openapi.json"}
    for page in ("/docs", "/redocs", "/scalar", "/openapi.json", "/api/v1/docs"):
        assert page not in {r.rule for r in app.url_map.iter_rules()}


async def test_a_room_token_sees_and_acts_on_its_room_only(redis: Redis) -> None:
    mine = (await create_room(redis, "Mine")).room.id
    other = (await create_room(redis, "Other")).room.id
    async with api(redis, room=mine) as a:
        status, body, _ = await a.call("GET", "/rooms")
        assert status == 200 and [r["id"] for r in body["rooms"]] == [mine]
        assert (await a.call("GET", f"/rooms/{mine}/queue"))[0] == 200
        for method, path in [("GET", f"/rooms/{other}"), ("GET", f"/rooms/{other}/events"),
                             ("POST", f"/rooms/{other}/lower-all"), ("POST", f"/rooms/{other}/close"),
                             ("GET", "/rooms/rnothere/queue")]:
            status, body, _ = await a.call(method, path)
            assert (status, body["code"]) == (403, "forbidden"), path
        status, body, _ = await a.call("POST", "/rooms", json={"name": "Sneaky"})
        assert status == 403


async def test_a_revoked_unknown_or_malformed_token_gets_401(redis: Redis) -> None:
    async with api(redis) as a:
        assert (await a.call("GET", "/rooms"))[0] == 200
        await revoke_token(redis, "tests")
        status, _, headers = await a.call("GET", "/rooms")
        assert status == 401 and 'error="invalid_token"' in headers["WWW-Authenticate"]
        assert (await a.call("GET", "/rooms", token="hr_" + "A" * 43))[0] == 401
        response = await a.client.get("/api/v1/rooms", headers={"Authorization": "Basic eDp5"})
        assert response.status_code == 401


async def test_a_token_over_its_rate_limit_gets_429_with_retry_after(redis: Redis) -> None:
    async with api(redis, rate_per_min=2) as a:
        assert [(await a.call("GET", "/rooms"))[0] for _ in range(2)] == [200, 200]
        status, body, headers = await a.call("GET", "/rooms")
        assert status == 429 and body["code"] == "rate_limited"
        assert 1 <= int(headers["Retry-After"]) <= 60


async def test_a_signed_in_host_reads_freely_but_writes_only_with_the_csrf_token(redis: Redis) -> None:
    async with signed_in(redis) as host:
        assert (await host.client.get("/api/v1/rooms")).status_code == 200
        refused = await host.client.post("/api/v1/rooms", json={"name": "No token"})
        assert refused.status_code == 403 and (await refused.get_json(force=True))["code"] == "csrf"
        created = await host.client.post("/api/v1/rooms", json={"name": "With token"},
                                         headers=host.headers())
        assert created.status_code == 201
        foreign = await host.client.post("/api/v1/rooms", json={"name": "Forged"},
                                         headers=host.headers(Origin="https://evil.example"))
        assert foreign.status_code == 403


async def test_a_new_room_answers_its_host_code_once(redis: Redis) -> None:
    async with api(redis) as a:
        status, created, headers = await a.call("POST", "/rooms", json={"name": "Standup",
                                                                      "keypad_mode": "star"})
        assert status == 201 and len(created["host_code"]) == 6
        assert headers["Location"] == f"/api/v1/rooms/{created['id']}"
        status, room, _ = await a.call("GET", f"/rooms/{created['id']}")
        assert status == 200 and "host_code" not in room
        assert room["keypad_mode"] == "star" and room["access_code"] == created["access_code"]
        status, closed, _ = await a.call("POST", f"/rooms/{created['id']}/close")
        assert status == 200 and closed["status"] == "closed"
        assert (await a.call("GET", "/rooms"))[1]["rooms"] == []
        assert len((await a.call("GET", "/rooms?all=true"))[1]["rooms"]) == 1


async def test_bad_requests_are_problems_with_the_right_status(redis: Redis) -> None:
    async with api(redis) as a:
        status, body, _ = await a.call("POST", "/rooms", json={"name": "x", "keypad_mode": "loud"})
        assert status == 422 and body["errors"][0]["field"] == "keypad_mode"
        status, body, _ = await a.call("POST", "/rooms", json={"name": "\x07bell"})
        assert status == 422 and "control characters" in body["detail"]
        assert (await a.call("POST", "/rooms", data="name=x"))[0] == 415
        status, _, _ = await a.call("POST", "/rooms", data="{nope",
                                    headers={"Content-Type": "application/json"})
        assert status == 400
        room = (await create_room(redis, "R")).room.id
        assert (await a.call("GET", f"/rooms/{room}/events?after=yesterday"))[0] == 400
        assert (await a.call("GET", f"/rooms/{room}/events?afterr=1-0"))[0] == 400  # a typo
        status, body, _ = await a.call("GET", "/rooms/rnothere")
        assert (status, body["type"], body["title"]) == (404, "about:blank", "Not Found")
        assert (await a.call("POST", f"/rooms/{room}/participants/pnothere/mute"))[0] == 404
        assert (await a.call("GET", "/nothing/here"))[0] == 404
        status, _, headers = await a.call("DELETE", "/rooms")
        assert status == 405 and "POST" in headers["Allow"]


async def test_hands_raised_and_lowered_on_a_callers_behalf_say_api(redis: Redis) -> None:
    room = (await create_room(redis, "Behalf")).room.id
    queue = Queue(redis)
    first = await queue.join(room, number="+15550100001")
    pid = await queue.join(room, number="+15550104821")
    await queue.raise_hand(room, first, source="keypad")
    async with api(redis) as a:
        status, raised, _ = await a.call("PUT", f"/rooms/{room}/participants/{pid}/hand")
        assert status == 200 and (raised["position"], raised["newly_raised"]) == (2, True)
        again = (await a.call("PUT", f"/rooms/{room}/participants/{pid}/hand"))[1]
        assert (again["position"], again["newly_raised"]) == (2, False)
        hands = (await a.call("GET", f"/rooms/{room}/queue"))[1]["hands"]
        assert [(h["participant"], h["source"], h["display_name"]) for h in hands] == [
            (first, "keypad", "Caller 0001"), (pid, "api", "Caller 4821")]
        assert (await a.call("DELETE", f"/rooms/{room}/participants/{pid}/hand"))[0] == 200
        status, refused, _ = await a.call("DELETE", f"/rooms/{room}/participants/{pid}/hand")
        assert (status, refused["ok"], refused["detail"]) == (409, False, "Their hand was not raised.")
    lowered = [e for e in await read_events(redis, room) if e.type == "hand.lowered"]
    assert [e.data["by"] for e in lowered] == ["api"]


async def test_what_the_dashboard_refuses_the_api_refuses_with_the_same_sentence(redis: Redis) -> None:
    room = (await create_room(redis, "Refusals")).room.id
    async with api(redis) as a:
        host = a.app.extensions["handraise"].host
        for action, call in [("done", host.done(room)), ("call-next", host.call_on(room))]:
            expected = await call
            status, body, _ = await a.call("POST", f"/rooms/{room}/{action}")
            assert not expected.ok and status == 409
            assert body["detail"] == body["message"] == expected.message and body["ok"] is False
        status, body, _ = await a.call("POST", f"/rooms/{room}/lower-all")
        assert (status, body) == (200, {"ok": True, "message": "0 hands lowered.", "participant": None})


async def test_renaming_shows_the_new_name_everywhere(redis: Redis) -> None:
    room = (await create_room(redis, "Names")).room.id
    pid = await Queue(redis).join(room, number="+15550104821")
    async with api(redis) as a:
        status, body, _ = await a.call("POST", f"/rooms/{room}/participants/{pid}/rename",
                                       json={"name": "Grace"})
        assert (status, body["message"]) == (200, "Renamed to Grace.")
        people = (await a.call("GET", f"/rooms/{room}/participants"))[1]["participants"]
        assert people[0]["display_name"] == "Grace"
        assert people[0]["number_masked"] == "+1 ••• ••• 4821" and "number" not in people[0]
        status, _, _ = await a.call("POST", f"/rooms/{room}/participants/{pid}/rename",
                                    json={"name": "x" * 61})
        assert status == 422


async def test_the_events_page_resumes_after_an_id_and_describes_who(redis: Redis) -> None:
    room = (await create_room(redis, "Paged")).room.id
    queue = Queue(redis)
    pid = await queue.join(room, number="+15550104821", name="Ada")
    await queue.raise_hand(room, pid, source="keypad")
    await queue.leave(room, pid)
    ids = [e.id for e in await read_events(redis, room)]
    async with api(redis) as a:
        page = (await a.call("GET", f"/rooms/{room}/events?limit=2"))[1]
        assert [e["id"] for e in page["events"]] == ids[:2] and page["more"] is True
        rest = (await a.call("GET", f"/rooms/{room}/events?after={page['last_id']}"))[1]
        assert [e["id"] for e in rest["events"]] == ids[2:] and rest["more"] is False
        assert [e["type"] for e in rest["events"]] == ["hand_raised", "participant_left"]
        assert rest["events"][1]["participant"]["display_name"] == "Ada"  # after they left
        assert rest["last_id"] == ids[-1] and rest["reset"] is False
        empty = (await a.call("GET", f"/rooms/{room}/events?after={ids[-1]}"))[1]
        assert empty["events"] == [] and empty["last_id"] == ids[-1]
        trimmed = (await a.call("GET", f"/rooms/{room}/events?after=1-0"))[1]
        assert trimmed["reset"] is True


async def test_redis_down_is_a_503_problem_with_retry_after() -> None:
    dead = client_from_url(f"redis://127.0.0.1:{free_port()}/0")
    app = create_app(settings(), redis=dead)
    try:
        async with app.test_app():
            response = await app.test_client().get(
                "/api/v1/rooms", headers={"Authorization": "Bearer hr_" + "A" * 43})
            assert response.status_code == 503 and response.content_type == PROBLEM
            assert response.headers["Retry-After"] == "5"
            assert (await response.get_json(force=True))["code"] == "unavailable"
    finally:
        await dead.aclose()


@pytest.mark.slow
async def test_the_event_stream_resumes_from_last_event_id_and_goes_on_live(redis: Redis) -> None:
    room = (await create_room(redis, "Streamed")).room.id
    queue = Queue(redis)
    pid = await queue.join(room, number="+15550104821")
    seen = [e.id for e in await read_events(redis, room)]
    secret, _ = await create_token(redis, "stream")
    app = create_app(settings(), redis=redis)
    async with ServedApp(app, health_path="/healthz") as served, \
            httpx.AsyncClient(base_url=served.base_url, trust_env=False, timeout=10) as http:
        headers = {"Authorization": f"Bearer {secret}", "Last-Event-ID": seen[0]}
        async with http.stream("GET", f"/api/v1/rooms/{room}/events/stream", headers=headers) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            events = _sse(r.aiter_lines())
            first = await anext(events)
            assert (first["id"], first["event"]) == (seen[1], "participant_joined")
            await queue.raise_hand(room, pid, source="web")
            live = await anext(events)
            assert live["event"] == "hand_raised"
            data = json.loads(live["data"])
            assert data["source"] == "web" and data["participant"]["display_name"] == "Caller 4821"
            assert data["id"] == live["id"] == (await read_events(redis, room))[-1].id


async def _sse(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, str]]:
    """Server-sent events (with an id) from a response's lines."""
    fields: dict[str, str] = {}
    async for line in lines:
        if not line:
            if "id" in fields:
                yield fields
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = fields.get(name, "") + value


@pytest.mark.slow
async def test_the_served_app_posts_hand_events_to_its_hooks(redis: Redis) -> None:
    room = (await create_room(redis, "Hooked")).room.id
    pid = await Queue(redis).join(room, number="+15550104821")
    secret, _ = await create_token(redis, "bridge")
    app = create_app(settings(), redis=redis)
    async with receiver() as got, ServedApp(app, health_path="/healthz") as served:
        await add_hook(redis, got.url, events=("hand_raised",))
        async with httpx.AsyncClient(base_url=served.base_url, trust_env=False) as http:
            response = await http.put(f"/api/v1/rooms/{room}/participants/{pid}/hand",
                                      headers={"Authorization": f"Bearer {secret}"})
            assert response.status_code == 200
        await got.until(lambda r: len(r.accepted) == 1)
        event = got.accepted[0].event
        assert (event["type"], event["source"], event["participant"]["id"]) == ("hand_raised", "api", pid)


def test_the_api_offers_every_host_action_the_dashboard_has() -> None:
    from handraise.phone.control import PARTICIPANT_ACTIONS, ROOM_ACTIONS
    from handraise.web.api import PARTICIPANT_ACTION_DOCS, ROOM_ACTION_DOCS

    assert set(ROOM_ACTION_DOCS) == set(ROOM_ACTIONS)
    assert set(PARTICIPANT_ACTION_DOCS) == set(PARTICIPANT_ACTIONS)


async def test_a_room_is_renamed_and_its_settings_changed_with_patch(redis: Redis) -> None:
    async with api(redis) as a:
        room = (await create_room(redis, "Patch me")).room.id
        status, body, _ = await a.call("PATCH", f"/rooms/{room}", json={"name": "Patched",
                                                                      "announce_web": True})
        assert status == 200 and (body["name"], body["announce_web"]) == ("Patched", True)
        assert (await get_room(redis, room)).announce_web is True
        status, body, _ = await a.call("PATCH", f"/rooms/{room}", json={"announce_web": "yes"})
        assert status == 422 and body["errors"][0]["field"] == "announce_web"  # strict: a bool
        status, body, _ = await a.call("PATCH", f"/rooms/{room}", json={"raise_keys": "*2"})
        assert status == 422 and "cannot both be *2" in body["detail"]
        status, body, _ = await a.call("PATCH", f"/rooms/{room}", json={"loudness": 3})
        assert status == 422
        assert (await a.call("PATCH", "/rooms/rnothere", json={"name": "x"}))[0] == 404
