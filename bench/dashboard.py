"""Host dashboard: key release -> hand on the page, and server CPU per open dashboard.

1. Key release -> hand visible. One ``stream``-mode room, the Twilio emulator streaming media
   in real time (``media_time_scale=1.0``), a host and a caller in the conference, and a
   signed-in headless Chromium page on ``/host/rooms/<room>``. For each of N presses the
   caller presses ``*1``; the figure is the time from the release of the ``1`` to the
   ``<li id="hand-<pid>">`` appearing in the page's DOM (a MutationObserver). Then ``*2``
   lowers the hand, the li goes, and the next press follows. The decoder acts when the last
   key *starts*, so the figure is usually negative; the same is printed from the tone's
   start too. App, emulator and the bench share one process and event loop
   (``tests/e2e/phonekit.py``); Chromium is its own.
2. Server CPU per open dashboard. ``handraise serve`` in its own process against a scratch
   redis-server; its CPU (the process's CPU clock) over S seconds with (a) no dashboard open,
   (b) D dashboards' SSE streams (``/host/rooms/<room>/events``) open and idle, (c) the same
   D streams while 10 hands rise and fall per minute (``Queue`` calls from this process).
   Also in (c): each stream's count of the changes it received, and the fan-out latency from
   the ``Queue`` call's return to the ``queue`` fragment reaching each stream. A stream the
   server ends is reopened with ``Last-Event-ID``, as a browser would, and counted.

Prints figures; never asserts a time.

Usage: .venv/bin/python bench/dashboard.py [--presses 50] [--dashboards 100] [--seconds 60] [--quick]
"""

from __future__ import annotations

# ruff: noqa: E402
import os
import sys

# Run as a script, this folder comes first on sys.path, and bench/queue.py would shadow
# the standard library's queue module (imported by redis). Drop the folder.
_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.append(_HERE)  # bench/serving.py, found after the standard library
# The served phone stack and the signed-in page of the e2e and browser tests.
sys.path[:0] = [os.path.join(_ROOT, "tests", "e2e"), os.path.join(_ROOT, "tests", "browser")]

import argparse
import asyncio
import contextlib
import platform
import random
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
from browserkit import open_signed_in
from phonekit import Stack, phone_stack
from playwright.async_api import Page, async_playwright
from serving import PASSWORD, serve

from handraise.events import Event, last_event_id
from handraise.queue import Queue
from handraise.rooms import create_room
from handraise.sim.media import FRAME_SAMPLES, MediaStream
from handraise.store import client_from_url, find_redis_server, free_port, key, scratch_redis

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: As tests/browser/conftest.py launches it (without these, Chromium dials Google's hosts).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required"]

HANDS_PER_MINUTE = 10

#: Installed in the dashboard: reports each hand li's arrival and departure with the
#: browser's wall clock. Playwright's evaluate is not page script, so the page's CSP
#: (no inline script) does not apply to it: no ``bypass_csp`` needed.
OBSERVER_JS = """
() => {
  let shown = new Set();
  const scan = () => {
    const now = performance.timeOrigin + performance.now();
    const ids = new Set(Array.from(
      document.querySelectorAll('#queue ol.hands > li[id^="hand-"]'), li => li.id));
    for (const id of ids) if (!shown.has(id)) window.benchHand(id, "up", now);
    for (const id of shown) if (!ids.has(id)) window.benchHand(id, "down", now);
    shown = ids;
  };
  new MutationObserver(scan).observe(document.documentElement, {childList: true, subtree: true});
  scan();
}
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def figures(values: list[float]) -> str:
    if not values:
        return f"{'n/a':>9}{'n/a':>9}{'n/a':>9}"
    return f"{pct(values, 0.5):9.1f}{pct(values, 0.99):9.1f}{max(values):9.1f}"


# --- 1. key release -> hand visible ------------------------------------------------------

@dataclass
class KeyTimes:
    """Wall-clock moments (time.time()) the emulator sent the `1` tone's first and last frame."""

    tone_start: float
    release: float


@dataclass
class Press:
    """One ``*1``: its key times, the raise's Redis timestamp, the li's arrival (all wall, s)."""

    keys: KeyTimes
    raised: float
    shown: float


def ms(seconds: float) -> float:
    return seconds * 1000


def tone_spans(audio: npt.NDArray[np.float64]) -> list[tuple[int, int]]:
    """(first, end) sample of each tone in the emulator's keypad audio (gaps are exact zeros)."""
    on = np.flatnonzero(audio != 0.0)
    breaks = np.flatnonzero(np.diff(on) > 8)  # a zero crossing is not a gap; 1 ms is
    starts = [int(on[0]), *(int(on[b + 1]) for b in breaks)]
    ends = [*(int(on[b]) + 1 for b in breaks), int(on[-1]) + 1]
    return list(zip(starts, ends, strict=True))


async def press_and_time(stack: Stack, sid: str, stream: MediaStream, keys: str) -> KeyTimes:
    """Press ``keys``; return when the emulator sent the frames holding the last key's tone.

    Key release is taken from the emulator itself: the tone lengths from the audio it
    synthesised for this press (``stream._pending``: random 70-110 ms tones, 70-130 ms gaps),
    and the moment from its frame counter (``frames_sent``, polled every ms), i.e. when the
    frame that holds the last sample of the tone left for the app. Twilio sends a frame once
    its 20 ms are captured, the emulator at their start: this moment is up to 20 ms earlier
    than Twilio's would be, never later.
    """
    # Private state of the emulator's stream, read only: frames built so far (each build
    # takes audio from the pending queue) and samples still queued from earlier presses.
    built = stream._bg_index
    backlog = sum(len(a) for a in stream._pending) - stream._pending_offset
    stack.sim.press(sid, keys)
    audio = stream._pending[-1]
    first, end = tone_spans(audio)[-1]
    frame_of = [built + 1 + (backlog + s) // FRAME_SAMPLES for s in (first, end - 1)]
    moments = []
    deadline = time.monotonic() + 10
    for n in frame_of:
        while stream.frames_sent < n:
            if time.monotonic() > deadline:
                raise TimeoutError("the emulator stopped streaming")
            await asyncio.sleep(0.001)  # polling the emulator's counter; it signals nothing
        moments.append(time.time())
    return KeyTimes(*moments)


class DomWatch:
    """Hand li arrivals and departures as the page's observer reports them."""

    def __init__(self) -> None:
        self._waiting: dict[tuple[str, str], asyncio.Future[float]] = {}

    def report(self, hand_id: str, change: str, at_ms: float) -> None:
        future = self._waiting.pop((hand_id, change), None)
        if future is not None and not future.done():
            future.set_result(at_ms / 1000)

    def expect(self, hand_id: str, change: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiting[(hand_id, change)] = future
        return future


async def clock_offset(page: Page) -> tuple[float, float]:
    """Browser wall clock minus Python's, and the uncertainty (half the round trip), in ms."""
    best: tuple[float, float] | None = None
    for _ in range(5):
        t0 = time.time()
        js = await page.evaluate("() => performance.timeOrigin + performance.now()")
        t1 = time.time()
        here = (js / 1000 - (t0 + t1) / 2) * 1000, (t1 - t0) / 2 * 1000
        if best is None or here[1] < best[1]:
            best = here
    assert best is not None
    return best


async def join_call(stack: Stack, code: str, number: str) -> tuple[str, str]:
    """``Stack.join`` with deadlines for real-time prompts (the pre-join window speaks the PIN)."""
    sid = stack.sim.place_call(number, "+15550109999")
    await stack.sim.wait_event("gather-start", call_sid=sid, num_digits=6, timeout=60)
    stack.sim.press(sid, code)
    await stack.sim.wait_event("conference", call_sid=sid, event="participant-join", timeout=60)
    return sid, stack.sim.state(sid)["conference"]["label"]


async def bench_keypad(redis_url: str, presses: int) -> None:
    assert CHROMIUM is not None
    async with phone_stack(redis_url, media_time_scale=1.0, background="noise") as stack:
        created = await create_room(stack.redis, "Dashboard bench", keypad_mode="stream")
        room = created.room
        await join_call(stack, created.host_code, "+15550100000")
        sid, pid = await join_call(stack, room.access_code, "+15550104821")
        [stream] = [s for s in stack.sim.call(sid).streams.values() if isinstance(s, MediaStream)]
        events = key(room.id, "events")
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                               headless=True)
            try:
                watched = await open_signed_in(browser, stack.served.base_url,
                                               f"/host/rooms/{room.id}")
                page = watched.page
                watch = DomWatch()
                await page.expose_function("benchHand", watch.report)
                await page.evaluate(OBSERVER_JS)
                offset_before = await clock_offset(page)
                rng = random.Random(5)
                runs: list[Press] = []
                for _ in range(presses):
                    up = watch.expect(f"hand-{pid}", "up")
                    keys = await press_and_time(stack, sid, stream, "*1")
                    shown = await asyncio.wait_for(up, 15)
                    # The raise as Redis stamped it (its clock is this machine's too).
                    raised = next(
                        e.at / 1000 for e in (Event.from_entry(i, f) for i, f in
                                              await stack.redis.xrevrange(events, count=20))
                        if e.type == "hand.raised" and e.participant == pid)
                    runs.append(Press(keys, raised, shown))
                    down = watch.expect(f"hand-{pid}", "down")
                    await press_and_time(stack, sid, stream, "*2")
                    await asyncio.wait_for(down, 15)
                    # Presses at uneven moments, not in step with the 20 ms frames.
                    await asyncio.sleep(rng.uniform(0.2, 0.6))
                offset_after = await clock_offset(page)
                problems = list(watched.problems)
                await watched.context.close()
            finally:
                await browser.close()
    print(f"\n1. key release -> hand visible on the dashboard ({presses} presses of *1, each "
          f"lowered with *2)")
    print("   key release: when the emulator sent the frame holding the last sample of the 1's "
          "tone (its frame counter, tone lengths from its own audio; up to 20 ms earlier than "
          "Twilio would)")
    print("   start of the 1 tone: when the frame holding its first sample was sent; "
          "hand visible: a MutationObserver in the page, performance.timeOrigin + now()")
    print(f"   clock check, browser - python: {offset_before[0]:+.2f} ms (±{offset_before[1]:.2f}) "
          f"before, {offset_after[0]:+.2f} ms (±{offset_after[1]:.2f}) after; not corrected")
    print(f"   {'':<44}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    rows = {
        "key release -> li in the DOM": [ms(r.shown - r.keys.release) for r in runs],
        "  release -> hand.raised in Redis (1 ms)": [ms(r.raised - r.keys.release) for r in runs],
        "  hand.raised in Redis -> li in the DOM": [ms(r.shown - r.raised) for r in runs],
        "start of the 1 tone -> li in the DOM": [ms(r.shown - r.keys.tone_start) for r in runs],
        "  the 1 tone itself (start -> release)": [ms(r.keys.release - r.keys.tone_start)
                                                   for r in runs],
    }
    for label, values in rows.items():
        print(f"   {label:<44}{figures(values)}")
    early = sum(r.shown < r.keys.release for r in runs)
    print(f"   {early} of {presses} hands showed before the key's release: the decoder acts when "
          "the last key starts, not when it ends")
    n, worst = max(enumerate(runs, 1), key=lambda p: p[1].shown - p[1].keys.release)
    print(f"   slowest, press {n}: {ms(worst.shown - worst.keys.release):+.1f} ms from release = "
          f"{ms(worst.raised - worst.keys.release):+.1f} to Redis, "
          f"{ms(worst.shown - worst.raised):+.1f} on to the DOM; tone "
          f"{ms(worst.keys.release - worst.keys.tone_start):.0f} ms")
    if problems:
        print(f"   page console errors: {len(problems)}, first: {problems[0]}")


# --- 2. server CPU per open dashboard --------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), to the nanosecond.

    Read through the process's CPU-time clock: on Linux, the id ``clock_getcpuclockid(3)``
    returns is ``(~pid << 3) | 2``. ``/proc/<pid>/stat`` counts 10 ms ticks, too coarse for
    an idle server; it is the fallback.
    """
    try:
        return time.clock_gettime(((~pid) << 3) | 2)
    except OSError:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_pid(port: int) -> int | None:
    """The scratch redis-server on ``port`` (a child of this process)."""
    me = os.getpid()
    for child in Path(f"/proc/{me}/task/{me}/children").read_text().split():
        # redis-server rewrites its title to "…/redis-server 127.0.0.1:PORT".
        title = Path(f"/proc/{child}/cmdline").read_bytes()
        if b"redis-server" in title and re.search(rb"[:\0]%d\b" % port, title):
            return int(child)
    return None


@dataclass
class Dashboard:
    """One open SSE stream: when each ``queue`` fragment (by event id) arrived, and its hands."""

    news: asyncio.Event  # shared by all streams: some fragment arrived
    received: dict[str, tuple[float, str]] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    failed: str | None = None
    reconnects: int = 0
    unavailable: int = 0  # "unavailable" events: the server gave up on this stream
    errors: list[str] = field(default_factory=list)


HAND_IDS = re.compile(r'data-hand-ids="([^"]*)"')


async def follow(client: httpx.AsyncClient, url: str, cookie: str, dash: Dashboard) -> None:
    """Read one dashboard's event stream, noting each queue fragment; the rest is discarded.

    When the stream ends, reconnect after its ``retry:`` with ``Last-Event-ID``, as the
    browser's EventSource does, and count it.
    """
    last_id: str | None = None
    retry_s = 1.0
    while True:
        headers = {"Cookie": cookie, "Accept": "text/event-stream"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        try:
            async with client.stream("GET", url, headers=headers) as response:
                if response.status_code != 200:
                    dash.failed = f"HTTP {response.status_code}"
                    dash.ready.set()
                    return
                name = event_id = ""
                data: list[str] = []
                async for line in response.aiter_lines():
                    if line:
                        field_, _, value = line.partition(":")
                        value = value.removeprefix(" ")
                        if field_ == "event":
                            name = value
                        elif field_ == "id":
                            event_id = last_id = value
                        elif field_ == "retry" and value.isdigit():
                            retry_s = int(value) / 1000
                        elif field_ == "data" and name == "queue":
                            data.append(value)
                        continue
                    if name == "queue":
                        found = HAND_IDS.search("\n".join(data))
                        dash.received[event_id] = (time.time(), found.group(1) if found else "?")
                        dash.ready.set()
                        dash.news.set()
                    elif name == "unavailable":
                        dash.unavailable += 1
                    name, data = "", []
        except httpx.HTTPError as exc:
            dash.errors.append(repr(exc))
        dash.reconnects += 1
        await asyncio.sleep(retry_s)  # what EventSource does before reconnecting


def schedule(n_hands: int) -> list[tuple[str, int]]:
    """Raise and lower ``n_hands`` hands, two or three in the queue at a time (oldest lowered)."""
    if n_hands == 1:
        return [("raise", 0), ("lower", 0)]
    steps = [("raise", 0), ("raise", 1)]
    for i in range(2, n_hands):
        steps += [("lower", i - 2), ("raise", i)]
    return [*steps, ("lower", n_hands - 2), ("lower", n_hands - 1)]


@dataclass
class Phase:
    name: str
    wall: float
    app: float
    redis: float
    bench: float

    def line(self, baseline: Phase | None) -> str:
        pct_ = self.app / self.wall * 100
        ratio = ""
        if baseline is not None:
            base = baseline.app / baseline.wall * 100
            ratio = f"{pct_ / base:9.1f}x" if base > 0 else f"{'n/a (a=0)':>10}"
        return (f"   {self.name:<40}{pct_:9.2f}{self.redis / self.wall * 100:9.2f}"
                f"{self.bench / self.wall * 100:9.2f}{ratio}")


async def measure(name: str, seconds: float, app_pid: int, rpid: int | None,
                  work: Awaitable[None] | None = None) -> Phase:
    """CPU of the app (and, for context, redis and this process) over ``seconds``."""
    def read() -> tuple[float, float, float, float]:
        return (time.monotonic(), cpu_seconds(app_pid), cpu_seconds(rpid) if rpid else 0.0,
                time.process_time())

    start = read()
    if work is None:
        await asyncio.sleep(seconds)  # the phase itself: idle for its length
    else:
        await work
    end = read()
    wall, app, rcpu, bench = (b - a for a, b in zip(start, end, strict=True))
    return Phase(name, wall, app, rcpu, bench)


async def hands_rise_and_fall(redis_url: str, room: str, pids: list[str], seconds: float,
                              changes: list[tuple[str, float, str]]) -> None:
    """Run the schedule over ``seconds``; note (event id, return time, hands after) per change."""
    redis = client_from_url(redis_url)
    queue = Queue(redis)
    steps = schedule(len(pids))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    up: list[str] = []
    try:
        for k, (what, i) in enumerate(steps):
            await asyncio.sleep(max(0.0, t0 + (k + 0.5) * seconds / len(steps) - loop.time()))
            if what == "raise":
                await queue.raise_hand(room, pids[i], source="keypad")
                up.append(pids[i])
            else:
                await queue.lower_hand(room, pids[i], by="keypad")
                up.remove(pids[i])
            returned = time.time()
            # This process is the room's only writer, so its newest event is this change.
            changes.append((await last_event_id(redis, room), returned, " ".join(up)))
        await asyncio.sleep(max(0.0, t0 + seconds - loop.time()))
    finally:
        await redis.aclose()


async def bench_cpu(public: str, app_pid: int, rpid: int | None, redis_url: str,
                    n_dash: int, seconds: float) -> None:
    redis = client_from_url(redis_url)
    room = (await create_room(redis, "CPU bench", keypad_mode="stream")).room
    queue = Queue(redis)
    n_hands = max(1, round(HANDS_PER_MINUTE * seconds / 60))
    pids = [await queue.join(room.id, call_sid=f"CA{i:032x}", label=f"bench{i}",
                             number=f"+1555010{i:04d}") for i in range(n_hands)]
    await redis.aclose()

    limits = httpx.Limits(max_connections=n_dash + 4, max_keepalive_connections=n_dash + 4)
    timeout = httpx.Timeout(10.0, read=None)  # a live stream is quiet for 15 s between keep-alives
    async with httpx.AsyncClient(base_url=public, limits=limits, timeout=timeout,
                                 trust_env=False) as client:
        login = await client.post("/host/login", data={"password": PASSWORD})
        if login.status_code != 303:
            raise SystemExit(f"sign-in failed: HTTP {login.status_code}")
        # Sent by hand: the session cookie is Secure, which httpx keeps off plain http.
        cookie = "; ".join(c.split(";", 1)[0] for c in login.headers.get_list("set-cookie"))

        phases = [await measure("(a) no dashboard open", seconds, app_pid, rpid)]

        news = asyncio.Event()
        dashes = [Dashboard(news) for _ in range(n_dash)]
        url = f"/host/rooms/{room.id}/events"
        opening = time.monotonic()
        readers = [asyncio.create_task(follow(client, url, cookie, d)) for d in dashes]

        def drops() -> tuple[int, int]:
            return sum(d.reconnects for d in dashes), sum(d.unavailable for d in dashes)

        try:
            await asyncio.wait_for(asyncio.gather(*(d.ready.wait() for d in dashes)), 120)
            opening = time.monotonic() - opening
            drop_marks = [drops()]
            failed = [d.failed for d in dashes if d.failed]
            if failed:
                raise SystemExit(f"{len(failed)} of {n_dash} streams failed, first: {failed[0]}")
            phases.append(await measure(f"(b) {n_dash} dashboards, idle", seconds, app_pid, rpid))
            drop_marks.append(drops())
            opened = {eid for d in dashes for eid in d.received}
            changes: list[tuple[str, float, str]] = []
            phases.append(await measure(
                f"(c) {n_dash} dashboards, {HANDS_PER_MINUTE} hands/min", seconds, app_pid, rpid,
                hands_rise_and_fall(redis_url, room.id, pids, seconds, changes)))
            wanted = {eid for eid, _t, _h in changes}
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            # Stragglers, with a deadline.
            while (left := deadline - loop.time()) > 0 and \
                    not all(wanted <= d.received.keys() for d in dashes):
                news.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(news.wait(), left)
            drop_marks.append(drops())
        finally:
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)

    got = [sum(eid in d.received for eid, _t, _h in changes) for d in dashes]
    right = [sum(d.received.get(eid, (0, None))[1] == hands for eid, _t, hands in changes)
             for d in dashes]
    extra = [len(d.received.keys() - wanted - opened) for d in dashes]
    fanout = [(d.received[eid][0] - returned) * 1000
              for eid, returned, _h in changes for d in dashes if eid in d.received]
    last = [max((d.received[eid][0] - returned) * 1000 for d in dashes if eid in d.received)
            for eid, returned, _h in changes if any(eid in d.received for d in dashes)]

    print(f"\n2. server CPU for open dashboards (handraise serve, one process; {seconds:.0f} s per "
          "phase, same run)")
    print(f"   {'phase':<40}{'app %':>9}{'redis %':>9}{'bench %':>9}{'app / (a)':>10}")
    print("   (% of one core, from each process's CPU clock; redis and this bench process, which "
          "reads the streams, for context)")
    for i, phase in enumerate(phases):
        print(phase.line(phases[0] if i else None))
    b, c = phases[1], phases[2]
    per_dash = (b.app - phases[0].app * b.wall / phases[0].wall) / b.wall * 100 / n_dash
    print(f"   idle cost per open dashboard: {per_dash * 1000:.1f} milli-% of a core "
          f"(keep-alive every 15 s, one XREAD reader per room)")
    if changes:
        print(f"   (c) cost per change: {(c.app - b.app * c.wall / b.wall) / len(changes) * 1000:.1f} "
              f"ms of app CPU for {n_dash} streams ({len(changes)} changes)")
    print(f"   changes received per stream: min {min(got)}, max {max(got)} of {len(changes)} "
          f"(with the expected hands: min {min(right)}, max {max(right)}; "
          f"unexpected extra fragments: max {max(extra)})")
    (r0, u0), (r1, u1), (r2, u2) = drop_marks
    print(f"   opening {n_dash} streams at once: all had their first fragment after {opening:.2f} s")
    print(f"   streams the server ended, reopened as EventSource does (of which with an 'unavailable' "
          f"event): opening {r0} ({u0}), (b) {r1 - r0} ({u1 - u0}), (c) {r2 - r1} ({u2 - u1})")
    print(f"   {'':<44}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    print("   fan-out: Queue call returned -> the queue fragment read by this process (all streams "
          "on one event loop)")
    print(f"   {'  each stream':<44}{figures(fanout)}")
    print(f"   {'  the last of the ' + str(n_dash) + ' streams':<44}{figures(last)}")


# --- the run ---------------------------------------------------------------------------

def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
                 platform.machine())
    chromium = "not installed"
    if CHROMIUM:
        out = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, check=False)
        chromium = out.stdout.strip() or "unknown version"
    binary = find_redis_server()
    version = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             check=False).stdout.split()[2:3]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"machine: {os.cpu_count()} cores ({model}), Linux {platform.release()}, "
            f"load average {load} at start\n"
            f"Python {platform.python_version()}, {chromium}, "
            f"redis-server {version[0].removeprefix('v=') if version else '?'} ({binary})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presses", type=int, default=50)
    parser.add_argument("--dashboards", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each CPU phase")
    parser.add_argument("--quick", action="store_true",
                        help="a short run: 10 presses, 20 dashboards, 10 s phases")
    args = parser.parse_args()
    if args.quick:
        args.presses, args.dashboards, args.seconds = 10, 20, 10.0
    print(machine())
    print(f"parameters: --presses {args.presses} --dashboards {args.dashboards} "
          f"--seconds {args.seconds:g}; app, emulator and this script share the machine")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if CHROMIUM is None:
                print("\n1. skipped: Chromium is not installed (Debian: apt-get install chromium)")
            elif args.presses > 0:
                with scratch_redis(Path(tmp)) as redis_url:
                    asyncio.run(bench_keypad(redis_url, args.presses))
            with scratch_redis(Path(tmp)) as redis_url, \
                    serve(redis_url, free_port(), log_path=Path(tmp) / "serve.log") as (public, proc):
                rpid = redis_pid(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
                asyncio.run(bench_cpu(public, proc.pid, rpid, redis_url, args.dashboards,
                                      args.seconds))
            noted = [line for line in (Path(tmp) / "serve.log").read_text(errors="replace").splitlines()
                     if " WARNING " in line or " ERROR " in line]
            print(f"   app log: {len(noted)} warnings or errors" + (f", first: {noted[0]}" if noted else ""))
    except KeyboardInterrupt:
        print("\ninterrupted; servers and browser stopped", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
