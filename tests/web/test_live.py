"""The live pages' shared cache: one snapshot per room state, bounded."""

from __future__ import annotations

import asyncio

from handraise.queue import Queue
from handraise.rooms import create_room
from handraise.store import Redis
from handraise.web.live import FragmentCache, Fragments, Live


async def test_pages_of_one_state_share_one_snapshot_and_a_newer_event_reads_again(redis: Redis) -> None:
    queue = Queue(redis)
    room = (await create_room(redis, "Shared")).room
    pid = await queue.join(room.id, number="+15550104821")
    cache = FragmentCache(queue)
    renders: list[str] = []

    async def render(live: Live) -> Fragments:
        renders.append(live.event_id)
        return [("queue", str(len(live.state.queue)))]

    first = await cache.get(room.id, "host", render)
    at = first[0]
    same = await asyncio.gather(*(cache.get(room.id, "host", render, at) for _ in range(50)))
    assert all(s == first for s in same) and renders == [at]  # one render for 51 pages
    await queue.raise_hand(room.id, pid, source="web")
    newer = await cache.get(room.id, "host", render, (await queue.snapshot(room.id)).last_event_id)
    assert newer[1] == [("queue", "1")] and len(renders) == 2


async def test_the_cache_forgets_the_least_recent_rooms_past_its_size(redis: Redis) -> None:
    queue = Queue(redis)
    cache = FragmentCache(queue)
    cache._looks.size = cache._renders.size = 3
    rooms = [(await create_room(redis, f"Room {i}")).room.id for i in range(5)]

    async def render(live: Live) -> Fragments:
        return [("x", live.room.name)]

    for room in rooms:
        await cache.get(room, "host", render)
    assert [k[0] for k in cache._renders._entries] == rooms[-3:]


async def test_pages_of_one_state_share_its_sse_messages_encoded_once(redis: Redis) -> None:
    queue = Queue(redis)
    room = (await create_room(redis, "Encoded")).room
    cache = FragmentCache(queue)

    async def render(live: Live) -> Fragments:
        return [("queue", "<ol>\n<li>one</li>\r\n</ol>"), ("speaker", "")]

    first = await cache.rendering(room.id, "host", render)
    again = await cache.rendering(room.id, "host", render, first.event_id)
    assert again.messages is first.messages
    assert first.messages == (
        f"event: queue\nid: {first.event_id}\ndata: <ol>\ndata: <li>one</li>\ndata: </ol>\n\n".encode(),
        f"event: speaker\nid: {first.event_id}\ndata: \n\n".encode())
