"""Outbound events (webhooks): what a dead receiver costs the meeting and the other receivers.

Runs a scratch redis-server, a delivery worker (as one app process runs it), a live
receiver (answers 200 at once) and, in the second round, a receiver that accepts
connections and never answers. Each round raises and lowers hands in several rooms and
prints:

- meeting operations: raise/lower latency p50/p99 (ms) seen by the caller of the queue;
- delivery to the live receiver: event appended -> POST received, p50/p99/max (ms).

Never asserts a time.

Usage: .venv/bin/python bench/hooks.py [--rooms 4] [--events 300]
"""

from __future__ import annotations

# ruff: noqa: E402
import os
import sys

# Run as a script, this folder comes first on sys.path, and bench/queue.py would shadow
# the standard library's queue module (imported by redis). Drop the folder.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse
import asyncio
import contextlib
import json
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from handraise.hooks import HookSettings, HookWorker, add_hook, remove_hook
from handraise.queue import Queue
from handraise.rooms import create_room
from handraise.store import Redis, client_from_url, key, scratch_redis


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.asynccontextmanager
async def live_receiver(arrived: dict[str, float], changed: asyncio.Event) -> AsyncIterator[str]:
    """A minimal HTTP/1.1 receiver: notes when each event id arrives, answers 204."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                body = await reader.readexactly(length)
                arrived[json.loads(body)["id"]] = time.time()
                changed.set()
                writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    finally:
        server.close()


@contextlib.asynccontextmanager
async def dead_receiver() -> AsyncIterator[str]:
    """Accepts connections, reads, never answers."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    finally:
        for w in held:
            w.close()
        server.close()


async def one_round(redis: Redis, rooms: int, events: int, *, with_dead: bool) -> None:
    arrived: dict[str, float] = {}
    changed = asyncio.Event()
    worker = HookWorker(redis, settings=HookSettings(scan_s=0.2, read_block_s=0.5, timeout_s=10.0,
                                                     trust_env=False))
    async with live_receiver(arrived, changed) as live_url, dead_receiver() as dead_url:
        hooks = [await add_hook(redis, live_url, events=("hand_raised", "hand_lowered"))]
        if with_dead:
            hooks.append(await add_hook(redis, dead_url, events=("hand_raised", "hand_lowered")))
        worker.start()
        queue = Queue(redis)
        ids = [(await create_room(redis, f"Bench {i}")).room.id for i in range(rooms)]
        people = {room: await queue.join(room, number="+15550104821") for room in ids}
        await asyncio.sleep(1.0)  # let the worker claim the rooms: this measures deliveries, not start-up
        sent: dict[str, float] = {}
        op_ms: list[float] = []
        for n in range(events):
            room = ids[n % rooms]
            t0 = time.perf_counter()
            if n // rooms % 2 == 0:
                await queue.raise_hand(room, people[room], source="keypad")
            else:
                await queue.lower_hand(room, people[room], by="web")
            op_ms.append((time.perf_counter() - t0) * 1000)
            last = await redis.xrevrange(key(room, "events"), count=1)
            sent[last[0][0]] = time.time()
            await asyncio.sleep(0.005)  # a meeting's pace, not a flood
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                while len(arrived) < len(sent):
                    changed.clear()
                    await changed.wait()
        await worker.stop()
        for hook in hooks:
            await remove_hook(redis, hook.id)
    lat = [(arrived[i] - t) * 1000 for i, t in sent.items() if i in arrived]
    label = "live + dead receiver" if with_dead else "live receiver only  "
    print(f"{label}: ops p50 {pct(op_ms, .5):6.2f} ms  p99 {pct(op_ms, .99):6.2f} ms | "
          f"delivered {len(lat)}/{len(sent)}  p50 {pct(lat, .5):6.1f} ms  p99 {pct(lat, .99):6.1f} ms"
          f"  max {max(lat):6.1f} ms")


async def main(rooms: int, events: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, scratch_redis(Path(tmp)) as url:
        redis = client_from_url(url)
        try:
            for with_dead in (False, True):
                await one_round(redis, rooms, events, with_dead=with_dead)
        finally:
            await redis.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=4)
    parser.add_argument("--events", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(main(args.rooms, args.events))
