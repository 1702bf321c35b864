"""The demo's Phones page, served for real: a signed-in host drives the Twilio emulator with it."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html.parser import HTMLParser

import httpx
import pytest

from handraise.app import create_app
from handraise.config import Settings
from handraise.demo import mount_phones, set_phones_room
from handraise.demo.phones import Heard, fresh_number, heard_line
from handraise.queue import Queue
from handraise.rooms import CreatedRoom, create_room
from handraise.sim import ServedApp, SimConfig, Simulator, free_port
from handraise.store import Redis

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*(BasicAuth|auth' parameter).*:DeprecationWarning"),
]

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "phonesToken0123456789abcdef01234"
PASSWORD = "phones page password"
HX = {"HX-Request": "true"}


@dataclass
class Demo:
    served: ServedApp
    sim: Simulator
    queue: Queue
    created: CreatedRoom

    @property
    def room(self) -> str:
        return self.created.room.id

    def sid_of(self, number: str) -> str:
        [sid] = [c.sid for c in self.sim.engine.calls.values() if c.from_ == number]
        return sid

    def said(self, sid: str) -> str:
        return " | ".join(str(t.get("text", "")) for t in self.sim.transcript(sid))


@contextlib.asynccontextmanager
async def demo(redis: Redis, *, wait_time_scale: float = 0.05) -> AsyncIterator[Demo]:
    """The app with the Phones page mounted as ``run_demo`` mounts it, and a demo room."""
    port, sim_port = free_port(), free_port()
    public = f"http://127.0.0.1:{port}"
    settings = Settings(public_url=public, twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN,
                        twilio_api_url=f"http://127.0.0.1:{sim_port}", host_password=PASSWORD,
                        secret_key="phones-test-secret-0123456789abcdef")
    app = create_app(settings, redis=redis)
    sim = Simulator(SimConfig(voice_url=public + "/voice/incoming", account_sid=ACCOUNT_SID,
                              auth_token=AUTH_TOKEN, port=sim_port, media_time_scale=0.0,
                              wait_time_scale=wait_time_scale, seed=11, background="silence"))
    mount_phones(app, sim)
    async with ServedApp(app, port=port, health_path="/healthz") as served, sim:
        created = await create_room(redis, "Demo room")  # stream mode, as the demo's
        set_phones_room(app, created.room, created.host_code)
        yield Demo(served, sim, Queue(redis), created)


@contextlib.asynccontextmanager
async def browser(d: Demo) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A signed-in host (session cookie) and the CSRF token the Phones page carries."""
    async with httpx.AsyncClient(base_url=d.served.base_url, trust_env=False) as client:
        signed = await client.post("/host/login", data={"password": PASSWORD})
        assert signed.status_code == 303, signed.text
        page = await client.get("/demo/phones")
        assert page.status_code == 200
        found = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page.text)
        assert found, "no CSRF field on the Phones page"
        yield client, found.group(1)


class Names(HTMLParser):
    """Button names (aria-label, else text) inside each region named by its heading."""

    def __init__(self) -> None:
        super().__init__()
        self.regions: dict[str, list[str]] = {}
        self._labels: dict[str, str] = {}  # heading id -> region element's id
        self._stack: list[str | None] = []
        self._heading: str | None = None
        self._button: dict[str, str | None] | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self._stack.append(a.get("aria-labelledby"))
        elif a.get("id") and a["id"] in self._stack:
            self._heading, self._text = a["id"], ""
        elif tag == "button":
            self._button, self._text = a, ""

    def handle_data(self, data: str) -> None:
        self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._stack.pop()
        elif self._heading is not None and tag.startswith("h"):
            self._labels[self._heading] = " ".join(self._text.split())
            self.regions[self._labels[self._heading]] = []
            self._heading = None
        elif tag == "button" and self._button is not None:
            name = self._button.get("aria-label") or " ".join(self._text.split())
            region = next((s for s in reversed(self._stack) if s in self._labels), None)
            if region is not None:
                self.regions[self._labels[region]].append(name)
            self._button = None


def buttons_by_region(html: str) -> dict[str, list[str]]:
    parser = Names()
    parser.feed(html)
    return parser.regions


async def test_without_a_host_session_the_page_redirects_to_sign_in_and_actions_answer_401(
        redis: Redis) -> None:
    async with demo(redis) as d, httpx.AsyncClient(base_url=d.served.base_url, trust_env=False) as anon:
        page = await anon.get("/demo/phones")
        assert page.status_code == 302
        assert page.headers["location"].startswith("/host/login?next=/demo/phones")
        dial = await anon.post("/demo/phones/calls", data={"number": "+15550100001", "as": "participant"})
        assert dial.status_code == 401
        assert d.sim.engine.calls == {}


async def test_a_post_without_the_csrf_token_is_refused_and_places_no_call(redis: Redis) -> None:
    async with demo(redis) as d, browser(d) as (client, _csrf):
        refused = await client.post("/demo/phones/calls", data={"number": "+15550100001"})
        assert refused.status_code == 403
        assert d.sim.engine.calls == {}


async def test_a_host_and_a_participant_dial_in_press_star_1_and_read_you_are_live(redis: Redis) -> None:
    async with demo(redis) as d, browser(d) as (client, csrf):
        headers = {"X-CSRF-Token": csrf, **HX}
        host = await client.post("/demo/phones/calls", data={"number": "+15550100001", "as": "host"},
                                 headers=headers)
        assert host.status_code == 200 and host.headers["Vary"] == "HX-Request"
        assert "<html" not in host.text and 'id="calls"' in host.text
        assert "Phone +15550100001" in host.text
        assert 'id="dial-number"' in host.text and 'hx-swap-oob="true"' in host.text  # a fresh number
        host_sid = d.sid_of("+15550100001")
        await d.sim.wait_event("conference", call_sid=host_sid, event="participant-join")

        # A plain form post (no htmx): the token in the form, then back to the page.
        joined = await client.post("/demo/phones/calls", data={
            "number": "+15550100002", "as": "participant", "csrf_token": csrf})
        assert joined.status_code == 303 and joined.headers["location"] == "/demo/phones"
        sid = d.sid_of("+15550100002")
        await d.sim.wait_event("conference", call_sid=sid, event="participant-join")
        pid = d.sim.state(sid)["conference"]["label"]
        assert await d.queue.queue(d.room) == []

        pressed = await client.post(f"/demo/phones/calls/{sid}/keys", data={"digits": "*1"}, headers=headers)
        assert pressed.status_code == 200
        assert "Phone +15550100002 pressed *1." in pressed.text  # the status region, out of band
        await d.sim.wait_event("heard", call_sid=sid, kind="announcement",
                               text="Hand raised. You are number 1 in line.", timeout=15)
        assert [(h.participant, h.source) for h in await d.queue.queue(d.room)] == [(pid, "keypad")]
        page = await client.get("/demo/phones")
        card = page.text[page.text.index(f'id="phone-{sid}"'):]
        assert "Hand raised. You are number 1 in line." in card

        # Called on from the dashboard, the caller hears it privately; the poll shows it.
        called = await client.post(f"/host/rooms/{d.room}/participants/{pid}/call-on", headers=headers)
        assert called.status_code == 200, called.text
        await d.sim.wait_event("heard", call_sid=sid, kind="announcement", text="You are live. Go ahead.",
                               timeout=15)
        poll = await client.get("/demo/phones", headers=HX)
        assert poll.status_code == 200 and "You are live. Go ahead." in poll.text

        talk = await client.post(f"/demo/phones/calls/{sid}/talk", headers=headers)
        assert talk.status_code == 200
        await d.sim.wait_event("speech", call_sid=sid, duration_ms=2000.0)

        hung = await client.post(f"/demo/phones/calls/{sid}/hangup", headers=headers)
        assert hung.status_code == 200
        assert d.sim.state(sid)["status"] == "completed"
        again = await client.post(f"/demo/phones/calls/{sid}/keys", data={"digits": "1"}, headers=headers)
        assert again.status_code == 409
        assert not [e for c in d.sim.engine.calls.values() for e in c.errors if e["level"] == "error"]


async def test_just_dial_leaves_the_code_to_the_keypad_buttons(redis: Redis) -> None:
    # Real Gather timeouts (5 s after each key): one page request per key is well within them.
    async with demo(redis, wait_time_scale=1.0) as d, browser(d) as (client, csrf):
        headers = {"X-CSRF-Token": csrf, **HX}
        await client.post("/demo/phones/calls", data={"number": "+15550100003", "as": "dial"},
                          headers=headers)
        sid = d.sid_of("+15550100003")
        gather = await d.sim.wait_event("gather-start", call_sid=sid, num_digits=6)
        assert not [e for e in d.sim.events if e.kind == "digits-pressed"]  # nobody typed for it
        for digit in d.created.room.access_code:
            pressed = await client.post(f"/demo/phones/calls/{sid}/keys", data={"digits": digit},
                                        headers=headers)
            assert pressed.status_code == 200
        typed = await d.sim.wait_event("gather-end", call_sid=sid, after=gather.seq)
        assert typed.data["digits"] == d.created.room.access_code
        await d.sim.wait_event("gather-start", call_sid=sid, num_digits=2)  # the code was right


async def test_every_card_has_a_named_region_with_named_buttons(redis: Redis) -> None:
    async with demo(redis) as d, browser(d) as (client, csrf):
        await client.post("/demo/phones/calls", data={"number": "+15550100004", "as": "dial"},
                          headers={"X-CSRF-Token": csrf})
        page = await client.get("/demo/phones")
        regions = buttons_by_region(page.text)
        assert regions["Phone +15550100004"] == [
            "Press 1", "Press 2", "Press 3", "Press 4", "Press 5", "Press 6", "Press 7", "Press 8",
            "Press 9", "Press star", "Press 0", "Press pound", "Press *1 (raise)", "Press *2 (lower)",
            "Talk 2 s", "Hang up"]
        assert regions["Dial in"] == ["Dial in"]
        dashboard = f'href="/host/rooms/{d.room}"'
        assert dashboard in page.text
        assert "Open the Demo room dashboard" in page.text
        assert 'href="/static/demo.css"' in page.text
        assert "style=" not in page.text and "<script>" not in page.text and "hx-on" not in page.text


async def test_the_poll_answers_the_list_alone_and_204_while_nothing_changed(redis: Redis) -> None:
    async with demo(redis) as d, browser(d) as (client, _csrf):
        poll = await client.get("/demo/phones", headers=HX)
        assert poll.status_code == 200 and poll.headers["Vary"] == "HX-Request"
        assert poll.text.lstrip().startswith('<section id="calls"') and "<html" not in poll.text
        since = re.search(r'hx-get="/demo/phones\?since=(\d+)"', poll.text)
        assert since and 'hx-trigger="every 1s"' in poll.text
        same = await client.get(f"/demo/phones?since={since.group(1)}", headers=HX)
        assert same.status_code == 204 and same.headers["Vary"] == "HX-Request"
        d.sim.place_call("+15550100005", "+15550109999")
        changed = await client.get(f"/demo/phones?since={since.group(1)}", headers=HX)
        assert changed.status_code == 200 and "Phone +15550100005" in changed.text


async def test_bad_numbers_and_keys_are_refused(redis: Redis) -> None:
    async with demo(redis) as d, browser(d) as (client, csrf):
        headers = {"X-CSRF-Token": csrf}
        bad = await client.post("/demo/phones/calls", data={"number": "call me"}, headers=headers)
        assert bad.status_code == 422 and "6 to 15 digits" in bad.text
        assert d.sim.engine.calls == {}
        await client.post("/demo/phones/calls", data={"number": "+15550100006", "as": "dial"},
                          headers=headers)
        sid = d.sid_of("+15550100006")
        assert (await client.post(f"/demo/phones/calls/{sid}/keys", data={"digits": "1x"},
                                  headers=headers)).status_code == 422
        assert (await client.post("/demo/phones/calls/CAnope/keys", data={"digits": "1"},
                                  headers=headers)).status_code == 404


def test_create_app_alone_has_no_phones_page() -> None:
    app = create_app(Settings(public_url="http://localhost"))
    assert not [r.rule for r in app.url_map.iter_rules() if r.rule.startswith("/demo")]
    assert "phones" not in app.blueprints


def test_transcript_lines_read_as_what_the_caller_heard() -> None:
    assert heard_line({"kind": "say", "text": "Welcome."}) == Heard("", "Welcome.")
    assert heard_line({"kind": "announcement", "text": "You are live. Go ahead."}) == \
        Heard("private", "You are live. Go ahead.")
    assert heard_line({"kind": "play-digits", "digits": "ww1"}) == Heard("tones", "ww1")
    assert heard_line({"kind": "beep", "reason": "enter"}) == Heard("beep", "someone joined")
    assert heard_line({"kind": "wait-music", "url": "default"}) == Heard("waiting", "music")


def test_fresh_numbers_skip_the_ones_in_use() -> None:
    taken = {f"+1555010{n:04d}" for n in range(10_000) if n != 1234}
    assert fresh_number(taken) == "+15550101234"
    assert re.fullmatch(r"\+1555010\d{4}", fresh_number(set()))
