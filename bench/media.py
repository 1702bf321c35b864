"""Media Streams CPU cost: what one 20 ms frame costs the in-call keypad path.

1. In process, pure: parse the JSON message (``StreamReader``), decode base64, run the DTMF
   detector and the key decoder (``KeypadListener``) — the per-frame work of
   ``/voice/stream``.
2. Through the served handler: ``handraise serve`` in its own process, N signed WebSocket
   streams sending frames as fast as the server takes them; the server's CPU time
   (``/proc/<pid>/stat``) per frame, from the ``start`` to every stream's ``stop``.

Audio: comfort noise with speech-like bursts (no keys, so no Redis or REST work per frame;
keys are rare and their cost is the raise, not the detection).
Prints microseconds per frame and frames per second per core (a call sends 50 frames a
second). Never asserts a time.

Usage: .venv/bin/python bench/media.py [--frames 5000] [--streams 20]
"""

from __future__ import annotations

# ruff: noqa: E402
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse
import asyncio
import base64
import importlib.util
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import connect

from handraise.dsp import synth
from handraise.phone.frames import StreamReader
from handraise.phone.media import KeypadListener
from handraise.phone.streams import keypad_checks
from handraise.queue import Queue
from handraise.rooms import create_room
from handraise.store import client_from_url, free_port, scratch_redis

# bench/webhooks.py serves the app the same way; it is a script, not a module on the path.
_spec = importlib.util.spec_from_file_location("bench_webhooks", os.path.join(_HERE, "webhooks.py"))
assert _spec is not None and _spec.loader is not None
_webhooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_webhooks)
ACCOUNT_SID: str = _webhooks.ACCOUNT_SID
TOKEN: str = _webhooks.TOKEN
served_app = _webhooks.served_app

FRAMES_PER_CALL_S = 50


def audio_frames(n: int, seed: int = 7) -> list[bytes]:
    rng = np.random.default_rng(seed)
    parts, total = [], 0
    while total < n * 160:
        parts.append(synth.noise(400.0, -60.0, rng=rng))
        parts.append(synth.speech_like(600.0, level_dbm0=-20.0, rng=rng))
        total += 8 * 1000
    return synth.to_frames(np.concatenate(parts))[:n]


def messages(frames: list[bytes], sid: str) -> list[str]:
    return [json.dumps({"event": "media", "sequenceNumber": str(i + 2), "streamSid": sid,
                        "media": {"track": "inbound", "chunk": str(i + 1),
                                  "timestamp": str(20 * i),
                                  "payload": base64.b64encode(f).decode()}})
            for i, f in enumerate(frames)]


def start_message(sid: str, call_sid: str, room: str, pid: str) -> str:
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": sid,
                       "start": {"accountSid": ACCOUNT_SID, "streamSid": sid, "callSid": call_sid,
                                 "tracks": ["inbound"],
                                 "customParameters": {"room": room, "participant": pid},
                                 "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                                 "channels": 1}}})


def report(what: str, seconds: float, frames: int) -> None:
    us = seconds / frames * 1e6
    print(f"{what:<46} {us:8.1f} µs/frame  {1e6 / us:9.0f} frames/s/core  "
          f"= {1e6 / us / FRAMES_PER_CALL_S:6.0f} calls per core in real time")


def bench_pure(n: int) -> None:
    msgs = messages(audio_frames(n), "MZ" + "1" * 32)
    reader = StreamReader()
    reader.feed(start_message("MZ" + "1" * 32, "CA" + "2" * 32, "r", "p"))
    listener = KeypadListener()
    t0 = time.process_time()
    for raw in msgs:
        msg = reader.feed(raw)
        listener.feed(msg.payload)  # type: ignore[union-attr]
    report("in process: parse + detect + decode", time.process_time() - t0, n)
    t0 = time.process_time()
    for raw in msgs:
        reader.feed(raw)
    report("  of which parsing (JSON, base64, order)", time.process_time() - t0, n)


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (``handraise serve`` may run its server in a child)."""
    out = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            out += _tree(int(child))
    return out


def cpu_seconds(pid: int) -> float:
    total = 0
    for p in _tree(pid):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


async def bench_served(public: str, server_pid: int, redis_url: str, streams: int, n: int) -> None:
    redis = client_from_url(redis_url)
    room = (await create_room(redis, "Media bench")).room
    queue = Queue(redis)
    frames = audio_frames(n)
    url = public.replace("http://", "ws://") + "/voice/stream"
    headers = {"X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(url, {})}
    plans = []
    for i in range(streams):
        call_sid, sid = f"CA{i:032x}", f"MZ{i:032x}"
        pid = await queue.join(room.id, call_sid=call_sid, label=f"bench{i}")
        plans.append((sid, start_message(sid, call_sid, room.id, pid), messages(frames, sid)))

    async def one(sid: str, start: str, media: list[str]) -> None:
        async with connect(url, additional_headers=headers, proxy=None, compression=None) as ws:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            await ws.send(start)
            for raw in media:
                await ws.send(raw)
            await ws.send(json.dumps({"event": "stop", "sequenceNumber": str(n + 2),
                                      "streamSid": sid, "stop": {"callSid": "", "accountSid": ""}}))
            await ws.wait_closed()

    before = cpu_seconds(server_pid)
    t0 = time.perf_counter()
    await asyncio.gather(*(one(*plan) for plan in plans))
    for _ in range(1200):  # the server's last write per stream; polled, 60 s deadline
        if sum(c.stopped for c in await keypad_checks(redis, room.id)) >= streams:
            break
        await asyncio.sleep(0.05)
    wall = time.perf_counter() - t0
    cpu = cpu_seconds(server_pid) - before
    await redis.aclose()
    total = streams * n
    report(f"served: {streams} streams x {n} frames (server CPU)", cpu, total)
    print(f"{'':<46} wall {wall:.2f} s, {total / wall:.0f} frames/s delivered")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=5000)
    parser.add_argument("--streams", type=int, default=20)
    args = parser.parse_args()
    bench_pure(args.frames)
    with tempfile.TemporaryDirectory() as tmp, scratch_redis(Path(tmp)) as redis_url, \
            served_app(redis_url, free_port()) as public:
        me = os.getpid()
        children = Path(f"/proc/{me}/task/{me}/children").read_text().split()
        server = next(int(c) for c in children
                      if b"handraise\x00serve" in Path(f"/proc/{c}/cmdline").read_bytes())
        asyncio.run(bench_served(public, server, redis_url, args.streams,
                                 max(500, args.frames // 5)))


if __name__ == "__main__":
    main()
