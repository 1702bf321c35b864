"""Media Streams at scale: ``handraise serve`` fed like Twilio feeds it, callers pressing *1.

1. In process: what one 20 ms frame costs the keypad path per stream, without sockets:
   the fast frame path (``StreamReader.media_payload``), queueing (``KeypadBank.push``)
   and the batched detector tick, at the run's stream counts.
2. Served: ``handraise serve`` in its own process (pinned to core 0 with ``--workers 1``),
   N signed WebSocket streams from a load generator in another process pinned to core 1
   (picows on uvloop). Every stream sends one 160-byte frame every 20 ms, the streams'
   phases spread over the tick, as Twilio does; comfort noise with, at random moments
   (about one press per stream every ``--press-every`` seconds), a human ``*1``. The bench
   watches Redis for each raised hand (10 ms polls), lowers it again, and prints (the time
   a hand rose is its score in the queue, the raise script's own Redis clock reading, so
   neither the poll interval nor this process's scheduling is counted):

   * server CPU (``/proc/<pid>/stat`` of the serve process tree) over the measured window,
     as % of one core and µs per message;
   * the generator's sent vs intended message rate and its own lateness (so an overloaded
     generator is visible, not mistaken for a fast server);
   * the backlog: bytes waiting unread in the server's sockets (``/proc/net/tcp``), at
     the start and end of the window;
   * key release -> hand raised in Redis, p50/p90/p99/max, and presses answered (each
     counted once, a hand matched to a press only within 2 s of its release; presses at
     least 2 s apart). A frame goes out once its 20 ms were heard, as Twilio sends them,
     so the release is half-way through the frame *before* the one that carries it out;
   * the private announcements: each room is in a conference, so every raise asks
     Twilio's REST API (``bench/twilio_stub.py``, on core 1) to announce it, and the stub
     then fetches the AnnounceUrl from serve, signed, as Twilio does: both are serve's
     work per press, counted in its CPU; the counts are printed;
   * the media frames serve took and dropped (a full queue), from its own stop lines
     (serve logs at INFO, as an operator runs it);
   * server RSS at the start and end of the window, and per stream.

3. The Node reference, in the same run: the seed's design (``bench/node/media_ref.js``: the
   ``ws`` server from the npm registry and a JavaScript Goertzel per stream), pinned to
   core 0, fed by the same generator; its CPU and the ratio handraise / Node.

Never asserts a time. Usage:
  .venv/bin/python bench/media.py [--streams 250,1000] [--seconds 30] [--workers 1,2] [--no-node]
"""

from __future__ import annotations

# ruff: noqa: E402
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.append(_HERE)  # bench/serving.py, found after the standard library

import argparse
import asyncio
import base64
import contextlib
import json
import random
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from serving import ACCOUNT_SID, TOKEN, serve
from twilio.request_validator import RequestValidator

from handraise.config import DEFAULT_MEDIA_READ_BATCH
from handraise.dsp import synth
from handraise.phone.control import set_conference
from handraise.phone.fastmedia import read_batch
from handraise.phone.frames import StreamReader
from handraise.phone.keypad import KeypadBank, KeypadListener
from handraise.phone.streams import note_gather
from handraise.queue import Queue
from handraise.rooms import create_room, update_room
from handraise.store import client_from_url, free_port, key, scratch_redis

FRAME_S = 0.020
ROOM_SIZE = 100


# --- audio and messages --------------------------------------------------------------

def noise_frames(n: int, seed: int = 7) -> list[bytes]:
    rng = np.random.default_rng(seed)
    parts, total = [], 0
    while total < n * 160:
        parts.append(synth.noise(400.0, -60.0, rng=rng))
        parts.append(synth.speech_like(600.0, level_dbm0=-20.0, rng=rng))
        total += 8 * 1000
    return synth.to_frames(np.concatenate(parts))[:n]


TONE_MS, GAP_MS = 90.0, 110.0
ONE_STARTS = int((TONE_MS + GAP_MS) // 20)
"""Index of the frame in which the ``1`` of ``*1`` starts..."""
ONE_ENDS = int((2 * TONE_MS + GAP_MS) // 20)
"""... and of the one in which it ends (the key release)."""


def press_frames(seed: int = 3) -> list[bytes]:
    """``*1`` as a person presses it: 90 ms tones, 110 ms apart."""
    rng = np.random.default_rng(seed)
    audio = synth.dtmf("*1", tone_ms=TONE_MS, gap_ms=GAP_MS, level_dbm0=-10.0, rng=rng)
    return synth.to_frames(audio)


def media_message(frame: bytes, sid: str, i: int) -> str:
    return json.dumps({"event": "media", "sequenceNumber": str(i + 2),
                       "media": {"track": "inbound", "chunk": str(i + 1),
                                 "timestamp": str(20 * i),
                                 "payload": base64.b64encode(frame).decode()},
                       "streamSid": sid}, separators=(",", ":"))


def start_message(sid: str, call_sid: str, room: str, pid: str) -> str:
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": sid,
                       "start": {"accountSid": ACCOUNT_SID, "streamSid": sid, "callSid": call_sid,
                                 "tracks": ["inbound"],
                                 "customParameters": {"room": room, "participant": pid},
                                 "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                                 "channels": 1}}})


# --- 1. in process -------------------------------------------------------------------

def bench_pure(streams: int, ticks: int = 250) -> None:
    frames = noise_frames(ticks)
    sid = "MZ" + "1" * 32
    msgs = [media_message(f, sid, i).encode() for i, f in enumerate(frames)]
    readers, bank, slots = [], KeypadBank(streams), []
    for _ in range(streams):
        reader = StreamReader()
        reader.feed(start_message(sid, "CA" + "2" * 32, "r", "p"))
        readers.append(reader)
        slots.append(bank.join(KeypadListener()))
    t0 = time.process_time()
    for raw in msgs:
        for reader, slot in zip(readers, slots, strict=True):
            payload = reader.media_payload(raw)
            assert payload is not None
            bank.push(slot, payload)
        bank.tick()
    total = time.process_time() - t0
    t0 = time.process_time()
    for raw in msgs:
        for reader in readers:
            reader.media_payload(raw)
    parse = time.process_time() - t0
    n = ticks * streams
    print(f"in process, {streams:>4} streams: {total / n * 1e6:5.2f} µs per stream-frame "
          f"(fast parse + base64 {parse / n * 1e6:4.2f}, queue + batched detection "
          f"{(total - parse) / n * 1e6:4.2f})")


# --- 2. served -------------------------------------------------------------------------

def _tree(pid: int) -> list[int]:
    out = [pid]
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                out += _tree(int(child))
    return out


def _get_json(url: str, *, wait: bool = False) -> Any:
    """GET ``url``'s JSON; with ``wait``, until the server there listens (at most 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return httpx.get(url, timeout=2.0, trust_env=False).json()
        except httpx.TransportError:
            if not wait or time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # waiting for a process to listen; nothing to wait on


def cpu_seconds(pid: int) -> float:
    total = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    total = 0.0
    for p in _tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
    return total


def unread_bytes(port: int) -> int:
    """Bytes received by the server's sockets on ``port`` and not yet read (the backlog)."""
    total = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                    total += int(fields[4].split(":")[1], 16)
    return total


async def _watch_hands(redis_url: str, rooms: dict[str, list[str]], until: float,
                       seen: list[tuple[str, float]]) -> None:
    redis = client_from_url(redis_url)
    queue = Queue(redis)
    try:
        while time.time() < until:
            async with redis.pipeline(transaction=False) as pipe:
                for room in rooms:
                    pipe.zrange(key(room, "hands"), 0, -1, withscores=True)
                raised = await pipe.execute()
            for room, hands in zip(rooms, raised, strict=True):
                for pid, score in hands:
                    # The score is the raise's own time (µs, Redis's clock, this machine's
                    # wall clock): when the hand rose, not when this poll noticed it.
                    seen.append((pid, score / 1e6))
                    await queue.lower_hand(room, pid, by="host")
            await asyncio.sleep(0.01)
    finally:
        await redis.aclose()


async def _setup(redis_url: str, streams: int) -> tuple[dict[str, list[str]], list[dict[str, str]]]:
    redis = client_from_url(redis_url)
    queue = Queue(redis)
    rooms: dict[str, list[str]] = {}
    plan = []
    room = ""
    for i in range(streams):
        if i % ROOM_SIZE == 0:
            room = (await create_room(redis, f"Bench {i // ROOM_SIZE}")).room.id
            rooms[room] = []
            # In its conference: a raise asks Twilio (bench/twilio_stub.py) to announce it.
            await update_room(redis, room, conference_sid=f"CF{i:032x}")
        call_sid = f"CA{i:032x}"
        pid = await queue.join(room, call_sid=call_sid, label=f"bench{i}")
        await set_conference(redis, room, pid, f"CF{i - i % ROOM_SIZE:032x}")
        # As the pre-join Gather leaves it: keys from now on are pressed in the conference.
        await note_gather(redis, room, pid, "")
        rooms[room].append(pid)
        plan.append({"sid": f"MZ{i:032x}", "call_sid": call_sid, "room": room, "pid": pid})
    await redis.aclose()
    return rooms, plan


def _plan_presses(plan: list[dict[str, Any]], warmup: float, seconds: float, press_every: float) -> None:
    """Press moments (s after the start) of each stream, none in the warm-up; seeded."""
    rng = random.Random(5)
    for p in plan:
        t, presses = warmup, []
        while True:
            # at least 2 s apart: a press never cuts the one before it short
            t += max(2.0, rng.expovariate(1.0 / press_every))
            if t > warmup + seconds - 2.0:
                break
            presses.append(t)
        p["presses"] = presses


NODE_REF = Path(_HERE) / "node" / "media_ref.js"


def node_available() -> str | None:
    """Why the Node reference cannot run here, or None if it can."""
    import shutil

    if shutil.which("node") is None:
        return "node is not installed"
    if not (Path(_HERE).parent / "node_modules" / "ws").is_dir():
        return "the ws package is missing (npm ci)"
    return None


def bench_node(streams: int, seconds: float, press_every: float) -> dict[str, float]:
    """The same load against the seed's design (bench/node/media_ref.js), pinned to core 0."""
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        plan: list[dict[str, Any]] = [{"sid": f"MZ{i:032x}", "call_sid": f"CA{i:032x}", "room": "r",
                                       "pid": f"p{i}"} for i in range(streams)]
        warmup = 4.0
        _plan_presses(plan, warmup, seconds, press_every)
        node = subprocess.Popen(["taskset", "-c", "0", "node", str(NODE_REF), str(port)],
                                stdout=subprocess.PIPE, text=True, cwd=Path(_HERE).parent)
        try:
            assert node.stdout is not None
            node.stdout.readline()  # {"listening": port}
            plan_file, out_file = Path(tmp) / "plan.json", Path(tmp) / "out.json"
            t0 = time.time() + 2.0 + streams / 1000
            plan_file.write_text(json.dumps({
                "url": f"ws://127.0.0.1:{port}/voice/stream", "signature": "-", "t0": t0,
                "seconds": warmup + seconds, "streams": plan}))
            gen = subprocess.Popen(["taskset", "-c", "1", sys.executable, __file__, "--generate",
                                    str(plan_file), str(out_file)])
            time.sleep(max(0.0, t0 + warmup - time.time()))
            c0, m0, w0 = cpu_seconds(node.pid), rss_mb(node.pid), time.time()
            time.sleep(seconds)
            c1, m1, w1 = cpu_seconds(node.pid), rss_mb(node.pid), time.time()
            gen.wait()
            out = json.loads(out_file.read_text())
        finally:
            node.terminate()
            tail, _ = node.communicate(timeout=10)
    counted = json.loads(tail.strip().splitlines()[-1])
    presses = sum(1 for r in out["releases"].values() for _, release in r if release)
    msgs = streams / FRAME_S * (w1 - w0)
    cpu = (c1 - c0) / (w1 - w0) * 100
    print(f"node reference (ws + a JS Goertzel per stream), {streams:>4} streams, pinned to core 0:")
    print(f"  server CPU {cpu:5.1f} % of a core, {(c1 - c0) / msgs * 1e6:5.2f} µs per message; "
          f"generator sent {out['sent_rate'] / out['intended_rate'] * 100:.1f} % of intended; "
          f"{counted['commands']['raise']} raises decoded of {presses} presses; "
          f"RSS {m0:.0f} -> {m1:.0f} MB")
    return {"cpu": cpu}


def bench_served(streams: int, seconds: float, workers: int, press_every: float) -> dict[str, float]:
    setting = os.environ.get("HANDRAISE_MEDIA_READ_BATCH", "auto").strip().lower()
    batch = read_batch(DEFAULT_MEDIA_READ_BATCH if setting == "auto" else int(setting),
                       streams // workers)  # the kernel spreads them about evenly
    batch_label = f"{batch} (auto)" if setting == "auto" else str(batch)
    with tempfile.TemporaryDirectory() as tmp, scratch_redis(Path(tmp)) as redis_url:
        port = free_port()
        rooms, plan = asyncio.run(_setup(redis_url, streams))
        url = f"ws://127.0.0.1:{port}/voice/stream"
        warmup = 4.0
        _plan_presses(plan, warmup, seconds, press_every)
        plan_file = Path(tmp) / "plan.json"
        out_file = Path(tmp) / "out.json"
        pin = ["taskset", "-c", "0"] if workers == 1 else []
        stub_port = free_port()
        stub_url = f"http://127.0.0.1:{stub_port}"
        with contextlib.ExitStack() as stack:
            # Twilio's REST API, on the generator's core; stopped after serve (LIFO).
            stub = stack.enter_context(subprocess.Popen(
                ["taskset", "-c", "1", sys.executable, str(Path(_HERE) / "twilio_stub.py"),
                 str(stub_port), TOKEN]))
            stack.callback(stub.terminate)
            _get_json(stub_url + "/stats", wait=True)
            # INFO, as an operator runs it: one line per stream start and stop, per press.
            serve_log = Path(tmp) / "serve.log"
            _, proc = stack.enter_context(serve(
                redis_url, port, workers=workers, prefix=pin, log_path=serve_log,
                env={"HANDRAISE_LOG_LEVEL": "INFO", "HANDRAISE_TWILIO_API_URL": stub_url}))
            base_rss = rss_mb(proc.pid)  # before any stream: the idle process
            t0 = time.time() + 2.0 + streams / 1000
            plan_file.write_text(json.dumps({
                "url": url, "signature": RequestValidator(TOKEN).compute_signature(url, {}),
                "t0": t0, "seconds": warmup + seconds, "streams": plan}))
            gen = subprocess.Popen(["taskset", "-c", "1", sys.executable, __file__, "--generate",
                                    str(plan_file), str(out_file)])
            seen: list[tuple[str, float]] = []

            async def measure() -> dict[str, float]:
                watcher = asyncio.ensure_future(
                    _watch_hands(redis_url, rooms, t0 + warmup + seconds + 3.0, seen))
                await asyncio.sleep(max(0.0, t0 + warmup - time.time()))
                c0, m0, b0 = cpu_seconds(proc.pid), rss_mb(proc.pid), unread_bytes(port)
                w0 = time.time()
                await asyncio.sleep(seconds / 2)
                mid = rss_mb(proc.pid)
                await asyncio.sleep(seconds / 2)
                c1, m1, b1 = cpu_seconds(proc.pid), rss_mb(proc.pid), unread_bytes(port)
                w1 = time.time()
                await watcher
                return {"cpu": c1 - c0, "wall": w1 - w0, "rss0": m0, "rss_mid": mid, "rss1": m1,
                        "backlog0": b0, "backlog1": b1}

            m = asyncio.run(measure())
            gen.wait()
            twilio = _get_json(stub_url + "/stats")
        # Each stream's stop line: frames the server took, and dropped from a full queue.
        stops = re.findall(r"stopped after (\d+) frames \((\d+) skipped, (\d+) dropped\)",
                           serve_log.read_text(errors="replace"))
        out = json.loads(out_file.read_text())
    releases: dict[str, list[list[float]]] = out["releases"]
    by_pid: dict[str, list[float]] = {}
    for pid, when in seen:
        by_pid.setdefault(pid, []).append(when)
    latencies, from_start, answered, extra = [], [], 0, 0
    for pid, rel in releases.items():
        hands = sorted(by_pid.get(pid, []))
        for one_start, release in sorted(rel):
            if not release:
                continue  # the run ended mid-press
            # the first hand seen after the 1 of this press began (within 2 s of its release:
            # a later one belongs to no press)
            hit = next((h for h in hands if one_start <= h <= release + 2.0), None)
            if hit is not None:
                hands.remove(hit)
                latencies.append((hit - release) * 1000)
                from_start.append((hit - one_start) * 1000)
                answered += 1
        extra += len(hands)
    presses = sum(1 for r in releases.values() for _, release in r if release)
    msgs = streams / FRAME_S * m["wall"]
    lat = np.array(latencies) if latencies else np.array([float("nan")])
    lat0 = np.array(from_start) if from_start else np.array([float("nan")])
    print(f"served, {streams:>4} streams, --workers {workers}, read batch {batch_label}"
          f"{' (serve pinned to core 0)' if workers == 1 else ' (unpinned)'}, "
          f"{seconds:.0f} s window:")
    print(f"  server CPU {m['cpu'] / m['wall'] * 100:5.1f} % of a core, "
          f"{m['cpu'] / msgs * 1e6:5.2f} µs per message")
    print(f"  generator: sent {out['sent_rate']:.0f} msg/s of {out['intended_rate']:.0f} intended "
          f"({out['sent_rate'] / out['intended_rate'] * 100:.1f} %), its lateness p99 "
          f"{out['late_p99_ms']:.1f} ms")
    print(f"  backlog unread in server sockets: {m['backlog0']} B at start, "
          f"{m['backlog1']} B at end (HANDRAISE_MEDIA_READ_BATCH=N leaves up to N ticks of "
          f"messages, about N x 350 B per stream, waiting by design: {streams * 350 * batch} B here)")
    print(f"  key release -> hand in Redis: p50 {np.percentile(lat, 50):.0f} ms, "
          f"p90 {np.percentile(lat, 90):.0f} ms, p99 {np.percentile(lat, 99):.0f} ms, "
          f"max {lat.max():.0f} ms; {answered}/{presses} presses answered, "
          f"{extra} hands without a press")
    print(f"  tone of the 1 starts -> hand in Redis: p50 {np.percentile(lat0, 50):.0f} ms, "
          f"p99 {np.percentile(lat0, 99):.0f} ms (the raise fires while the key is held, so "
          f"release -> hand is negative when it is answered before the release)")
    print(f"  announcements: {twilio['announce_urls']} asked of Twilio (the REST stub) for "
          f"{answered} raises, {twilio['fetched']} AnnounceUrl fetches answered by serve, "
          f"{twilio['fetch_failed']} failed")
    print(f"  server took {sum(int(f) for f, _, _ in stops)} media frames from "
          f"{len(stops)}/{streams} streams' stop lines: "
          f"{sum(int(d) for _, _, d in stops)} dropped (queue full), "
          f"{sum(int(k) for _, k, _ in stops)} skipped (malformed)")
    print(f"  server RSS {m['rss0']:.0f} MB -> {m['rss_mid']:.0f} MB (half-way) -> {m['rss1']:.0f} MB "
          f"over the window ({m['rss1'] * 1024 / streams:.0f} kB per stream in all, "
          f"{(m['rss1'] - base_rss) * 1024 / streams:.0f} kB per stream above the idle process)")
    return {"cpu": m["cpu"] / m["wall"] * 100}


# --- the load generator (a separate process on the other core) ----------------------

def generate(plan_file: str, out_file: str) -> None:
    import picows
    import uvloop

    plan = json.loads(Path(plan_file).read_text())
    noise = noise_frames(500)
    tone = press_frames()

    class Quiet(picows.WSListener):  # type: ignore[misc]
        pass

    noise_b64 = [base64.b64encode(f) for f in noise]
    tone_b64 = [base64.b64encode(f) for f in tone]
    phases = 50  # streams spread over the 20 ms tick, as Twilio spreads them

    class Caller:
        """One stream's socket, its message template and its presses."""

        def __init__(self, i: int, s: dict[str, Any], stats: dict[str, Any]) -> None:
            self.i, self.s = i, s
            self.template = ('{"event":"media","sequenceNumber":"%d","media":{"track":"inbound",'
                             '"chunk":"%d","timestamp":"%d","payload":"%s"},"streamSid":"'
                             + s["sid"] + '"}').encode()
            self.presses = list(s["presses"])
            self.releases = stats["releases"].setdefault(s["pid"], [])
            self.pressing: list[bytes] = []
            self.tone_at = 0
            self.transport: Any = None

        async def connect(self) -> None:
            await asyncio.sleep(max(0.0, plan["t0"] - 1.5 + self.i * 1e-3 - time.time()))
            headers = {"X-Twilio-Signature": plan["signature"]}
            self.transport, _ = await picows.ws_connect(Quiet, plan["url"], extra_headers=headers)
            self.transport.send(picows.WSMsgType.TEXT, json.dumps(
                {"event": "connected", "protocol": "Call", "version": "1.0.0"}).encode())
            self.transport.send(picows.WSMsgType.TEXT, start_message(
                self.s["sid"], self.s["call_sid"], self.s["room"], self.s["pid"]).encode())

        def send(self, k: int) -> None:
            if self.presses and k * FRAME_S >= self.presses[0]:
                self.presses.pop(0)
                self.pressing, self.tone_at = list(tone_b64), 0
            if self.pressing:
                payload = self.pressing.pop(0)
                # A frame goes out once its 20 ms were heard, as Twilio sends them: the 1
                # began at the start of frame ONE_STARTS, and ended (the key's release)
                # half-way through frame ONE_ENDS.
                if self.tone_at == ONE_STARTS:
                    self.releases.append([time.time() - FRAME_S, 0.0])
                elif self.tone_at == ONE_ENDS:
                    self.releases[-1][1] = time.time() - FRAME_S / 2
                self.tone_at += 1
            else:
                payload = noise_b64[(k + self.i) % len(noise_b64)]
            self.transport.send(picows.WSMsgType.TEXT, self.template % (k + 2, k + 1, 20 * k, payload))

        async def stop(self, n: int) -> None:
            self.transport.send(picows.WSMsgType.TEXT, json.dumps(
                {"event": "stop", "sequenceNumber": str(n + 2), "streamSid": self.s["sid"],
                 "stop": {"accountSid": ACCOUNT_SID, "callSid": self.s["call_sid"]}}).encode())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.transport.wait_disconnected(), 5)
            self.transport.disconnect()

    async def main() -> None:
        stats: dict[str, Any] = {"sent": 0, "late": [0.0], "releases": {}}
        callers = [Caller(i, s, stats) for i, s in enumerate(plan["streams"])]
        await asyncio.gather(*(c.connect() for c in callers))
        groups = [callers[g::phases] for g in range(phases)]
        loop = asyncio.get_running_loop()
        n = int(plan["seconds"] / FRAME_S)
        offset = plan["t0"] - time.time() + loop.time()
        started = time.time()
        late = stats["late"]
        # One pacing loop: group g of the streams sends its frame k at t0 + k x 20 ms +
        # g x 0.4 ms (a coroutine and a timer per stream cost this process more than the
        # sending itself at 1000 streams).
        for k in range(n):
            for g, group in enumerate(groups):
                due = offset + k * FRAME_S + g * FRAME_S / phases
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    late.append(-delay)
                for caller in group:
                    caller.send(k)
                stats["sent"] += len(group)
        # The rate it kept: what it sent over the time it took (a sender that fell behind
        # took longer than planned, and its late frames went out in bursts).
        stats["sending_s"] = time.time() - max(started, plan["t0"])
        await asyncio.gather(*(c.stop(n) for c in callers))
        stats["wall"] = time.time() - max(started, plan["t0"])
        result.update(stats)

    result: dict[str, Any] = {}
    uvloop.run(main())
    Path(out_file).write_text(json.dumps({
        "sent_rate": result["sent"] / max(result["sending_s"], plan["seconds"]),
        "intended_rate": len(plan["streams"]) / FRAME_S, "wall": result["wall"],
        "late_p99_ms": float(np.percentile(result["late"], 99)) * 1000,
        "releases": result["releases"]}))


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--generate":
        generate(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="250,1000", help="comma-separated stream counts")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--press-every", type=float, default=15.0,
                        help="mean seconds between presses of one caller")
    parser.add_argument("--skip-pure", action="store_true")
    parser.add_argument("--no-node", action="store_true", help="skip the Node reference runs")
    args = parser.parse_args()
    counts = [int(x) for x in args.streams.split(",")]
    if not args.skip_pure:
        for n in counts:
            bench_pure(n)
    ours: dict[tuple[int, int], float] = {}
    for workers in (int(x) for x in args.workers.split(",")):
        for n in counts:
            ours[(workers, n)] = bench_served(n, args.seconds, workers, args.press_every)["cpu"]
    why_not = "skipped (--no-node)" if args.no_node else node_available()
    if why_not:
        print(f"node reference: {why_not}")
        return
    for n in counts:
        node = bench_node(n, args.seconds, args.press_every)["cpu"]
        if (1, n) in ours:
            print(f"  {n} streams, one core: handraise serve uses {ours[(1, n)] / node:.2f}x the CPU "
                  f"of the Node design ({ours[(1, n)]:.1f} % vs {node:.1f} %; the goal is at most 0.5x)")


if __name__ == "__main__":
    main()
