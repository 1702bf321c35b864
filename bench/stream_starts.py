"""A burst of Media Streams starting at once against ``handraise serve`` and one Redis.

Starts a scratch redis-server and ``handraise serve`` (one worker, its own process), seeds
rooms of participants, then opens N signed ``/voice/stream`` WebSockets at once, each
sending ``connected`` and ``start`` as Twilio does. Every stream's start-up check reads its
room and participant; the stream then writes its keypad self-test record and live entry.

Prints: the time until every stream had written its record (wall time, including the
load generator's own handshakes), Redis commands and round trips per stream start (from
Redis's own counters), and how many streams the server logged as skipped checks
("redis unavailable") or refused. Never asserts a time.

Usage: .venv/bin/python bench/stream_starts.py [--streams 1000] [--per-room 250]
       (``--code DIR`` serves another checkout's ``handraise`` package, e.g. an older
       commit unpacked with ``git archive``, to compare)
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
import contextlib
import json
import tempfile
import time
from pathlib import Path

from serving import ACCOUNT_SID, TOKEN, serve
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect

from handraise.queue import Queue
from handraise.rooms import create_room
from handraise.store import Redis, client_from_url, free_port, key, scratch_redis


async def seed(redis: Redis, streams: int, per_room: int) -> list[tuple[str, str, str]]:
    queue, out = Queue(redis), []
    for r in range((streams + per_room - 1) // per_room):
        room = (await create_room(redis, f"Burst {r}")).room
        for i in range(min(per_room, streams - r * per_room)):
            pid, sid = f"p{r}x{i}", f"CA{r:04d}{i:028x}"
            await queue.join(room.id, call_sid=sid, label=pid, participant_id=pid)
            out.append((room.id, pid, sid))
    return out


async def open_stream(url: str, room: str, pid: str, call_sid: str) -> ClientConnection:
    signature = RequestValidator(TOKEN).compute_signature(url, {})
    ws = await connect(url, additional_headers={"X-Twilio-Signature": signature}, proxy=None,
                       compression=None, open_timeout=60, ping_interval=None)
    stream_sid = "MZ" + call_sid[2:]
    await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    await ws.send(json.dumps({
        "event": "start", "sequenceNumber": "1", "streamSid": stream_sid,
        "start": {"accountSid": ACCOUNT_SID, "streamSid": stream_sid, "callSid": call_sid,
                  "tracks": ["inbound"], "customParameters": {"room": room, "participant": pid},
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                  "channels": 1}}}))
    return ws


async def written(redis: Redis, rooms: set[str]) -> int:
    async with redis.pipeline(transaction=False) as pipe:
        for room in rooms:
            pipe.hlen(key(room, "keypad-check"))
        return int(sum(await pipe.execute()))


async def commands(redis: Redis) -> tuple[dict[str, int], int]:
    """(calls per command, socket reads Redis served) so far."""
    stats = await redis.info("stats")
    per = await redis.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in per.items()}
    return calls, int(stats.get("total_reads_processed", 0))


async def run(streams: int, per_room: int, code: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp, scratch_redis(Path(tmp)) as redis_url:
        redis = client_from_url(redis_url)
        callers = await seed(redis, streams, per_room)
        rooms = {room for room, _, _ in callers}
        env = {"HANDRAISE_LOG_LEVEL": "INFO"}
        if code:
            # ``python -m`` puts the working directory first on the path: serve from there.
            env["PYTHONPATH"] = code
            os.chdir(code)
        log_path = Path(tmp) / "serve.log"
        port = free_port()
        with serve(redis_url, port, prefix=["taskset", "-c", "0"], env=env,
                   log_path=log_path):
            url = f"ws://127.0.0.1:{port}/voice/stream"
            before, reads_before = await commands(redis)
            t0 = time.perf_counter()
            sockets = await asyncio.gather(*(open_stream(url, *c) for c in callers),
                                           return_exceptions=True)
            t_open = time.perf_counter() - t0
            deadline = time.monotonic() + 120
            # Polling Redis for the records (another process writes them: no event to await).
            while time.monotonic() < deadline:
                if await written(redis, rooms) >= len(callers):
                    break
                await asyncio.sleep(0.05)
            t_all = time.perf_counter() - t0
            done = await written(redis, rooms)
            after, reads_after = await commands(redis)
            for ws in sockets:
                if isinstance(ws, ClientConnection):
                    with contextlib.suppress(Exception):
                        await ws.close()
        await redis.aclose()
        log = log_path.read_text(errors="replace")
        failed = sum(1 for s in sockets if not isinstance(s, ClientConnection))
        # Our own polling (one pipeline of HLENs every 50 ms, and INFO) is left out of
        # the command counts; its reads (one per poll) stay in, a few per cent at most.
        delta = {name: after.get(name, 0) - before.get(name, 0) for name in after}
        for ours in ("hlen", "info"):
            delta.pop(ours, None)
        top = sorted(((n, c) for n, c in delta.items() if c), key=lambda x: -x[1])
        print(f"streams: {len(callers)} in {len(rooms)} rooms; server code: {code or 'this checkout'}")
        print(f"  sockets opened (client side): {t_open:.2f} s, {failed} failed")
        print(f"  every stream's record written: {t_all:.2f} s after the first connect "
              f"({done}/{len(callers)})")
        print(f"  redis commands per stream start: {sum(delta.values()) / len(callers):.2f} ("
              + ", ".join(f"{n} {c / len(callers):.2f}" for n, c in top) + ")")
        print(f"  socket reads Redis served per stream start (round trips, connection set-up "
              f"included): {(reads_after - reads_before) / len(callers):.2f}")
        print(f"  'redis unavailable' lines: {log.count('redis unavailable')}; "
              f"refused: {log.count('refused')}; listening: {log.count('listening for keys')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--per-room", type=int, default=250)
    parser.add_argument("--code", help="a directory holding another handraise package to serve")
    args = parser.parse_args()
    asyncio.run(run(args.streams, args.per_room, args.code))


if __name__ == "__main__":
    main()
