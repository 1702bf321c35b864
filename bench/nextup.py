""""You're next.": what deciding costs, and how soon a watcher decides, on a real redis-server.

Prints:
- check_room (snapshot + the claim script) per head change, p50/p99 ms, for a room of 7 and
  of 250 participants, beside a bare snapshot of the same room (the floor);
- decision latency: from a ``call_on`` returning to the room's marker naming the new head,
  with 1 and 2 watchers (processes) following 1 and 100 open rooms, p50/p99 ms (the marker
  is polled every 1 ms, so figures carry up to 1 ms of polling);
- what idle watchers cost Redis: commands per second with 100 open rooms and no changes.

Without Twilio the announcement itself fails at once (nothing to call); the REST call is not
part of these figures.

Usage: .venv/bin/python bench/nextup.py [--changes 200]
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
import logging
import tempfile
import time
from pathlib import Path

from handraise.config import Settings
from handraise.phone.control import HostControls, TwilioControl
from handraise.phone.nextup import NextWatcher, check_room, marker_key
from handraise.phone.twiml import PhoneUrls
from handraise.queue import Queue
from handraise.rooms import create_room
from handraise.store import Redis, client_from_url, scratch_redis


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def controls(queue: Queue) -> HostControls:
    return HostControls(queue, TwilioControl(Settings()), PhoneUrls("http://bench.invalid"))


async def filled_room(redis: Redis, people: int, hands: int) -> tuple[str, list[str]]:
    q = Queue(redis)
    room = (await create_room(redis, f"Bench {people}")).room.id
    pids = [await q.join(room, number=f"+1555{n:07d}") for n in range(people)]
    for pid in pids[:hands]:
        await q.raise_hand(room, pid, source="keypad")
    return room, pids


async def cost(url: str, changes: int) -> None:
    redis = client_from_url(url)
    q = Queue(redis)
    host = controls(q)
    for people in (7, 250):
        room, pids = await filled_room(redis, people, min(people, changes + 1))
        await check_room(q, host, room)
        floor, spent = [], []
        for i in range(min(changes, people - 1)):
            t0 = time.perf_counter()
            await q.snapshot(room)
            floor.append((time.perf_counter() - t0) * 1000)
            await q.call_on(room)
            t0 = time.perf_counter()
            told = await check_room(q, host, room)
            spent.append((time.perf_counter() - t0) * 1000)
            assert told == pids[i + 1], (told, pids[i + 1])
            if len(await q.queue(room)) < 2:  # keep a line behind the head
                for pid in pids[:i + 1]:
                    await q.raise_hand(room, pid, source="web")
        print(f"check_room, {people:>3} participants   p50 {pct(spent, .5):6.2f} ms  "
              f"p99 {pct(spent, .99):6.2f} ms   (bare snapshot p50 {pct(floor, .5):5.2f} ms, "
              f"{len(spent)} head changes)")
    await redis.aclose()


async def latency(url: str, changes: int) -> None:
    for watchers_n in (1, 2):
        for rooms_n in (1, 100):
            redis = client_from_url(url)
            await redis.flushall()
            q = Queue(redis)
            clients = [client_from_url(url) for _ in range(watchers_n)]
            watchers = [NextWatcher(Queue(c), controls(Queue(c)), rescan_s=0.5) for c in clients]
            room, pids = await filled_room(redis, 7, 7)
            for n in range(rooms_n - 1):
                await create_room(redis, f"Idle {n}")
            for w in watchers:
                w.start()
            while not all(room in w.cursors for w in watchers):  # noqa: ASYNC110 - another task's state
                await asyncio.sleep(0.01)  # start-up, not measured
            waits = []
            for _ in range(changes):
                expected = (await q.queue(room))[1].participant
                await q.call_on(room)
                t0 = time.perf_counter()
                while await redis.hget(marker_key(room), "head") != expected:  # noqa: ASYNC110
                    await asyncio.sleep(0.001)  # polling Redis is the measurement
                waits.append((time.perf_counter() - t0) * 1000)
                await q.done_speaking(room)
                for pid in pids:
                    await q.raise_hand(room, pid, source="web")  # the speaker back in line
            print(f"decision latency, {watchers_n} watcher{'s' if watchers_n > 1 else ' '}, "
                  f"{rooms_n:>3} open rooms   p50 {pct(waits, .5):6.2f} ms  p99 {pct(waits, .99):6.2f} ms")
            if rooms_n == 100 and watchers_n == 2:
                before = await redis.info("stats")
                await asyncio.sleep(5.0)  # an idle period is what is measured
                after = await redis.info("stats")
                per_s = (after["total_commands_processed"] - before["total_commands_processed"]) / 5
                print(f"idle: 2 watchers over 100 open rooms cost Redis {per_s:.1f} commands/s "
                      "(the INFO calls included)")
            for w in watchers:
                await w.stop()
            for c in clients:
                await c.aclose()
            await redis.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=200)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the failed announcements (no Twilio) would flood
    with tempfile.TemporaryDirectory() as tmp, scratch_redis(Path(tmp)) as url:
        await cost(url, args.changes)
        await latency(url, min(args.changes, 100))


if __name__ == "__main__":
    asyncio.run(main())
