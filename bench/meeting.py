"""A whole meeting at Twilio's scale, through the emulator: webhook latency, dashboard fan-out,
and the final hand queue checked against a replay of every action.

Two scenarios, each on a fresh stack:

1. **One room, 250 callers** (``--callers``) dialling in over 60 s (``--seconds``), each
   raising and lowering at random from the keypad and from the companion page, the host
   calling on people through the JSON API, 20 dashboards open (``--dashboards``). Then a
   251st caller dials the same room and the bench prints what they heard.
2. **30 rooms x 8 callers** (``--rooms``) at once, the same load and checks, one dashboard
   per room.

How it runs, as an operator runs it:

* ``handraise serve`` in its own process (one worker; bench/serving.py), a scratch
  redis-server, and in this process (uvloop) the Twilio emulator (``handraise.sim``, its
  REST API where ``HANDRAISE_TWILIO_API_URL`` points) and the load: virtual callers, the
  companion pages, the host and the dashboards, all over real HTTP.
* **Callers** count every phone leg, the host's included, because Twilio's limit of 250
  does: a room of 250 callers is its host's call and 249 participants. The host dials in
  first (the conference starts with them); the others are spread evenly over the dial-in
  window. Each participant types the code, presses ``*1`` in the pre-join window one time in
  five, hears the web PIN (parsed from ``sim.transcript(sid)``), links a companion page with
  it (``POST /join``, its cookie, the CSRF token of ``/me``), then acts until 40 s after the
  window (``--tail``): every 10 s on average (exponential), raise (60 %) or lower
  (40 %), on the keypad or the page (half each), whatever their hand's state, so raising a
  raised hand and lowering a lowered one happen too.
* **Keypad**: ``star`` rooms by default. ``*`` steps the caller out (``hangupOnStar``), the
  Dial action answers with a one-key Gather, ``1``/``2`` go to ``/voice/star-keys``, and the
  caller is dialled back in: six webhooks and two conference callbacks per press, the
  hardest path on the webhooks, with no real-time media. ``--keypad stream`` runs the other
  mode: every call forks real-time 20 ms media to the app and the keys are tones in it; at
  250 calls that is mostly a media benchmark (bench/media.py's job) and this process, which
  synthesises the frames, is the bottleneck sooner than the app.
* **The host** (an API token, ``handraise.tokens.create_token``): every 2-4 s
  ``POST /api/v1/rooms/{id}/call-next``, then ``done`` 1-2 s later. Twilio's REST calls that
  these make (unmute, mute, the private "you are live") go to the emulator.
* **Speech takes real time** (``media_time_scale=1``) as on Twilio, so a caller's requests
  are spaced as a real caller's are; only the load is compressed into the window.

What it measures:

* **Webhook latency**: every request the emulator makes to the app, timed by the emulator
  (from sending the request to reading the whole answer) and grouped by URL. The emulator
  shares this process with the load, so its event loop's delays are in these figures: they
  are an upper bound of the app's. For comparison, the app's own handler times from
  ``GET /metrics`` (the ``voice`` group's histogram; they leave out the time a request waits
  for the app's loop, which a burst is mostly made of).
* **What is kept out of the figures, and why** (the 30-host burst at the start of scenario 2
  measured 240-400 ms for /voice/incoming, nearly all of it this process; timed phase by
  phase on both sides): the emulator loads its media module (numpy) when it starts, not on
  the first key press (a 0.2 s stall); it sends webhooks over aiohttp, not httpx, whose pool
  spent most of this process's CPU in the burst (encode/httpcore#1035); and this process runs
  no full garbage collection while it measures (its heap grows with the emulator's event log;
  one full collection stalled its loop 80-155 ms). The app's own delays are all left in: the
  burst still queues on its one loop (30 calls' join work at once: p99 ~130-160 ms), as a
  real burst at the top of the hour would. The app's cold paths that the burst found are
  fixed in the app (a Redis pool growing by 30 connections read package metadata 30 times;
  the first REST call imported twilio's REST tree).
* **Fan-out**: each dashboard's SSE stream (``/host/rooms/<room>/events``, signed in as the
  host, reopened with ``Last-Event-ID`` as EventSource does). An SSE ``id`` is the Redis
  stream id ``<ms>-<seq>`` of the room event the fragment reflects, so arrival time minus
  that ms is the fan-out latency (one clock: same machine). Two figures: per message (the
  first message of each connection, the current state, is left out), and per hand change:
  from the event to the first message on a stream that reflects it, over every stream. The
  second is the one a host sees: a stream that is slow to render skips to the newest state,
  so its messages look fresh (the first figure) while changes wait for them.
* **The checks**, each a PASS/FAIL line with its counts (never an assert): the room's event
  stream (``read_events``; the app keeps 1,000,000 events per room here, and the check says
  whether the stream still starts at ``room.created``) is replayed and compared with the
  actions the bench recorded (who, what, when, which channel, the answer): every accepted
  raise has exactly one ``hand.raised`` event or found the hand already up (no hand lost),
  no event without its action (none duplicated), nobody twice in the queue, the final queue
  (``GET /api/v1/rooms/{id}/queue``) equal to the replay, in FIFO order of raise time, and
  every position a caller was told equal to the replay's; every call-next the API accepted
  has its ``speaker.called``; every dashboard's queue fragments show the replay's queue at
  their id, each message once and in order, and every dashboard caught up at the end.

Prints figures; never asserts a time.

Usage: .venv/bin/python bench/meeting.py [--callers 250] [--rooms 30x8] [--seconds 60]
       [--dashboards 20] [--keypad star|stream] [--quick]
"""

from __future__ import annotations

# ruff: noqa: E402
import os
import sys

# Run as a script, this folder comes first on sys.path, and bench/queue.py would shadow
# the standard library's queue module (imported by redis). Drop the folder.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.append(_HERE)  # bench/serving.py, found after the standard library

import argparse
import asyncio
import bisect
import contextlib
import gc
import itertools
import json
import math
import platform
import random
import re
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import uvloop
from serving import ACCOUNT_SID, PASSWORD, TOKEN, serve

from handraise.events import Event, parse_id, read_events
from handraise.queue import MAX_PARTICIPANTS, Queue
from handraise.rooms import create_room
from handraise.sim import SimConfig, SimEvent, Simulator
from handraise.store import Redis, client_from_url, find_redis_server, free_port, scratch_redis
from handraise.tokens import create_token

EVENTS_MAXLEN = 1_000_000
THINK_S = 10.0  # mean pause between one caller's actions
PREJOIN_RAISE = 0.2  # share of callers who press *1 in the pre-join window
STEP_TIMEOUT_S = 90.0  # one step of a call (a prompt, a webhook) under load
GOAL_P99_MS = 200.0
TWILIO_TIMEOUT_MS = 15_000.0
SOURCE_OF = {"keypad": "keypad", "prejoin": "prompt", "web": "web"}

PIN = re.compile(r"your PIN is ([\d, ]+?)\.")
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
HAND_IDS = re.compile(rb'data-hand-ids="([^"]*)"')
NUMBER = re.compile(r"number (\d+)")
TAGS = re.compile(r"<[^>]+>")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def figures(values: list[float]) -> str:
    if not values:
        return f"{'n/a':>9}{'n/a':>9}{'n/a':>9}"
    return f"{pct(values, 0.5):9.1f}{pct(values, 0.99):9.1f}{max(values):9.1f}"


def id_ms(event_id: str) -> int:
    return parse_id(event_id)[0]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid``, from /proc (10 ms ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_wait_seconds(pid: int) -> float:
    """Time the threads of ``pid`` were runnable but waited for a CPU (``schedstat``, ns)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def redis_pid(redis_url: str) -> int | None:
    """The scratch redis-server of ``redis_url`` (a child of this process)."""
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    me = os.getpid()
    for child in Path(f"/proc/{me}/task/{me}/children").read_text().split():
        title = Path(f"/proc/{child}/cmdline").read_bytes()
        if b"redis-server" in title and f":{port}".encode() in title:
            return int(child)
    return None


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


# --- what the bench did ------------------------------------------------------------------

@dataclass
class Action:
    """One thing the bench did and what it was answered (times: time.time(), s)."""

    room: str
    pid: str
    what: str  # raise | lower | call-next | done
    channel: str  # keypad | prejoin | web | api
    t0: float
    t1: float
    ok: bool
    answer: str
    position: int | None = None


@dataclass
class Room:
    id: str
    name: str
    access_code: str
    host_code: str
    token: str
    dashboards: list[Dashboard] = field(default_factory=list)
    callers: int = 0


@dataclass
class Run:
    """Everything one scenario shares."""

    sim: Simulator
    public: str
    http: httpx.AsyncClient
    feed: Feed
    keypad: str
    stop_at: float
    rng: random.Random
    actions: list[Action] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    joined: int = 0
    linked: int = 0


# --- the emulator's events, routed per call ----------------------------------------------

WANTED = {"gather-start", "conference", "heard", "call-ended"}


class CallFeed:
    """The events of one call, in order, for the coroutine playing that caller."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[SimEvent] = asyncio.Queue()

    async def until(self, check: Callable[[SimEvent], bool], what: str,
                    timeout: float = STEP_TIMEOUT_S) -> SimEvent:  # noqa: ASYNC109
        """The next event that passes ``check`` (earlier ones are dropped)."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.queue.get()
                if check(event):
                    return event
                if event.kind == "call-ended":
                    raise CallEnded(what)


class CallEnded(Exception):
    pass


class Feed:
    """One subscriber to the emulator's event feed: webhook timings, and per-call queues."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.source = sim.engine.subscribe()
        self.calls: dict[str, CallFeed] = defaultdict(CallFeed)
        #: (path, status, ms, wall time) of each webhook the emulator made.
        self.webhooks: list[tuple[str, int | None, float, float]] = []

    async def run(self) -> None:
        while True:
            event = await self.source.get()
            if event.kind == "webhook":
                d = event.data
                self.webhooks.append((urlsplit(d["url"]).path, d.get("status"),
                                      float(d.get("ms") or 0.0), time.time()))
            elif event.kind in WANTED and event.call_sid is not None:
                self.calls[event.call_sid].queue.put_nowait(event)

    def call(self, sid: str) -> CallFeed:
        return self.calls[sid]


def is_gather(n: int) -> Callable[[SimEvent], bool]:
    return lambda e: e.kind == "gather-start" and e.data.get("num_digits") == n


def joined_conference(e: SimEvent) -> bool:
    return e.kind == "conference" and e.data.get("event") == "participant-join"


def said(starts: tuple[str, ...], kinds: tuple[str, ...] = ("say",)) -> Callable[[SimEvent], bool]:
    return lambda e: (e.kind == "heard" and e.data.get("kind") in kinds
                      and str(e.data.get("text", "")).startswith(starts))


# --- callers ---------------------------------------------------------------------------

def cookie_of(response: httpx.Response, jar: dict[str, str]) -> str:
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        jar[name.strip()] = rest.split(";", 1)[0]
    return "; ".join(f"{k}={v}" for k, v in jar.items())


@dataclass
class Page:
    """A caller's companion page: its cookie and CSRF token."""

    cookie: str
    csrf: str
    jar: dict[str, str]


async def link_page(run: Run, pin: str) -> Page:
    jar: dict[str, str] = {}
    response = await run.http.post(run.public + "/join", data={"pin": pin})
    if response.status_code != 303:
        raise RuntimeError(f"POST /join: HTTP {response.status_code}")
    cookie = cookie_of(response, jar)
    me = await run.http.get(run.public + "/me", headers={"Cookie": cookie})
    cookie = cookie_of(me, jar)
    found = CSRF.search(me.text)
    if me.status_code != 200 or not found:
        raise RuntimeError(f"GET /me: HTTP {me.status_code}, no CSRF token")
    return Page(cookie, found.group(1), jar)


async def web_action(run: Run, room: Room, pid: str, page: Page, what: str) -> None:
    t0 = time.time()
    response = await run.http.post(
        f"{run.public}/me/{what}", data={"csrf_token": page.csrf, "participant": pid},
        headers={"Cookie": page.cookie, "HX-Request": "true", "X-CSRF-Token": page.csrf})
    t1 = time.time()
    page.cookie = cookie_of(response, page.jar)
    text = " ".join(TAGS.sub(" ", response.text).split())
    sentence = next((s for s in ("Your hand is raised. You're next.", "Your hand is raised.",
                                 "Your hand is down.", "You are live", "Still joining")
                     if s in text), text[:80])
    position = None
    if what == "raise" and "Your hand is raised" in text:
        found = NUMBER.search(text.split("Your hand is raised", 1)[1])
        position = int(found.group(1)) if found else 1 if "next" in sentence else None
    run.actions.append(Action(room.id, pid, what, "web", t0, t1, response.status_code == 200,
                              f"HTTP {response.status_code}: {sentence}", position))


async def keypad_action(run: Run, room: Room, pid: str, sid: str, feed: CallFeed, what: str) -> None:
    sim = run.sim
    if run.keypad == "star":
        t0 = time.time()
        sim.press(sid, "*")
        await feed.until(is_gather(1), "the star menu")
        sim.press(sid, "1" if what == "raise" else "2")
        heard = await feed.until(said(("Your hand", "Returning")), "the star-keys answer")
        t1 = time.time()
        await feed.until(joined_conference, "back into the conference")
        text = str(heard.data["text"])
        ok = text.startswith("Your hand is raised" if what == "raise" else "Your hand is down")
    else:
        t0 = time.time()
        sim.press(sid, "*1" if what == "raise" else "*2")
        try:
            heard = await feed.until(said(("Hand raised", "Your hand was"), ("announcement",)),
                                     "the keypad announcement", timeout=20)
            text = str(heard.data["text"])
        except TimeoutError:
            text = "(no announcement within 20 s)"
        t1 = time.time()
        ok = text.startswith("Hand raised" if what == "raise" else "Your hand was lowered")
    found = NUMBER.search(text)
    run.actions.append(Action(room.id, pid, what, "keypad", t0, t1, ok, text,
                              int(found.group(1)) if found and what == "raise" else None))


async def participant(run: Run, room: Room, number: str, start_at: float) -> str | None:
    """One caller from dial-in to the end of the window; their CallSid."""
    await asyncio.sleep(max(0.0, start_at - time.time()))
    rng = random.Random(run.rng.random())
    sim = run.sim
    sid = sim.place_call(number, "+15550109999")
    feed = run.feed.call(sid)
    try:
        await feed.until(is_gather(6), "the code prompt")
        sim.press(sid, room.access_code)
        await feed.until(is_gather(2), "the pre-join window")
        prejoin: tuple[float, float, str] | None = None
        if rng.random() < PREJOIN_RAISE:
            t0 = time.time()
            sim.press(sid, "*1")
            heard = await feed.until(said(("Your hand is raised", "To raise")), "the pre-join answer")
            prejoin = (t0, time.time(), str(heard.data["text"]))
        await feed.until(joined_conference, "the conference")
        run.joined += 1
        pid = str(sim.state(sid)["conference"]["label"])
        if prejoin is not None:
            t0, t1, text = prejoin
            found = NUMBER.search(text)
            run.actions.append(Action(room.id, pid, "raise", "prejoin", t0, t1,
                                      text.startswith("Your hand is raised"), text,
                                      int(found.group(1)) if found else None))
        heard_pin = next((PIN.search(str(t.get("text", ""))) for t in sim.transcript(sid)
                          if PIN.search(str(t.get("text", "")))), None)
        page = None
        if heard_pin is None:
            run.failures.append(f"{number}: no PIN in the transcript")
        else:
            try:
                page = await link_page(run, re.sub(r"\D", "", heard_pin.group(1)))
                run.linked += 1
            except (RuntimeError, httpx.HTTPError) as exc:
                run.failures.append(f"{number}: companion page: {exc!r}")
        while True:
            pause = rng.expovariate(1 / THINK_S)
            if time.time() + pause > run.stop_at:
                break
            await asyncio.sleep(pause)
            what = "raise" if rng.random() < 0.6 else "lower"
            if page is not None and rng.random() < 0.5:
                await web_action(run, room, pid, page, what)
            else:
                await keypad_action(run, room, pid, sid, feed, what)
    except (TimeoutError, CallEnded, httpx.HTTPError) as exc:
        run.failures.append(f"{number}: {type(exc).__name__} waiting for {exc or 'an answer'}")
    return sid


async def host_phone(run: Run, room: Room, number: str) -> str:
    sid = run.sim.place_call(number, "+15550109999")
    feed = run.feed.call(sid)
    await feed.until(is_gather(6), "the host's code prompt")
    run.sim.press(sid, room.host_code)
    await feed.until(joined_conference, "the host's conference")
    run.joined += 1
    return sid


async def host_api(run: Run, room: Room, rng: random.Random) -> None:
    """The host's hand on the API: call on the next hand, let them speak, done."""
    headers = {"Authorization": f"Bearer {room.token}"}
    base = f"{run.public}/api/v1/rooms/{room.id}"
    while time.time() < run.stop_at:
        await asyncio.sleep(rng.uniform(2.0, 4.0))
        for what, pause in (("call-next", rng.uniform(1.0, 2.0)), ("done", 0.0)):
            t0 = time.time()
            try:
                response = await run.http.post(f"{base}/{what}", headers=headers)
            except httpx.HTTPError as exc:
                run.failures.append(f"host {what}: {exc!r}")
                continue
            t1 = time.time()
            body = response.json() if response.headers.get("content-type", "").endswith("json") \
                else {}
            run.actions.append(Action(room.id, str(body.get("participant") or ""), what, "api", t0,
                                      t1, response.status_code == 200 and bool(body.get("ok")),
                                      f"HTTP {response.status_code}: "
                                      f"{body.get('message') or body.get('detail') or ''}"))
            if response.status_code != 200:
                break  # nobody to let speak
            await asyncio.sleep(pause)


# --- dashboards ----------------------------------------------------------------------------

@dataclass
class Message:
    id: str
    at: float
    first: bool  # the first message of a connection: the current state, not a change
    hands: tuple[str, ...] | None  # the queue fragment's hand ids, if it carried one


@dataclass
class Dashboard:
    messages: list[Message] = field(default_factory=list)
    reconnects: int = 0
    errors: list[str] = field(default_factory=list)
    bytes: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)


async def follow(client: httpx.AsyncClient, url: str, cookie: str, dash: Dashboard) -> None:
    """Read one dashboard's event stream; reopen it with Last-Event-ID when it ends."""
    last_id: str | None = None
    retry_s = 1.0
    while True:
        headers = {"Cookie": cookie, "Accept": "text/event-stream"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        try:
            async with client.stream("GET", url, headers=headers) as response:
                if response.status_code != 200:
                    dash.errors.append(f"HTTP {response.status_code}")
                    dash.ready.set()
                    return
                buf = bytearray()
                first = True
                current: Message | None = None
                async for chunk in response.aiter_raw():
                    now = time.time()
                    dash.bytes += len(chunk)
                    start = max(0, len(buf) - 1)
                    buf += chunk
                    while (cut := buf.find(b"\n\n", start)) >= 0:
                        block = bytes(buf[:cut])
                        del buf[:cut + 2]
                        start = 0
                        name = event_id = None
                        for line in block.split(b"\n", 3)[:3]:
                            if line.startswith(b"event: "):
                                name = line[7:].decode()
                            elif line.startswith(b"id: "):
                                event_id = line[4:].decode()
                            elif line.startswith(b"retry: ") and line[7:].isdigit():
                                retry_s = int(line[7:]) / 1000
                        if event_id is None:
                            continue  # a comment or the retry line
                        last_id = event_id
                        if current is None or current.id != event_id:
                            current = Message(event_id, now, first, None)
                            dash.messages.append(current)
                            first = False
                            dash.ready.set()
                        if name == "queue":
                            found = HAND_IDS.search(block)
                            current.hands = tuple(found.group(1).decode().split()) if found else ()
        except httpx.HTTPError as exc:
            dash.errors.append(repr(exc))
        dash.reconnects += 1
        await asyncio.sleep(retry_s)  # what EventSource does before reconnecting


async def host_cookie(client: httpx.AsyncClient, public: str) -> str:
    login = await client.post(public + "/host/login", data={"password": PASSWORD})
    if login.status_code != 303:
        raise SystemExit(f"host sign-in failed: HTTP {login.status_code}")
    return cookie_of(login, {})


# --- the replay and the checks ---------------------------------------------------------

@dataclass
class Replay:
    """A room's queue after each event, rebuilt from the event stream alone."""

    events: list[Event]
    ids: list[tuple[int, int]] = field(default_factory=list)
    queues: list[tuple[str, ...]] = field(default_factory=list)
    raised_at: dict[str, int] = field(default_factory=dict)  # of the hands up at the end
    up: dict[str, list[list[float]]] = field(default_factory=lambda: defaultdict(list))
    raised_twice: int = 0  # a hand.raised for a hand already in the queue
    lowered_unknown: int = 0  # a hand going down that the replay did not have up
    position_off: int = 0  # hand.raised whose position is not the back of the replay's queue
    hand_events: list[Event] = field(default_factory=list)
    #: (from ms, to ms) of each participant's turns as the speaker.
    turns: dict[str, list[list[float]]] = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self) -> None:
        queue: dict[str, int] = {}
        speaker: str | None = None
        for e in self.events:
            ms = id_ms(e.id)
            pid = e.participant or ""
            ended = e.type == "speaker.done" or (e.type == "participant.left"
                                                 and e.data.get("speaker_ended"))
            if (e.type == "speaker.called" or ended) and speaker is not None:
                self.turns[speaker][-1][1] = ms
                speaker = None
            if e.type == "speaker.called":
                speaker = pid
                self.turns[pid].append([ms, math.inf])

            def down(p: str, ms: int = ms) -> None:
                if p in queue:
                    del queue[p]
                    self.up[p][-1][1] = ms
                else:
                    self.lowered_unknown += 1

            hand = True
            if e.type == "hand.raised":
                if pid in queue:
                    self.raised_twice += 1
                else:
                    queue[pid] = int(e.data.get("raised_at", ms))
                    self.up[pid].append([ms, math.inf])
                    if e.data.get("position") != len(queue):
                        self.position_off += 1
            elif e.type == "hand.lowered":
                down(pid)
            elif e.type == "hands.cleared":
                for p in e.data.get("participants", []):
                    down(p)
            elif (e.type == "speaker.called" and e.data.get("from_queue")) or (
                    e.type == "participant.left" and e.data.get("hand_lowered")):
                down(pid)
            else:
                hand = False
            if hand:
                self.hand_events.append(e)
            self.ids.append(parse_id(e.id))
            self.queues.append(tuple(queue))
        self.raised_at = dict(queue)

    @property
    def final(self) -> tuple[str, ...]:
        return self.queues[-1] if self.queues else ()

    def at(self, event_id: str) -> tuple[str, ...]:
        i = bisect.bisect_right(self.ids, parse_id(event_id))
        return self.queues[i - 1] if i else ()

    def was_up(self, pid: str, t0: float, t1: float) -> bool:
        return overlaps(self.up.get(pid, []), t0, t1)

    def was_speaking(self, pid: str, t0: float, t1: float) -> bool:
        return overlaps(self.turns.get(pid, []), t0, t1)


def overlaps(spans: list[list[float]], t0: float, t1: float) -> bool:
    lo, hi = t0 * 1000 - 2, t1 * 1000 + 2
    return any(a <= hi and b >= lo for a, b in spans)


@dataclass
class Tally:
    """Counts over the rooms of a scenario, for the check lines."""

    n: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, **counts: int) -> None:
        for k, v in counts.items():
            self.n[k] += v


def parse_rfc3339_ms(text: str) -> int:
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


async def check_room(run: Run, redis: Redis, room: Room, tally: Tally,
                     fanout: list[float], per_change: list[float]) -> None:
    events = await read_events(redis, room.id)
    replay = Replay(events)
    tally.add(rooms=1, events=len(events), complete=int(bool(events) and events[0].type == "room.created"),
              raised_twice=replay.raised_twice, lowered_unknown=replay.lowered_unknown,
              position_off=replay.position_off, hand_events=len(replay.hand_events))

    # Actions against events: each accepted raise has its one event, or its hand was up.
    raises: dict[tuple[str, str], list[Event]] = defaultdict(list)
    for e in events:
        if e.type == "hand.raised":
            raises[(e.participant or "", str(e.data.get("source")))].append(e)
    used: set[str] = set()
    mine = [a for a in run.actions if a.room == room.id]
    for a in mine:
        if a.what != "raise":
            continue
        tally.add(raises=1, raises_ok=int(a.ok))
        if not a.ok:
            continue
        lo, hi = a.t0 * 1000 - 2, a.t1 * 1000 + 2
        found = [e for e in raises.get((a.pid, SOURCE_OF[a.channel]), [])
                 if lo <= id_ms(e.id) <= hi and e.id not in used]
        if len(found) == 1:
            used.add(found[0].id)
            at_raise = int(found[0].data.get("position", 0))
            # The keypad says the place the raise returned; the page renders a moment later,
            # when hands ahead may have gone (FIFO: never one behind).
            wrong = a.position is not None and (a.position > at_raise if a.channel == "web"
                                                else a.position != at_raise)
            tally.add(with_event=1, told_wrong=int(wrong))
        elif not found and replay.was_up(a.pid, a.t0, a.t1):
            tally.add(already_up=1)
        elif not found:
            tally.add(lost=1)
        else:
            used.update(e.id for e in found)
            tally.add(doubled=1)
    tally.add(orphans=sum(e.id not in used for es in raises.values() for e in es),
              raised_events=sum(len(es) for es in raises.values()))

    # The host's turns: every call-next the API accepted has its speaker.called.
    called = [e for e in events if e.type == "speaker.called" and e.data.get("by") == "host"]
    accepted = [a for a in mine if a.what == "call-next" and a.ok]
    matched = sum(any(e.participant == a.pid and a.t0 * 1000 - 2 <= id_ms(e.id) <= a.t1 * 1000 + 2
                      for e in called) for a in accepted)
    # Calling on whoever speaks already changes nothing, so no event: that is right too.
    again = sum(not any(e.participant == a.pid and a.t0 * 1000 - 2 <= id_ms(e.id) <= a.t1 * 1000 + 2
                        for e in called) and replay.was_speaking(a.pid, a.t0, a.t1)
                for a in accepted)
    tally.add(call_next=sum(a.what == "call-next" for a in mine), call_next_ok=len(accepted),
              call_next_matched=matched, call_next_again=again, speaker_called=len(called))

    # The final queue, as the API gives it, against the replay.
    response = await run.http.get(f"{run.public}/api/v1/rooms/{room.id}/queue",
                                  headers={"Authorization": f"Bearer {room.token}"})
    hands = response.json()["hands"]
    api_pids = tuple(h["participant"] for h in hands)
    api_times = [parse_rfc3339_ms(h["raised_at"]) for h in hands]
    tally.add(final_hands=len(api_pids), final_equal=int(api_pids == replay.final),
              final_unique=int(len(set(api_pids)) == len(api_pids)),
              fifo=int(api_times == sorted(api_times)
                       and all(abs(t - replay.raised_at.get(p, -10**9)) <= 1
                               for p, t in zip(api_pids, api_times, strict=True))))

    # The dashboards.
    last_hand = replay.hand_events[-1].id if replay.hand_events else "0-0"
    for dash in room.dashboards:
        ids = [parse_id(m.id) for m in dash.messages]
        queue_msgs = [m for m in dash.messages if m.hands is not None]
        tally.add(dashboards=1, messages=len(dash.messages),
                  out_of_order=sum(b <= a for a, b in itertools.pairwise(ids)),
                  queue_fragments=len(queue_msgs),
                  fragment_wrong=sum(m.hands != replay.at(m.id) for m in queue_msgs),
                  caught_up=int(bool(ids) and ids[-1] >= parse_id(last_hand)
                                and bool(queue_msgs) and queue_msgs[-1].hands == replay.final),
                  reconnects=dash.reconnects, dash_bytes=dash.bytes)
        fanout.extend((m.at - id_ms(m.id) / 1000) * 1000 for m in dash.messages if not m.first)
        changes = [m for m in dash.messages if not m.first]
        change_ids = [parse_id(m.id) for m in changes]
        for e in replay.hand_events:
            i = bisect.bisect_left(change_ids, parse_id(e.id))
            if i < len(changes):
                per_change.append((changes[i].at - id_ms(e.id) / 1000) * 1000)


async def dump(where: Path, redis: Redis, rooms: list[Room], run: Run) -> None:
    for room in rooms:
        data = {
            "events": [e.to_dict() for e in await read_events(redis, room.id)],
            "actions": [vars(a) for a in run.actions if a.room == room.id],
            "dashboards": [[vars(m) for m in d.messages] for d in room.dashboards],
            "webhooks": run.feed.webhooks,
        }
        write_json(where / f"{room.id}.json", data)


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_checks(t: Tally, dashboards: bool) -> None:
    n = t.n
    print("   checks (the room's events replayed against the bench's own record of its actions)")
    print(f"   {verdict(n['complete'] == n['rooms'])} event streams complete: {n['complete']} of "
          f"{n['rooms']} rooms still start at room.created ({n['events']} events)")
    print(f"   {verdict(n['lost'] == 0 and n['doubled'] == 0)} no hand lost: of {n['raises_ok']} "
          f"accepted raises ({n['raises']} made), {n['with_event']} have exactly one hand.raised, "
          f"{n['already_up']} found the hand already up, {n['lost']} neither, {n['doubled']} more "
          "than one")
    print(f"   {verdict(n['orphans'] == 0 and n['raised_twice'] == 0)} none duplicated: "
          f"{n['raised_events']} hand.raised events, {n['orphans']} without an action of theirs, "
          f"{n['raised_twice']} for a hand already up")
    print(f"   {verdict(n['final_unique'] == n['rooms'] and n['lowered_unknown'] == 0)} nobody twice "
          f"in the queue: final queues unique in {n['final_unique']} of {n['rooms']} rooms; "
          f"{n['lowered_unknown']} hands went down that the replay did not have up")
    print(f"   {verdict(n['final_equal'] == n['rooms'])} final queue (GET /api/v1/rooms/{{id}}/queue) "
          f"= the replay in {n['final_equal']} of {n['rooms']} rooms ({n['final_hands']} hands up)")
    print(f"   {verdict(n['fifo'] == n['rooms'] and n['position_off'] == 0 and n['told_wrong'] == 0)} "
          f"FIFO: final queues in raise-time order with the replay's raise times in {n['fifo']} of "
          f"{n['rooms']} rooms; {n['position_off']} hand.raised positions off the back of the "
          f"queue; {n['told_wrong']} callers told another place than their event's")
    print(f"   {verdict(n['call_next_matched'] + n['call_next_again'] == n['call_next_ok'])} host "
          f"turns: {n['call_next_ok']} of {n['call_next']} call-next accepted, "
          f"{n['call_next_matched']} with their speaker.called, {n['call_next_again']} calling on "
          f"the caller already speaking ({n['speaker_called']} speaker.called events)")
    if dashboards:
        print(f"   {verdict(n['fragment_wrong'] == 0 and n['out_of_order'] == 0)} dashboards show "
              f"the replay: {n['queue_fragments']} queue fragments on {n['dashboards']} streams, "
              f"{n['fragment_wrong']} differ from the replay at their id; {n['messages']} messages, "
              f"{n['out_of_order']} repeated or out of order")
        print(f"   {verdict(n['caught_up'] == n['dashboards'])} every dashboard caught up: "
              f"{n['caught_up']} of {n['dashboards']} show the final queue after the last hand "
              f"change; {n['reconnects']} reconnections; "
              f"{n['dash_bytes'] / max(1, n['dashboards']) / 1e6:.1f} MB read per stream")


# --- a scenario ------------------------------------------------------------------------------

def webhook_table(webhooks: list[tuple[str, int | None, float, float]], since: float) -> None:
    by_path: dict[str, list[float]] = defaultdict(list)
    bad: dict[str, int] = defaultdict(int)
    for path, status, ms, at in webhooks:
        if at < since:
            continue
        if status is None:  # no answer at all: counted, not timed
            bad[path] += 1
            by_path.setdefault(path, [])
            continue
        by_path[path].append(ms)
        if status != 200:
            bad[path] += 1
    every = [ms for v in by_path.values() for ms in v]
    print("   webhook latency, emulator -> app (request sent to answer read; the emulator shares "
          "this process with the load)")
    print(f"   {'URL':<30}{'n':>7}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'>200ms':>8}{'>15s':>6}"
          f"{'non-200':>8}")
    for path in sorted(by_path, key=lambda p: -len(by_path[p])):
        v = by_path[path] or [math.nan]
        print(f"   {path:<30}{len(v):>7}{figures(v)}{sum(x > GOAL_P99_MS for x in v):>8}"
              f"{sum(x > TWILIO_TIMEOUT_MS for x in v):>6}{bad[path]:>8}")
    if every:
        incoming = by_path.get("/voice/incoming", [])
        callbacks = by_path.get("/voice/conference-events", [])
        print(f"   {'all webhooks':<30}{len(every):>7}{figures(every)}"
              f"{sum(x > GOAL_P99_MS for x in every):>8}{sum(x > TWILIO_TIMEOUT_MS for x in every):>6}"
              f"{sum(bad.values()):>8}")
        for label, v in (("/voice/incoming", incoming), ("conference callbacks", callbacks),
                         ("all", every)):
            if v:
                p99 = pct(v, 0.99)
                print(f"   goal p99 <= {GOAL_P99_MS:.0f} ms, {label}: {p99:.1f} ms, "
                      f"{'met' if p99 <= GOAL_P99_MS else 'NOT met'}")


def server_side(metrics: str) -> str:
    """The voice group's handler-time histogram from /metrics: share within 0.1 s and 0.2 s."""
    buckets: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith("handraise_http_request_seconds_bucket") and 'group="voice"' in line:
            le = re.search(r'le="([^"]+)"', line)
            if le:
                buckets[le.group(1)] = float(line.rsplit(" ", 1)[1])
    total = buckets.get("+Inf", 0.0)
    if not total:
        return "no voice requests in GET /metrics"
    parts = [f"{buckets.get(le, 0) / total * 100:.1f} % within {float(le) * 1000:.0f} ms"
             for le in ("0.05", "0.1", "0.2", "0.5") if le in buckets]
    return f"{int(total)} voice requests: " + ", ".join(parts)


async def scenario(title: str, redis_url: str, public: str, sim_port: int, app_pid: int,
                   layout: list[int], dash_per_room: int, args: argparse.Namespace, *,
                   overflow: bool) -> None:
    print(f"\n== {title}")
    print(f"   load average at start: {load()}; handraise serve is process {app_pid}", flush=True)
    rpid = redis_pid(redis_url)
    redis = client_from_url(redis_url)
    config = SimConfig(voice_url=public + "/voice/incoming", account_sid=ACCOUNT_SID,
                       auth_token=TOKEN, port=sim_port, media_time_scale=1.0, wait_time_scale=1.0,
                       seed=11, background="silence")
    jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))  # cookies sent by hand
    # Idle connections close before the server's keep-alive timeout (hypercorn's is 5 s), or a
    # request can race the server's close and fail as a browser's would not.
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200, keepalive_expiry=2.0)
    rng = random.Random(7)
    async with Simulator(config) as sim, \
            httpx.AsyncClient(limits=limits, timeout=60.0, trust_env=False, cookies=jar) as http, \
            httpx.AsyncClient(limits=httpx.Limits(max_connections=dash_per_room * len(layout) + 4),
                              timeout=httpx.Timeout(30.0, read=None), trust_env=False,
                              cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
                              ) as sse_client:
        feed = Feed(sim)
        feeder = asyncio.create_task(feed.run())
        rooms: list[Room] = []
        for i, callers in enumerate(layout):
            created = await create_room(redis, f"Bench meeting {i + 1}", maxlen=EVENTS_MAXLEN,
                                        keypad_mode=args.keypad, end_on_host_exit=False)
            secret, _ = await create_token(redis, f"bench host {i + 1}", room=created.room.id,
                                           rate_per_min=100_000)
            rooms.append(Room(created.room.id, created.room.name, created.room.access_code,
                              created.host_code, secret, callers=callers))
        run = Run(sim, public, http, feed, args.keypad, math.inf, rng)
        readers: list[asyncio.Task[None]] = []
        for room in rooms:
            for _ in range(dash_per_room):
                dash = Dashboard()
                room.dashboards.append(dash)
                cookie = await host_cookie(sse_client, public)
                readers.append(asyncio.create_task(follow(
                    sse_client, f"{public}/host/rooms/{room.id}/events", cookie, dash)))
        await asyncio.wait_for(asyncio.gather(*(d.ready.wait() for r in rooms
                                                for d in r.dashboards)), 60)
        # No full collections in this process while it measures: its heap grows with the
        # emulator's event log, and one full collection stalled this loop 80-155 ms, every
        # webhook in flight timed that much slower (the app is another process; its own
        # collections count). Young collections go on; all is set back after the run.
        gc.collect()
        gc.freeze()
        thresholds = gc.get_threshold()
        gc.set_threshold(thresholds[0], thresholds[1], 1_000_000_000)
        # The hosts first: their call starts the conference.
        await asyncio.gather(*(host_phone(run, r, f"+1555{k:03d}0000") for k, r in enumerate(rooms)))
        t_start = time.time()
        cpu0 = (cpu_seconds(app_pid), cpu_seconds(rpid) if rpid else 0.0, time.process_time())
        wait0 = cpu_wait_seconds(app_pid)
        run.stop_at = t_start + args.seconds + args.tail
        plan = [(r, f"+1555{k:03d}{j:04d}") for k, r in enumerate(rooms) for j in range(1, r.callers)]
        rng.shuffle(plan)
        spacing = args.seconds / max(1, len(plan))
        tasks = [asyncio.create_task(participant(run, r, number, t_start + n * spacing))
                 for n, (r, number) in enumerate(plan)]
        tasks += [asyncio.create_task(host_api(run, r, random.Random(k))) for k, r in enumerate(rooms)]
        await asyncio.gather(*tasks)
        t_load = time.time() - t_start
        cpu1 = (cpu_seconds(app_pid), cpu_seconds(rpid) if rpid else 0.0, time.process_time())
        app_cpu, redis_cpu, bench_cpu = (100 * (b - a) / t_load for a, b in zip(cpu0, cpu1, strict=True))
        app_wait = 100 * (cpu_wait_seconds(app_pid) - wait0) / t_load
        load_end = load()

        # Settle: the emulator's callback queues drained, then no webhook for a second.
        async with asyncio.timeout(60):
            while True:
                backlog = sum(c.callbacks.qsize() for c in sim.engine.conferences.values())
                quiet = not feed.webhooks or time.time() - feed.webhooks[-1][3] > 1.0
                if backlog == 0 and quiet:
                    break
                await asyncio.sleep(0.2)  # polling the emulator's queues; they signal nothing
        await asyncio.sleep(2.0)  # let the dashboards receive the last changes
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        gc.set_threshold(*thresholds)
        gc.unfreeze()

        counts: dict[tuple[str, str], int] = defaultdict(int)
        for a in run.actions:
            counts[(a.what, a.channel)] += 1
        print(f"   ran {t_load:.0f} s: {sum(r.callers for r in rooms)} callers in {len(rooms)} "
              f"room{'s' if len(rooms) > 1 else ''} ({run.joined} reached the conference, "
              f"{run.linked} linked a companion page); load average at the end: {load_end}")
        print(f"   CPU over the run, % of one core: app {app_cpu:.0f}, redis {redis_cpu:.0f}, "
              f"this process (emulator and load) {bench_cpu:.0f}; the app was ready to run but "
              f"waited for a CPU {app_wait:.0f} % of the time (schedstat: other processes)")
        print("   actions: " + ", ".join(f"{w} {c} {n}" for (w, c), n in sorted(counts.items())))
        refused: dict[str, int] = defaultdict(int)
        for a in run.actions:
            if not a.ok:
                refused[f"{a.what} ({a.channel}): {a.answer}"] += 1
        if refused:
            print("   answered no: " + "; ".join(f"{n} x {k}" for k, n in
                                                sorted(refused.items(), key=lambda kv: -kv[1])[:6]))
        if run.failures:
            print(f"   {len(run.failures)} callers failed, first: {run.failures[0]}")
        webhook_table(feed.webhooks, 0.0)
        try:
            metrics = (await http.get(public + "/metrics")).text
            print(f"   the app's own handler times (GET /metrics): {server_side(metrics)}")
        except httpx.HTTPError as exc:
            print(f"   GET /metrics failed: {exc!r}")
        fanout: list[float] = []
        per_change: list[float] = []
        tally = Tally()
        for room in rooms:
            await check_room(run, redis, room, tally, fanout, per_change)
        if args.dump:
            await dump(args.dump, redis, rooms, run)
        n_dash = sum(len(r.dashboards) for r in rooms)
        print(f"   fan-out to {n_dash} dashboards (SSE arrival - the event's stream id ms)")
        print(f"   {'':<44}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
        print(f"   {'  each message on each stream':<44}{figures(fanout)}")
        print(f"   {'  each hand change, to each stream':<44}{figures(per_change)}")
        print_checks(tally, n_dash > 0)
        if overflow:
            await one_too_many(run, redis, rooms[0])
        feeder.cancel()
    await redis.aclose()


async def one_too_many(run: Run, redis: Redis, room: Room) -> None:
    """Dial one caller more than the room holds and print what they heard.

    Seats left empty (a --quick run, callers who failed on the way) are filled directly
    through ``Queue`` first, as tests/phone/test_webhooks.py does.
    """
    queue = Queue(redis)
    present = await redis.scard(f"hr:{{{room.id}}}:participants")
    topped = 0
    while present < MAX_PARTICIPANTS:
        await queue.join(room.id, call_sid=f"CA{topped:032x}", label=f"seat{topped}",
                         participant_id=f"seat{topped}", cap=MAX_PARTICIPANTS)
        present, topped = present + 1, topped + 1
    sid = run.sim.place_call("+15559990251", "+15550109999")
    feed = run.feed.call(sid)
    t0 = time.time()
    try:
        await feed.until(is_gather(6), "the code prompt")
        run.sim.press(sid, room.access_code)
        await feed.until(lambda e: e.kind == "call-ended", "the end of the call", timeout=120)
    except (CallEnded, TimeoutError) as exc:
        print(f"   the caller over the limit: {type(exc).__name__} waiting for {exc}")
    heard = [str(t.get("text")) for t in run.sim.transcript(sid) if t["kind"] == "say"]
    errors = [f"{e['code']} {e['message']}" for e in run.sim.state(sid)["errors"]]
    print(f"   caller number {present + 1} ({present} in the room"
          f"{f', {topped} seats filled through Queue' if topped else ''}), after "
          f"{time.time() - t0:.1f} s, last heard: {heard[-1] if heard else '(nothing)'!r}")
    full = bool(heard) and heard[-1].startswith("This meeting is full")
    print(f"   {verdict(full and not errors)} the caller over the limit is told the meeting is full "
          f"and hung up on (call {run.sim.state(sid)['status']}; emulator errors: "
          f"{'; '.join(errors) or 'none'})")


# --- the run ---------------------------------------------------------------------------------

def parse_rooms(text: str) -> tuple[int, int]:
    found = re.fullmatch(r"(\d+)x(\d+)", text)
    if not found:
        raise argparse.ArgumentTypeError("--rooms is ROOMSxCALLERS, e.g. 30x8")
    return int(found.group(1)), int(found.group(2))


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
                 platform.machine())
    return (f"machine: {os.cpu_count()} cores ({model}), Linux {platform.release()}, "
            f"load average {load()} at start; Python {platform.python_version()}, "
            f"redis-server at {find_redis_server()}")


def stack(tmp: Path, name: str) -> tuple[contextlib.ExitStack, str, str, int, int]:
    """A fresh redis-server and handraise serve, its REST pointed at an emulator port."""
    exits = contextlib.ExitStack()
    redis_url = exits.enter_context(scratch_redis(tmp))
    sim_port = free_port()
    public, proc = exits.enter_context(serve(
        redis_url, free_port(), log_path=tmp / f"serve-{name}.log",
        env={"HANDRAISE_TWILIO_API_URL": f"http://127.0.0.1:{sim_port}",
             "HANDRAISE_EVENTS_MAXLEN": str(EVENTS_MAXLEN)}))
    return exits, redis_url, public, sim_port, proc.pid


def app_log(path: Path) -> str:
    lines = path.read_text(errors="replace").splitlines()
    noted = [line for line in lines if " WARNING " in line or " ERROR " in line]
    out = f"   app log: {len(noted)} warnings or errors" + (f", first: {noted[0]}" if noted else "")
    first_error = next((i for i, line in enumerate(lines) if " ERROR " in line), None)
    if first_error is not None:  # with its traceback
        out += "\n   first error:\n" + "\n".join("     " + line for line in
                                                  lines[first_error:first_error + 30])
    return out


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=MAX_PARTICIPANTS,
                        help="callers of the big room, its host's call included (default 250)")
    parser.add_argument("--rooms", type=parse_rooms, default=(30, 8),
                        help="ROOMSxCALLERS for the many-rooms scenario (default 30x8)")
    parser.add_argument("--seconds", type=float, default=60.0, help="the dial-in window")
    parser.add_argument("--tail", type=float, default=40.0,
                        help="how long callers go on acting after the dial-in window (a caller "
                             "needs some 25 s of prompts and PIN to get into the conference)")
    parser.add_argument("--dashboards", type=int, default=20, help="open on the big room")
    parser.add_argument("--keypad", choices=("star", "stream"), default="star")
    parser.add_argument("--only", choices=("big", "many"), help="run one of the two scenarios")
    parser.add_argument("--dump", type=Path, help="write the events, actions and dashboard "
                        "messages of each room to this directory (JSON), for a closer look")
    parser.add_argument("--quick", action="store_true",
                        help="a short run: 20 callers, 3x4 rooms, 15 s + 35 s, 5 dashboards")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.quick:
        args.callers, args.rooms, args.seconds, args.tail, args.dashboards = 20, (3, 4), 15.0, 35.0, 5
    n_rooms, per_room = args.rooms
    print(machine())
    print(f"parameters: --callers {args.callers} --rooms {n_rooms}x{per_room} --seconds "
          f"{args.seconds:g} --tail {args.tail:g} --dashboards {args.dashboards} --keypad "
          f"{args.keypad}; one app process; the emulator and the load share this process")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name, title, layout, dashes, overflow in (
                ("big", f"1. one room, {args.callers} callers (the host's call and "
                        f"{args.callers - 1} participants), {args.keypad} keypad, dial-in over "
                        f"{args.seconds:g} s, actions until {args.seconds + args.tail:g} s",
                 [args.callers], args.dashboards, True),
                ("many", f"2. {n_rooms} rooms x {per_room} callers at once (a host and "
                         f"{per_room - 1} participants each), {args.keypad} keypad, same timing",
                 [per_room] * n_rooms, 1, False),
            ):
                if args.only and name != args.only:
                    continue
                workdir = Path(tmp) / name
                workdir.mkdir()
                exits, redis_url, public, sim_port, app_pid = stack(workdir, name)
                with exits:
                    uvloop.run(scenario(title, redis_url, public, sim_port, app_pid, layout, dashes,
                                        args,
                                        overflow=overflow))
                print(app_log(workdir / f"serve-{name}.log"))
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
