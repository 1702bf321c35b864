"""Hand queue throughput and event delivery latency, on a real redis-server.

Prints:
- raise/lower operations per second (one client, sequential and 50 concurrent tasks),
  against a baseline of bare Redis round trips (INCR) run in the same process;
- event delivery latency, append -> subscriber, p50/p99, with 1, 10 and 100 subscribers
  on one EventHub (one reader per room, fan-out in process).

Usage: .venv/bin/python bench/queue.py [--ops 4000] [--events 300] [--cluster]

``--cluster`` runs the same on a throwaway 3-master Redis Cluster (redis+cluster://), started
the way the tests start theirs, and prints how long forming it took.
"""

from __future__ import annotations

# ruff: noqa: E402
import os
import sys

# Run as a script, this file's folder comes first on sys.path, and its name would shadow
# the standard library's queue module (imported by asyncio and redis). Drop the folder.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse
import asyncio
import contextlib
import random
import tempfile
import time
from pathlib import Path

from handraise.events import EventHub, Subscription
from handraise.queue import Queue
from handraise.rooms import create_room
from handraise.store import client_from_url, scratch_cluster, scratch_redis


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def throughput(url: str, ops: int) -> None:
    redis = client_from_url(url)
    room = (await create_room(redis, "Bench")).room.id
    q = Queue(redis)
    people = [await q.join(room) for _ in range(50)]
    rng = random.Random(1)

    async def one(pid: str) -> None:
        if rng.random() < 0.5:
            await q.raise_hand(room, pid, source="keypad")
        else:
            await q.lower_hand(room, pid, by="web")

    t0 = time.perf_counter()
    for _ in range(ops):
        await redis.incr("bench:baseline")
    baseline = ops / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    for _ in range(ops):
        await one(rng.choice(people))
    sequential = ops / (time.perf_counter() - t0)

    async def worker(n: int) -> None:
        for _ in range(n):
            await one(rng.choice(people))

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(ops // 50) for _ in range(50)))
    concurrent = (ops // 50 * 50) / (time.perf_counter() - t0)

    print(f"baseline: bare INCR round trips        {baseline:9.0f} ops/s")
    print(f"raise/lower, sequential               {sequential:9.0f} ops/s  "
          f"({sequential / baseline:.2f}x baseline)")
    print(f"raise/lower, 50 concurrent tasks      {concurrent:9.0f} ops/s  "
          f"({concurrent / baseline:.2f}x baseline)")
    await redis.aclose()


async def latency(url: str, subscribers: int, events: int) -> tuple[float, float]:
    redis = client_from_url(url)
    room = (await create_room(redis, f"Latency {subscribers}")).room.id
    q = Queue(redis)
    pid = await q.join(room)
    hub = EventHub(redis)
    samples: list[float] = []
    async with contextlib.AsyncExitStack() as stack:
        subs = [await stack.enter_async_context(hub.subscribe(room)) for _ in range(subscribers)]
        for i in range(events):
            t0 = time.perf_counter()
            if i % 2 == 0:
                await q.raise_hand(room, pid, source="keypad")
            else:
                await q.lower_hand(room, pid, by="web")

            async def receive(sub: Subscription, sent: float = t0) -> float:
                await sub.get()
                return time.perf_counter() - sent

            samples.extend(await asyncio.gather(*(receive(s) for s in subs)))
    await hub.close()
    await redis.aclose()
    return pct(samples, 0.5) * 1000, pct(samples, 0.99) * 1000


async def main(args: argparse.Namespace, url: str) -> None:
    print(f"# handraise queue bench ({args.ops} ops, {args.events} events per row)")
    await throughput(url, args.ops)
    print("event delivery, append -> subscriber:")
    for n in (1, 10, 100):
        p50, p99 = await latency(url, n, args.events)
        print(f"  {n:>3} subscribers   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ops", type=int, default=4000)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--cluster", action="store_true", help="a 3-master Redis Cluster")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        started = time.perf_counter()
        with (scratch_cluster if args.cluster else scratch_redis)(Path(workdir)) as url:
            print(f"# {url.split(':')[0]}: ready in {time.perf_counter() - started:.2f} s")
            asyncio.run(main(args, url))
