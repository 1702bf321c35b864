"""Listing rooms and finding the live ones, on a real redis-server.

Prints, for N rooms of which L have participants:
- ``list_rooms`` (one pipeline) against reading each room in its own round trip (as before);
- ``live_rooms`` (the index of rooms with participants, what periodic work walks) and one
  sweep of the index.

Usage: .venv/bin/python bench/rooms.py [--rooms 2000] [--live 20] [--repeat 5]
"""

from __future__ import annotations

# ruff: noqa: E402
import os
import sys

# Run as a script, this file's folder comes first on sys.path, and bench/queue.py would
# shadow the standard library's queue module (imported by asyncio and redis). Drop it.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from handraise.queue import Queue
from handraise.rooms import create_room, get_room, list_rooms, live_rooms, sweep_live_rooms
from handraise.store import Redis, client_from_url, global_key, scratch_redis


async def one_by_one(redis: Redis) -> int:
    ids = await redis.zrange(global_key("rooms"), 0, -1)
    return len([await get_room(redis, i) for i in ids])


async def best_ms(fn: Callable[[], Awaitable[Any]], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - started) * 1000)
    return min(times)


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, scratch_redis(Path(tmp)) as url:
        redis = client_from_url(url)
        queue = Queue(redis)
        rooms = [(await create_room(redis, f"Room {i}")).room for i in range(args.rooms)]
        for i, room in enumerate(rooms[:args.live]):
            await queue.join(room.id, call_sid=f"CA{i:032x}", participant_id=f"p{i}")
        print(f"{args.rooms} rooms, {args.live} with a participant (best of {args.repeat})")
        print(f"  rooms read one by one   {await best_ms(lambda: one_by_one(redis), args.repeat):8.2f} ms")
        print(f"  list_rooms (pipeline)   {await best_ms(lambda: list_rooms(redis), args.repeat):8.2f} ms")
        print(f"  live_rooms (index)      {await best_ms(lambda: live_rooms(redis), args.repeat):8.2f} ms"
              f"  -> {len(await live_rooms(redis))} rooms")
        sweep = await best_ms(lambda: sweep_live_rooms(redis), args.repeat)
        print(f"  sweep_live_rooms        {sweep:8.2f} ms")
        await redis.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=2000)
    parser.add_argument("--live", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    asyncio.run(main(parser.parse_args()))
