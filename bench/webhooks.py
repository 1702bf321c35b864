"""Webhook latency under concurrent callers: ``/voice/incoming`` and the conference callback.

Starts a scratch redis-server and ``handraise serve`` (one worker, its own process), creates
a room, then runs rounds of N concurrent virtual callers. Each caller makes the requests
Twilio would make, signed like Twilio signs them:

  POST /voice/incoming            (greeting)         -> "incoming: greet"
  POST /voice/incoming Digits=... (access code)      -> "incoming: code"
  POST /voice/prejoin  Digits=*1  (raise, PIN, Dial) -> "prejoin"
  POST /voice/conference-events   join, unmute, mute, leave -> "conference callback"

Prints p50/p99/max per kind (ms, wall time seen by the client) and requests per second.
Never asserts a time.

Usage: .venv/bin/python bench/webhooks.py [--callers 50] [--rounds 4]
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
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlencode

import httpx
from serving import ACCOUNT_SID, TOKEN, serve
from twilio.request_validator import RequestValidator

from handraise.rooms import create_room
from handraise.store import client_from_url, free_port, scratch_redis


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Caller:
    def __init__(self, client: httpx.AsyncClient, public: str, n: int,
                 timings: dict[str, list[float]]) -> None:
        self.client, self.public, self.n, self.timings = client, public, n, timings
        self.validator = RequestValidator(TOKEN)
        self.call_sid = f"CA{n:032x}"

    async def post(self, kind: str, path: str, params: dict[str, str],
                   query: dict[str, str] | None = None) -> str:
        url = self.public + path + ("?" + urlencode(query) if query else "")
        headers = {"X-Twilio-Signature": self.validator.compute_signature(url, params)}
        t0 = time.perf_counter()
        response = await self.client.post(url, data=params, headers=headers)
        self.timings[kind].append((time.perf_counter() - t0) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"{kind}: HTTP {response.status_code}")
        return response.text

    def voice(self, **extra: str) -> dict[str, str]:
        return {"CallSid": self.call_sid, "AccountSid": ACCOUNT_SID, "From": f"+1555{self.n:07d}",
                "To": "+15550109999", "CallStatus": "in-progress", "ApiVersion": "2010-04-01",
                "Direction": "inbound", **extra}

    async def run(self, room: str, code: str, conference_sid: str, seq: list[int]) -> None:
        await self.post("incoming: greet", "/voice/incoming", self.voice())
        body = await self.post("incoming: code", "/voice/incoming", self.voice(Digits=code),
                               {"attempt": "1"})
        pid = body.split("pid=")[1].split('"')[0].split("&")[0]
        await self.post("prejoin", "/voice/prejoin", self.voice(Digits="*1"),
                        {"room": room, "pid": pid})
        for event, muted in (("participant-join", "true"), ("participant-unmute", "false"),
                             ("participant-mute", "true"), ("participant-leave", "true")):
            seq[0] += 1
            params = {"ConferenceSid": conference_sid, "FriendlyName": f"handraise-{room}",
                      "AccountSid": ACCOUNT_SID, "SequenceNumber": str(seq[0]),
                      "Timestamp": "Mon, 23 Nov 2026 15:00:00 +0000", "StatusCallbackEvent": event,
                      "CallSid": self.call_sid, "ParticipantLabel": pid, "Muted": muted,
                      "Hold": "false", "Coaching": "false", "EndConferenceOnExit": "false",
                      "StartConferenceOnEnter": "false"}
            if event == "participant-leave":
                params |= {"ReasonParticipantLeft": "participant_hung_up",
                           "ParticipantCallStatus": "completed"}
            await self.post("conference callback", "/voice/conference-events", params,
                            {"room": room})


async def bench(public: str, redis_url: str, callers: int, rounds: int) -> None:
    redis = client_from_url(redis_url)
    created = await create_room(redis, "Bench room")
    await redis.aclose()
    room = created.room
    timings: dict[str, list[float]]
    seq = [0]
    limits = httpx.Limits(max_connections=callers, max_keepalive_connections=callers)
    async with httpx.AsyncClient(limits=limits, timeout=30.0, trust_env=False) as client:
        # One warm-up caller (script loading, connection set-up) not counted.
        await Caller(client, public, 10**6, defaultdict(list)).run(
            room.id, room.access_code, "CF" + "c" * 32, seq)
        for concurrent, n_rounds in ((1, 20), (callers, rounds)):
            timings = defaultdict(list)
            t0 = time.perf_counter()
            for _ in range(n_rounds):
                group = [Caller(client, public, seq[0] * 1000 + i, timings) for i in range(concurrent)]
                await asyncio.gather(*(c.run(room.id, room.access_code, "CF" + "c" * 32, seq)
                                       for c in group))
            elapsed = time.perf_counter() - t0
            report(timings, concurrent, n_rounds, elapsed)


def report(timings: dict[str, list[float]], callers: int, rounds: int, elapsed: float) -> None:
    total = sum(len(v) for v in timings.values())
    print(f"\nwebhook latency, {callers} concurrent caller{'s' if callers != 1 else ''} x {rounds} "
          f"rounds (one app process; client and server share the machine)")
    print(f"{'request':<22}{'n':>6}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for kind in ("incoming: greet", "incoming: code", "prejoin", "conference callback"):
        v = timings[kind]
        print(f"{kind:<22}{len(v):>6}{pct(v, 0.5):>10.1f}{pct(v, 0.99):>10.1f}{max(v):>10.1f}")
    print(f"throughput: {total / elapsed:.0f} webhook requests/s over {elapsed:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir, scratch_redis(Path(workdir)) as redis_url, \
            serve(redis_url, free_port()) as (public, _):
        asyncio.run(bench(public, redis_url, args.callers, args.rounds))


if __name__ == "__main__":
    main()
