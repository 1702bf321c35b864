"""The companion page over HTTP: linking by PIN, its limits, the caller's own hand, privacy."""

from __future__ import annotations

import asyncio
import base64
import html
import json
import logging
import re

import httpx
import pytest
from test_host_pages import sse_events
from webkit import settings

from handraise.app import create_app
from handraise.pins import issue_pin, revoke_pin
from handraise.queue import Queue
from handraise.rooms import create_room
from handraise.sim import ServedApp
from handraise.store import Redis
from handraise.web.participant import CLIENT_WRONG_LIMIT, GLOBAL_WRONG_PER_MINUTE, WRONG_PIN
from handraise.web.security import LINK_MARK


def csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', html)
    assert found
    return found.group(1)


async def caller(redis: Redis, room: str, number: str, **fields: object) -> tuple[str, str]:
    """A caller on the phone (participant + live PIN), as the voice webhooks leave them."""
    pid = await Queue(redis).join(room, number=number, call_sid="CA" + number[-4:] * 8, **fields)  # type: ignore[arg-type]
    return pid, await issue_pin(redis, room, pid)


def test_every_linked_route_requires_the_link() -> None:
    app = create_app(settings())
    rules = [r for r in app.url_map.iter_rules() if r.rule == "/me" or r.rule.startswith("/me/")]
    assert {r.rule for r in rules} >= {"/me", "/me/events", "/me/<action>", "/me/unlink"}
    for rule in rules:
        assert getattr(app.view_functions[rule.endpoint], LINK_MARK, None) in {"page", "action", "stream"}, \
            rule.rule


async def test_a_pin_with_spaces_links_this_browser_to_that_call_and_only_names_it(redis: Redis) -> None:
    app = create_app(settings(), redis=redis)
    async with app.test_app():
        client = app.test_client()
        room = (await create_room(redis, "Town hall")).room
        pid, pin = await caller(redis, room.id, "+15550104821")
        assert (await client.get("/me")).headers["Location"] == "/join"
        linked = await client.post("/join", form={"pin": f" {pin[:3]} {pin[3:]} "})
        assert linked.status_code == 303 and linked.headers["Location"] == "/me"
        cookie = linked.headers["Set-Cookie"]
        assert cookie.startswith("handraise_link=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
        payload = cookie.split("=", 1)[1].split(".")[0]
        assert json.loads(base64.urlsafe_b64decode(payload + "==")) == f"{room.id}:{pid}"
        page = await (await client.get("/me")).get_data(as_text=True)
        assert "Town hall" in page and "You are linked to your call ending 4821." in page
        assert "On the phone: *1 raises, *2 lowers" in page
        assert "web" in (await Queue(redis).participant(room.id, pid)).channels
        # The host's pages stay closed to a linked caller.
        assert (await client.get("/host")).status_code == 302


async def test_wrong_pins_are_limited_per_client_and_never_echoed_or_logged(
        redis: Redis, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    app = create_app(settings(), redis=redis)
    async with app.test_app():
        client = app.test_client()
        room = (await create_room(redis, "Limits")).room
        _, pin = await caller(redis, room.id, "+15550104821")
        me = {"client": ("10.1.1.1", 4000)}
        for guess in ("123456", "654321", "111112", "999998"):
            response = await client.post("/join", form={"pin": guess}, scope_base=me)
            body = await response.get_data(as_text=True)
            assert response.status_code == 400 and WRONG_PIN in body and guess not in body
        assert CLIENT_WRONG_LIMIT == 5
        fifth = await client.post("/join", form={"pin": "222223"}, scope_base=me)
        assert fifth.status_code == 429 and 590 <= int(fifth.headers["Retry-After"]) <= 600
        assert "Too many tries. Try again in 10 minutes." in await fifth.get_data(as_text=True)
        # Even the right PIN waits now, from this client.
        right = await client.post("/join", form={"pin": pin}, scope_base=me)
        assert right.status_code == 429
        # Another device is not blocked.
        other = await client.post("/join", form={"pin": pin}, scope_base={"client": ("10.1.1.2", 4000)})
        assert other.status_code == 303
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert pin not in logged and "123456" not in logged


async def test_a_botnet_meets_the_global_ceiling_of_wrong_pins(redis: Redis) -> None:
    app = create_app(settings(), redis=redis)
    async with app.test_app():
        client = app.test_client()
        room = (await create_room(redis, "Botnet")).room
        _, pin = await caller(redis, room.id, "+15550104821")
        for i in range(GLOBAL_WRONG_PER_MINUTE):  # each from its own address
            response = await client.post("/join", form={"pin": f"{i:06d}" if f"{i:06d}" != pin else "999999"},
                                         scope_base={"client": (f"10.9.0.{i}", 4000)})
            assert response.status_code == 400
        blocked = await client.post("/join", form={"pin": pin}, scope_base={"client": ("10.9.1.1", 4000)})
        assert blocked.status_code == 429 and 1 <= int(blocked.headers["Retry-After"]) <= 60
        assert "Too many people are trying PINs right now." in await blocked.get_data(as_text=True)


async def test_a_lapsed_pin_is_refused(redis: Redis) -> None:
    app = create_app(settings(), redis=redis)
    async with app.test_app():
        room = (await create_room(redis, "Lapsed")).room
        pid, pin = await caller(redis, room.id, "+15550104821")
        await Queue(redis).leave(room.id, pid)
        await revoke_pin(redis, room.id, pid)  # what the hang-up does
        response = await app.test_client().post("/join", form={"pin": pin})
        assert response.status_code == 400 and WRONG_PIN in await response.get_data(as_text=True)


async def test_the_linked_caller_acts_only_on_their_own_hand(
        redis: Redis, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(settings(), redis=redis)
    queue = Queue(redis)
    async with app.test_app():
        client = app.test_client()
        room = (await create_room(redis, "Own hand")).room
        pid, pin = await caller(redis, room.id, "+15550104821")
        other, _ = await caller(redis, room.id, "+15550107777")
        await client.post("/join", form={"pin": pin})
        token = csrf(await (await client.get("/me")).get_data(as_text=True))
        assert (await client.post("/me/raise", form={"participant": pid})).status_code == 403  # no token
        forged = await client.post("/me/raise", form={"csrf_token": token, "participant": other})
        assert forged.status_code == 403
        assert "sent a form for" in caplog.text
        assert await queue.queue(room.id) == []
        raised = await client.post("/me/raise", form={"csrf_token": token, "participant": pid})
        assert raised.status_code == 303
        [hand] = await queue.queue(room.id)
        assert (hand.participant, hand.source) == (pid, "web")
        topic = await client.post("/me/topic", form={"csrf_token": token, "topic": "Budget, line 4"},
                                  headers={"HX-Request": "true"})
        assert "Your hand is raised. You're next." in html.unescape(await topic.get_data(as_text=True))
        assert (await queue.participant(room.id, pid)).topic == "Budget, line 4"
        too_long = await client.post("/me/topic", form={"csrf_token": token, "topic": "x" * 141},
                                     headers={"HX-Request": "true"})
        assert "A topic can be at most 140 characters." in await too_long.get_data(as_text=True)
        named = await client.post("/me/name", form={"csrf_token": token, "name": "y" * 41},
                                  headers={"HX-Request": "true"})
        assert "at most 40" in await named.get_data(as_text=True)
        await client.post("/me/name", form={"csrf_token": token, "name": "Ada"})
        assert (await queue.participant(room.id, pid)).display_name == "Ada"
        await client.post("/me/lower", form={"csrf_token": token})
        assert await queue.queue(room.id) == []
        assert (await queue.participant(room.id, pid)).topic is None  # it went with the hand
        assert (await queue.participant(room.id, other)).name is None


async def test_when_the_call_ends_the_page_says_so_and_the_link_is_void(redis: Redis) -> None:
    app = create_app(settings(), redis=redis)
    async with app.test_app():
        client = app.test_client()
        room = (await create_room(redis, "Ending")).room
        pid, pin = await caller(redis, room.id, "+15550104821")
        await client.post("/join", form={"pin": pin})
        await Queue(redis).leave(room.id, pid)
        page = await client.get("/me")
        body = await page.get_data(as_text=True)
        assert "Your call has ended." in body and "Raise hand" not in body
        assert "handraise_link=;" in page.headers["Set-Cookie"]
        assert (await client.get("/me")).headers["Location"] == "/join"


async def test_the_event_stream_carries_only_the_callers_own_state(redis: Redis) -> None:
    app = create_app(settings(), redis=redis)
    queue = Queue(redis)
    async with ServedApp(app, health_path="/healthz") as served, \
            httpx.AsyncClient(base_url=served.base_url) as client:
        room = (await create_room(redis, "Private")).room
        pid, pin = await caller(redis, room.id, "+15550104821")
        bob, _ = await caller(redis, room.id, "+15550107777", name="Secret Bob")
        assert (await client.post("/join", data={"pin": pin})).status_code == 303
        async with client.stream("GET", "/me/events") as response:
            events = sse_events(response)
            first = [await anext(events) for _ in range(2)]
            assert [e[1] for e in first] == ["hand", "controls"]
            await queue.raise_hand(room.id, bob, source="keypad")
            await queue.set_topic(room.id, bob, "Bob's secret plan")
            await queue.raise_hand(room.id, pid, source="keypad")  # the page shows a keypad raise
            seen: list[str] = []
            while "number 2 in line" not in "".join(seen):
                seen.append((await asyncio.wait_for(anext(events), 5))[2])
            await queue.call_on(room.id, bob)
            while "You're next." not in html.unescape(seen[-1]):
                seen.append((await asyncio.wait_for(anext(events), 5))[2])
        everything = " ".join(e[2] for e in first) + " ".join(seen)
        assert "Bob" not in everything and "7777" not in everything and bob not in everything
