"""The host's pages over HTTP: rooms, the dashboard's fragments, actions, the live stream, the log."""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import httpx
from quart import Quart
from webkit import PASSWORD, csrf_of, settings, signed_in

from handraise.app import create_app, services
from handraise.queue import Queue
from handraise.rooms import create_room, get_room
from handraise.sim import ServedApp
from handraise.store import Redis, free_port

XSS = "<img src=x onerror=alert(1)>"


def section(page: str, sid: str) -> str:
    """The HTML of one partial (by its section id)."""
    found = re.search(rf'<section id="{sid}".*?</section>', page, re.S)
    assert found, f"no section {sid}"
    return found.group(0)


async def test_a_new_room_shows_its_codes_once(redis: Redis) -> None:
    async with signed_in(redis) as host:
        created = await host.client.post("/host/rooms", form={
            "name": "Weekly call", "keypad_mode": "star", "csrf_token": host.csrf})
        page = await created.get_data(as_text=True)
        assert created.status_code == 201
        host_code = re.search(r"Host code</dt><dd class=\"code\">(\d{6})<", page)
        access = re.search(r"Participant access code</dt><dd class=\"code\">(\d{6})<", page)
        assert host_code and access and host_code.group(1) != access.group(1)
        later = await (await host.client.get("/host")).get_data(as_text=True)
        assert "Weekly call" in later and access.group(1) in later
        assert host_code.group(1) not in later  # shown only once


async def test_a_bad_room_name_is_refused_with_a_sentence(redis: Redis) -> None:
    async with signed_in(redis) as host:
        response = await host.client.post("/host/rooms", form={"name": "  ", "csrf_token": host.csrf})
        assert response.status_code == 422
        assert "A room needs a name." in await response.get_data(as_text=True)


async def test_closing_a_room_asks_first(redis: Redis) -> None:
    async with signed_in(redis) as host:
        room = (await create_room(redis, "Closing")).room
        ask = await host.client.post(f"/host/rooms/{room.id}/close", form={"csrf_token": host.csrf})
        assert "Close Closing?" in html.unescape(await ask.get_data(as_text=True))
        assert (await get_room(redis, room.id)).status == "open"
        done = await host.client.post(f"/host/rooms/{room.id}/close",
                                      form={"csrf_token": host.csrf, "confirm": "yes"})
        assert done.status_code == 303
        assert (await get_room(redis, room.id)).status == "closed"


async def test_an_unknown_room_is_404(redis: Redis) -> None:
    async with signed_in(redis) as host:
        assert (await host.client.get("/host/rooms/rnope")).status_code == 404


async def test_the_dashboard_shows_hands_in_order_with_their_details_and_names_as_text(
        redis: Redis) -> None:
    async with signed_in(redis) as host:
        room = (await create_room(redis, "Standup")).room
        queue = Queue(redis)
        a = await queue.join(room.id, number="+15550104821", name=XSS)
        b = await queue.join(room.id, number="+15550107777")
        c = await queue.join(room.id, number="+15550103333")
        await queue.raise_hand(room.id, b, source="prompt")
        await queue.raise_hand(room.id, a, source="keypad")
        await redis.hset(f"hr:{{{room.id}}}:p:{a}", "hand_topic", "<b>budget</b>")
        await queue.call_on(room.id, c)
        page = await (await host.client.get(f"/host/rooms/{room.id}")).get_data(as_text=True)
        hands = section(page, "queue")
        items = re.findall(r'<li id="hand-(\w+)"', hands)
        assert items == [b, a]
        assert "Caller 7777" in hands and "+1 ••• ••• 7777" in hands and "via pre-join prompt" in hands
        assert "via keypad" in hands and "&lt;b&gt;budget&lt;/b&gt;" in hands
        assert XSS not in page and html.escape(XSS) in page
        speaking = section(page, "speaker")
        assert "Caller 3333" in speaking and 'data-since="' in speaking and ">Done<" in speaking
        roster = section(page, "participants")
        assert roster.count('role="row" data-pid=') == 3
        assert "(2) Standup" not in page  # the count is app.js's job; the title stays plain


async def test_call_on_next_is_disabled_and_refused_with_no_hands(redis: Redis) -> None:
    async with signed_in(redis) as host:
        room = (await create_room(redis, "Empty")).room
        page = await (await host.client.get(f"/host/rooms/{room.id}")).get_data(as_text=True)
        assert re.search(r'id="call-next"[^>]*disabled', section(page, "queue"))
        refused = await host.client.post(f"/host/rooms/{room.id}/call-next",
                                         headers=host.headers(**{"HX-Request": "true"}))
        text = await refused.get_data(as_text=True)
        assert refused.status_code == 200 and "No hand is raised." in text and "refused" in text


async def test_without_htmx_an_action_shows_the_dashboard_with_its_outcome(redis: Redis) -> None:
    async with signed_in(redis) as host:
        room = (await create_room(redis, "Plain forms")).room
        queue = Queue(redis)
        pid = await queue.join(room.id, number="+15550100001")
        await queue.raise_hand(room.id, pid, source="web")
        response = await host.client.post(f"/host/rooms/{room.id}/participants/{pid}/lower",
                                          form={"csrf_token": host.csrf})
        page = await response.get_data(as_text=True)
        assert "Hand lowered." in page and "No hands raised." in section(page, "queue")


async def test_renaming_a_caller_changes_their_name_everywhere_and_refuses_bad_names(redis: Redis) -> None:
    async with signed_in(redis) as host:
        room = (await create_room(redis, "Names")).room
        queue = Queue(redis)
        pid = await queue.join(room.id, number="+15550104821")
        url = f"/host/rooms/{room.id}/participants/{pid}/rename"
        ok = await host.client.post(url, form={"name": "Ada"}, headers=host.headers(**{"HX-Request": "true"}))
        assert "Renamed to Ada." in await ok.get_data(as_text=True)
        assert (await queue.participant(room.id, pid)).display_name == "Ada"
        bad = await host.client.post(url, form={"name": "x" * 61},
                                     headers=host.headers(**{"HX-Request": "true"}))
        assert "at most 60" in await bad.get_data(as_text=True)
        cleared = await host.client.post(url, form={"name": ""},
                                         headers=host.headers(**{"HX-Request": "true"}))
        assert "Renamed to Caller 4821." in await cleared.get_data(as_text=True)


async def test_ending_the_meeting_asks_first_without_javascript(redis: Redis) -> None:
    async with signed_in(redis) as host:
        room = (await create_room(redis, "End")).room
        ask = await host.client.post(f"/host/rooms/{room.id}/end", form={"csrf_token": host.csrf})
        body = await ask.get_data(as_text=True)
        assert "End the meeting for everyone?" in body and 'name="confirm" value="yes"' in body


async def test_the_poll_gets_the_three_partials(redis: Redis) -> None:
    async with signed_in(redis) as host:
        room = (await create_room(redis, "Poll")).room
        response = await host.client.get(f"/host/rooms/{room.id}", headers={"HX-Request": "true"})
        body = await response.get_data(as_text=True)
        assert response.headers["Vary"] == "HX-Request"
        assert re.findall(r'<section id="(\w+)"', body) == ["speaker", "queue", "participants"]
        assert all(f'sse-swap="{name}"' in body for name in ("speaker", "queue", "participants"))
        assert "<html" not in body and "csrf_token" not in body  # shared fragments: header token


async def test_the_hand_log_is_a_csv_attachment(redis: Redis) -> None:
    async with signed_in(redis) as host:
        room = (await create_room(redis, "Log")).room
        queue = Queue(redis)
        pid = await queue.join(room.id, number="+15550104821", name="=HYPERLINK(1)")
        await queue.raise_hand(room.id, pid, source="keypad")
        await queue.call_on(room.id, pid)
        response = await host.client.get(f"/host/rooms/{room.id}/log.csv")
        assert response.headers["Content-Type"].startswith("text/csv")
        assert "attachment" in response.headers["Content-Disposition"]
        lines = (await response.get_data(as_text=True)).splitlines()
        assert lines[0].startswith("display_name,number_masked,source,raised_at")
        assert lines[1].startswith("'=HYPERLINK(1),") and ",called on," in lines[1]


async def test_a_lost_redis_gives_a_page_that_says_what_to_do(redis: Redis) -> None:
    app = create_app(settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    async with app.test_app():
        client = app.test_client()
        login = await client.post("/host/login", form={"password": PASSWORD})
        assert login.status_code == 503
        assert "briefly unavailable" in await login.get_data(as_text=True)


# --- the live stream, over real HTTP ------------------------------------------------------


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str | None, str | None, str]]:
    """(id, event, data) of each server-sent event; comments are skipped."""
    fields: dict[str, list[str]] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields:
                yield (fields.get("id", [None])[0], fields.get("event", [None])[0],
                       "\n".join(fields["data"]))
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields.setdefault(name, []).append(value)



@contextlib.asynccontextmanager
async def served_client(redis: Redis, *, sign_in: bool = True,
                        app: Quart | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """``app`` (default: a new one) served over real HTTP, and a client (signed in as the
    host by default)."""
    app = app or create_app(settings(), redis=redis)
    async with ServedApp(app, health_path="/healthz") as served, \
            httpx.AsyncClient(base_url=served.base_url) as client:
        if sign_in:
            assert (await client.post("/host/login", data={"password": PASSWORD})).status_code == 303
        yield client


async def test_the_event_stream_sends_partials_on_change_and_resumes_without_resending(
        redis: Redis) -> None:
    async with served_client(redis) as client:
        room = (await create_room(redis, "Live")).room
        queue = Queue(redis)
        pid = await queue.join(room.id, number="+15550104821")
        url = f"/host/rooms/{room.id}/events"
        async with client.stream("GET", url) as response:
            assert response.headers["Content-Type"].startswith("text/event-stream")
            events = sse_events(response)
            first = [await anext(events) for _ in range(3)]
            assert [e[1] for e in first] == ["speaker", "queue", "participants"]
            assert "No hands raised." in first[1][2]
            await queue.raise_hand(room.id, pid, source="keypad")
            changed = [await anext(events) for _ in range(3)]
            assert "Caller 4821" in changed[1][2] and changed[1][0] != first[1][0]
            last_id = changed[1][0]
        assert last_id is not None
        # Reconnecting at the newest id sends nothing until the next change.
        async with client.stream("GET", url, headers={"Last-Event-ID": last_id}) as response:
            events = sse_events(response)
            pending = asyncio.ensure_future(anext(events))
            await queue.lower_hand(room.id, pid, by="keypad")
            event_id, name, _ = await asyncio.wait_for(pending, 10)
            assert event_id != last_id and name == "speaker"
        # Reconnecting from an older id gets the current state at once.
        async with client.stream("GET", url, headers={"Last-Event-ID": last_id}) as response:
            _, name, _data = await asyncio.wait_for(anext(sse_events(response)), 10)
            assert name == "speaker"


def row_of(pid: str, roster: str) -> str:
    found = re.search(rf'<tr id="row-{pid}".*?</tr>', roster, re.S)
    assert found, f"no row of {pid}"
    return found.group(0)


def inner(section_html: str) -> str:
    """A section's content with its whitespace collapsed."""
    return " ".join(section_html.split(">", 1)[1].rsplit("</section>", 1)[0].split())


async def test_the_live_roster_keeps_unchanged_rows_and_shows_what_the_page_shows(
        redis: Redis) -> None:
    async with served_client(redis) as client:
        room = (await create_room(redis, "Roster")).room
        queue = Queue(redis)
        a, b, c = [await queue.join(room.id, number=f"+1555010{n}000") for n in (1, 2, 3)]
        url = f"/host/rooms/{room.id}/events"
        changes = [lambda: queue.raise_hand(room.id, a, source="keypad"),
                   lambda: queue.raise_hand(room.id, b, source="web"),
                   lambda: queue.update(room.id, c, muted=False),
                   lambda: queue.call_on(room.id),  # a speaks; b's hand moves up to 1
                   lambda: queue.update(room.id, b, name="Bea")]
        async with client.stream("GET", url) as response:
            events = sse_events(response)
            seen: list[str] = []
            for change in [None, *changes]:
                if change is not None:
                    await change()
                while True:
                    _, name, data = await asyncio.wait_for(anext(events), 10)
                    if name == "participants":
                        break
                poll = await client.get(f"/host/rooms/{room.id}", headers={"HX-Request": "true"})
                assert " ".join(data.split()) == inner(section(poll.text, "participants"))
                seen.append(data)
        row = {pid: [row_of(pid, d) for d in seen] for pid in (a, b, c)}
        assert "Hand up · 1" in row[a][1] and "Speaking" in row[a][4] and "Hand up" not in row[a][4]
        assert "Hand up · 2" in row[b][2] and "Hand up · 1" in row[b][4] and "Bea" in row[b][5]
        assert "Muted" in row[c][2] and "Live" in row[c][3]
        assert row[c][3] == row[c][5] and row[a][4] == row[a][5]  # unchanged rows stay the same


async def test_without_a_session_the_stream_is_401(redis: Redis) -> None:
    async with served_client(redis, sign_in=False) as client:
        room = (await create_room(redis, "Closed door")).room
        assert (await client.get(f"/host/rooms/{room.id}/events")).status_code == 401


async def test_a_closed_dashboard_stops_its_subscription(redis: Redis) -> None:
    app = create_app(settings(), redis=redis)
    async with served_client(redis, app=app) as client:
        room = (await create_room(redis, "Closing tabs")).room
        hub = services(app).hub
        async with client.stream("GET", f"/host/rooms/{room.id}/events") as response:
            await anext(sse_events(response))
            assert len(hub._readers[room.id].subscribers) == 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while room.id in hub._readers:  # the reader goes once its last subscriber has
            assert loop.time() < deadline, "the dashboard's subscription outlived its stream"
            await asyncio.sleep(0.02)  # polling with a deadline


async def test_a_signed_in_host_whose_redis_is_gone_gets_a_page_saying_what_to_do(redis: Redis) -> None:
    up = create_app(settings(), redis=redis)
    down = create_app(settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    async with up.test_app(), down.test_app():
        login = await up.test_client().post("/host/login", form={"password": PASSWORD})
        cookie = {"Cookie": login.headers["Set-Cookie"].split(";")[0]}
        page = await down.test_client().get("/host/rooms/r1", headers=cookie)
        assert page.status_code == 503 and page.headers["Retry-After"] == "5"
        assert "Reload this page in a few seconds." in await page.get_data(as_text=True)
        token = csrf_of(await (await up.test_client().get("/host", headers=cookie)).get_data(as_text=True))
        action = await down.test_client().post("/host/rooms/r1/mute-all", headers=cookie | {
            "HX-Request": "true", "X-CSRF-Token": token})
        assert action.status_code == 503
        assert "briefly unavailable; nothing was changed" in await action.get_data(as_text=True)


async def test_the_room_settings_form_saves_each_setting_and_refuses_a_clash_with_a_sentence(
        redis: Redis) -> None:
    async with signed_in(redis) as host:
        room = (await create_room(redis, "Settings")).room
        page = await (await host.client.get(f"/host/rooms/{room.id}")).get_data(as_text=True)
        assert "Room settings" in page and 'id="set-keypad_mode"' in page
        hx = host.headers(**{"HX-Request": "true"})
        # As the browser sends it: a ticked box comes after its hidden "no".
        saved = await host.client.post(
            f"/host/rooms/{room.id}/settings",
            headers={**hx, "Content-Type": "application/x-www-form-urlencoded"},
            data=urlencode([("keypad_mode", "star"), ("announce_web", "no"), ("announce_web", "yes"),
                            ("end_on_host_exit", "no"), ("raise_keys", "*1"), ("lower_keys", "*2")]))
        text = await saved.get_data(as_text=True)
        assert saved.status_code == 200 and "Settings saved." in text
        after = await get_room(redis, room.id)
        assert (after.keypad_mode, after.announce_web, after.end_on_host_exit) == ("star", True, False)
        clash = await host.client.post(f"/host/rooms/{room.id}/settings", headers=hx,
                                       form={"lower_keys": "*1"})
        text = html.unescape(await clash.get_data(as_text=True))
        assert "lower_keys and raise_keys cannot both be *1." in text and 'value="*1"' in text
        assert (await get_room(redis, room.id)).lower_keys == "*2"
        unsigned = await host.client.post(f"/host/rooms/{room.id}/settings", form={"keypad_mode": "stream"})
        assert unsigned.status_code == 403 and (await get_room(redis, room.id)).keypad_mode == "star"
        plain = await host.client.post(f"/host/rooms/{room.id}/settings",
                                       form={"keypad_mode": "stream", "csrf_token": host.csrf})
        assert "Settings saved." in await plain.get_data(as_text=True)
        assert (await get_room(redis, room.id)).keypad_mode == "stream"
