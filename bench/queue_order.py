"""The cost of the computed queue order (replies, fair order) as the queue grows.

Every raise, reply, call-next and snapshot sorts the whole queue inside its Lua script
(queue.py ``ordered``), where a plain FIFO could use ZRANK. This prints, for queues of N
raised hands (10, 50, 250 = Twilio's conference limit): a plain ``fifo`` room (no replies, nobody
has spoken: positions come from ZRANK), and ``fifo`` and ``fair`` rooms with three
replies to the speaker and half the hands of people who have spoken (the full sort):

- raise + lower of one more caller, per pair (the raise answers its position);
- a reply + lower of one more caller, per pair;
- a snapshot (what every dashboard and companion page render from);
- Redis server time per call of each script (INFO commandstats, ``evalsha``), so the
  figure excludes the client and the network.

Prints figures; never asserts a time.

Usage: .venv/bin/python bench/queue_order.py [--rounds 400]
"""

from __future__ import annotations

# ruff: noqa: E402
import os
import sys

# Run as a script, this folder comes first on sys.path, and bench/queue.py would shadow
# the standard library's queue module (imported by asyncio and redis). Drop the folder.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from handraise.queue import Queue
from handraise.rooms import create_room
from handraise.store import Redis, client_from_url, scratch_redis


async def evalsha_usec(redis: Redis) -> tuple[int, float]:
    stats = await redis.info("commandstats")
    row = stats.get("cmdstat_evalsha", {})
    return int(row.get("calls", 0)), float(row.get("usec", 0))


async def timed(redis: Redis, rounds: int, step: object) -> tuple[float, float]:
    """(client µs per round, Redis µs per script call) of ``rounds`` awaits of ``step()``."""
    calls0, usec0 = await evalsha_usec(redis)
    t0 = time.perf_counter()
    for _ in range(rounds):
        await step()  # type: ignore[operator]
    wall = (time.perf_counter() - t0) / rounds * 1e6
    calls1, usec1 = await evalsha_usec(redis)
    return wall, (usec1 - usec0) / max(1, calls1 - calls0)


async def one_room(redis: Redis, order: str, n: int, rounds: int, *, busy: bool) -> None:
    room = (await create_room(redis, f"{order} {n}", order=order)).room.id
    q = Queue(redis)
    speaker = await q.join(room)
    people = [await q.join(room) for _ in range(n)]
    if busy:
        for p in people[: n // 2]:  # half have spoken (matters in fair rooms)
            await q.call_on(room, p)
    await q.call_on(room, speaker)
    for p in people:
        await q.raise_hand(room, p, source="keypad")
    if busy:
        for p in people[-3:]:
            await q.reply(room, p, source="keypad")
    extra = await q.join(room)

    async def raise_lower() -> None:
        await q.raise_hand(room, extra, source="keypad")
        await q.lower_hand(room, extra, by="keypad")

    async def reply_lower() -> None:
        await q.reply(room, extra, source="keypad")
        await q.lower_hand(room, extra, by="keypad")

    async def snapshot() -> None:
        await q.snapshot(room)

    rl = await timed(redis, rounds, raise_lower)
    rp = await timed(redis, rounds, reply_lower)
    sn = await timed(redis, rounds, snapshot)
    assert len((await q.snapshot(room)).queue) == n
    kind = f"{order}, {'3 replies' if busy else 'plain'}"
    print(f"  {kind:<16} {n:>4} hands   raise+lower {rl[0]:7.0f} µs ({rl[1]:5.0f} µs/script in Redis)"
          f"   reply+lower {rp[0]:7.0f} µs ({rp[1]:5.0f})   snapshot {sn[0]:7.0f} µs ({sn[1]:5.0f})")


async def main(args: argparse.Namespace, url: str) -> None:
    redis = client_from_url(url)
    print(f"# computed queue order: {args.rounds} rounds per figure, one client, local redis-server")
    print("  (plain: no replies, nobody has spoken, so positions come from ZRANK; else sorted)")
    for n in (10, 50, 250):
        await one_room(redis, "fifo", n, args.rounds, busy=False)
        for order in ("fifo", "fair"):
            await one_room(redis, order, n, args.rounds, busy=True)
    await redis.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir, scratch_redis(Path(workdir)) as url:
        asyncio.run(main(args, url))
