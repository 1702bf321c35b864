"""The floor's sweep (invitations to speak, speaking limits), on a real redis-server.

Prints, for N rooms that each have a speaker under a speaking limit and a pending
invitation:
- an idle sweep (nothing due yet): time per sweep, whatever N is (one ZRANGEBYSCORE);
- a busy sweep (every room due: its invitation unanswered, its speaker over time; the
  auto-mute grace is long, so nothing else falls due meanwhile): time per room stepped and
  the actions claimed (2 per room);
- two processes sweeping the same due rooms at once: the actions each claimed (together
  exactly 2 per room: each is claimed once) and wall time.

Usage: .venv/bin/python bench/floor.py [--rooms 100,1000]
"""

from __future__ import annotations

# ruff: noqa: E402
import os
import sys

# Run as a script, this folder comes first on sys.path and bench/queue.py would shadow the
# standard library's queue module (imported by redis). Drop the folder.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from handraise import floor
from handraise.queue import Queue
from handraise.rooms import create_room
from handraise.store import Redis, client_from_url, scratch_redis


async def _setup(redis: Redis, n: int, *, due_soon: bool) -> list[str]:
    """``due_soon``: the limit and invitations expire within a second; else in minutes."""
    queue = Queue(redis)
    rooms = []
    for i in range(n):
        room = (await create_room(redis, f"Bench {i}", unmute="consent",
                                  speak_limit_s=1 if due_soon else 3600, auto_mute=True)).room.id
        speaker, invited = await queue.join(room), await queue.join(room)
        await queue.call_on(room, speaker)
        await floor.invite(redis, room, invited, timeout_s=0.05 if due_soon else 300,
                           next_hand=False)
        rooms.append(room)
    return rooms


GRACE_S = 600.0  # the auto-mute stays far off: the busy sweeps claim a known set


async def _sweep_all(redis: Redis) -> list[floor.TimerAction]:
    """Sweep until nothing is due (one sweep takes at most 500 rooms)."""
    actions: list[floor.TimerAction] = []
    while await floor.due_rooms(redis, limit=1):
        actions += await floor.sweep(redis, warn_s=0.9, grace_s=GRACE_S)
    return actions


async def _until_over(redis: Redis) -> None:
    """Wait until every speaker of the set-up is past the 1 s limit (Redis clock)."""
    seconds, micros = await redis.time()
    end = seconds + micros / 1e6 + 1.2
    while True:
        seconds, micros = await redis.time()
        if seconds + micros / 1e6 >= end:
            return
        await asyncio.sleep(0.05)  # waiting for the Redis clock to pass the limits


async def run(url: str, n: int) -> None:
    redis = client_from_url(url)
    other = client_from_url(url)
    try:
        await redis.flushall()
        await _setup(redis, n, due_soon=False)
        # They all look due now (schedule() puts 0): one step each puts the real times in
        # the index, and then nothing is due for minutes.
        await _sweep_all(redis)
        t0 = time.perf_counter()
        idle = 50
        for _ in range(idle):
            assert await floor.sweep(redis, warn_s=0.9, grace_s=GRACE_S) == []
        idle_ms = (time.perf_counter() - t0) / idle * 1000
        print(f"{n:>5} rooms: idle sweep {idle_ms:6.3f} ms")

        await redis.flushall()
        await _setup(redis, n, due_soon=True)
        await _until_over(redis)
        t0 = time.perf_counter()
        actions = await _sweep_all(redis)
        busy = time.perf_counter() - t0
        print(f"{n:>5} rooms: busy sweep {busy * 1000:7.1f} ms, {busy / n * 1e6:6.1f} µs per room, "
              f"{len(actions)} actions claimed ({2 * n} expected)")

        await redis.flushall()
        await _setup(redis, n, due_soon=True)
        await _until_over(redis)
        t0 = time.perf_counter()
        a, b = await asyncio.gather(_sweep_all(redis), _sweep_all(other))
        both = time.perf_counter() - t0
        print(f"{n:>5} rooms: two sweepers at once {both * 1000:7.1f} ms, actions claimed "
              f"{len(a)} + {len(b)} = {len(a) + len(b)} ({2 * n} expected)")
    finally:
        await redis.aclose()
        await other.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", default="100,1000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, scratch_redis(Path(tmp)) as url:
        for n in (int(x) for x in args.rooms.split(",")):
            await run(url, n)


if __name__ == "__main__":
    asyncio.run(main())
