"""Room event stream: subscriptions, resume, fan-out across app instances, SSE encoding."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from handraise.app import create_app, services
from handraise.config import Settings
from handraise.events import (
    REDIS_ERRORS,
    RESET,
    Event,
    EventHub,
    Subscription,
    SubscriptionLagged,
    read_events,
    sse,
    sse_comment,
)
from handraise.queue import Queue
from handraise.rooms import create_room
from handraise.store import Redis, client_from_url, free_port


@pytest.fixture
async def room(redis: Redis) -> str:
    return (await create_room(redis, "Events")).room.id


@pytest.fixture
async def hub(redis: Redis) -> AsyncIterator[EventHub]:
    h = EventHub(redis, block_ms=200)
    yield h
    await h.close()


async def take(sub: Subscription, n: int, wait_s: float = 5.0) -> list[Event]:
    return [await asyncio.wait_for(sub.get(), wait_s) for _ in range(n)]


async def test_a_subscriber_receives_changes_made_after_it_subscribed(
    redis: Redis, hub: EventHub, room: str
) -> None:
    q = Queue(redis)
    early = await q.join(room)
    async with hub.subscribe(room) as sub:
        late = await q.join(room)
        await q.raise_hand(room, late, source="web")
        got = await take(sub, 2)
    assert [(e.type, e.participant) for e in got] == [
        ("participant.joined", late),
        ("hand.raised", late),
    ]
    assert early not in {e.participant for e in got}
    assert got[1].data == {"source": "web", "position": 1, "raised_at": got[1].data["raised_at"]}


async def test_resuming_from_the_last_id_gives_every_later_event_exactly_once(
    redis: Redis, hub: EventHub, room: str
) -> None:
    q = Queue(redis)
    people = [await q.join(room) for _ in range(5)]
    async with hub.subscribe(room) as sub:
        await q.raise_hand(room, people[0], source="keypad")
        (first,) = await take(sub, 1)
        last_seen = sub.last_id
    assert last_seen == first.id
    # While disconnected, more happens.
    for p in people[1:]:
        await q.raise_hand(room, p, source="web")
    await q.lower_hand(room, people[0], by="host")

    async def keep_changing() -> None:
        for p in people:
            await q.update(room, p, muted=False)

    async with hub.subscribe(room, after=last_seen) as sub:
        writer = asyncio.create_task(keep_changing())
        got = await take(sub, 4 + 1 + 5)
        await writer
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(sub.get(), 0.3)  # nothing more, no duplicates
    expected = [e.id for e in await read_events(redis, room, last_seen)]
    assert [e.id for e in got] == expected
    assert len({e.id for e in got}) == len(got)


async def test_many_local_subscribers_share_one_reader_per_room(
    redis: Redis, hub: EventHub, room: str
) -> None:
    q = Queue(redis)
    async with hub.subscribe(room) as s1, hub.subscribe(room) as s2, hub.subscribe(room) as s3:
        assert len(hub._readers) == 1
        p = await q.join(room)
        for sub in (s1, s2, s3):
            (e,) = await take(sub, 1)
            assert e.participant == p
    assert hub._readers == {}  # the reader stops with its last subscriber
    assert all(r.stopped for r in hub._stopping)


async def test_two_app_instances_on_one_redis_see_the_same_events(
    redis_url: str, redis: Redis, room: str
) -> None:
    settings = Settings(redis_url=redis_url)
    app_a, app_b = create_app(settings), create_app(settings)
    async with app_a.test_app(), app_b.test_app():
        svc_a, svc_b = services(app_a), services(app_b)
        assert svc_a.redis is not svc_b.redis
        async with svc_a.hub.subscribe(room) as sub_a, svc_b.hub.subscribe(room) as sub_b:
            pid = await svc_a.queue.join(room)
            await svc_b.queue.raise_hand(room, pid, source="web")
            got_a, got_b = await take(sub_a, 2), await take(sub_b, 2)
    assert [e.to_dict() for e in got_a] == [e.to_dict() for e in got_b]
    assert [e.type for e in got_a] == ["participant.joined", "hand.raised"]


async def test_a_subscriber_that_falls_behind_resumes_without_losing_anything(
    redis: Redis, room: str
) -> None:
    hub = EventHub(redis, block_ms=200, queue_size=3)
    q = Queue(redis)
    try:
        async with hub.subscribe(room) as sub:
            people = [await q.join(room) for _ in range(6)]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while not sub._lagged and loop.time() < deadline:  # noqa: ASYNC110 - reader state
                await asyncio.sleep(0.01)  # poll the reader's progress, with a deadline
            with pytest.raises(SubscriptionLagged):
                await take(sub, 1)
            resume_from = sub.last_id
        assert resume_from is not None
        async with hub.subscribe(room, after=resume_from) as sub:
            got = await take(sub, 6)
    finally:
        await hub.close()
    assert [e.participant for e in got] == people


async def test_resuming_from_before_the_capped_stream_announces_a_reset(
    redis_url: str, room: str
) -> None:
    client = client_from_url(redis_url)
    q = Queue(client, maxlen=100)
    try:
        hub = EventHub(client, block_ms=200)
        first = (await read_events(client, room))[0].id
        people = [await q.join(room) for _ in range(10)]
        for _ in range(30):
            for p in people:
                await q.update(room, p, muted=False)
                await q.update(room, p, muted=True)
        async with hub.subscribe(room, after=first) as sub:
            (event,) = await take(sub, 1)
        await hub.close()
    finally:
        await client.aclose()
    assert event.type == RESET


async def test_subscribing_while_redis_is_down_fails_clearly_instead_of_hanging() -> None:
    dead = client_from_url(f"redis://127.0.0.1:{free_port()}/0")
    hub = EventHub(dead, block_ms=100, ready_timeout=0.5)
    try:
        with pytest.raises(REDIS_ERRORS):
            async with hub.subscribe("rroom"):
                pass
    finally:
        await hub.close()
        await dead.aclose()


async def test_subscribe_refuses_a_malformed_resume_id(hub: EventHub, room: str) -> None:
    with pytest.raises(ValueError):
        async with hub.subscribe(room, after="yesterday"):
            pass


def test_sse_splits_multiline_data_into_data_lines() -> None:
    text = sse("<li>\n  a\r\n</li>", event="queue", id="17-0")
    assert text == "event: queue\nid: 17-0\ndata: <li>\ndata:   a\ndata: </li>\n\n"


def test_sse_refuses_a_newline_in_the_event_name() -> None:
    with pytest.raises(ValueError):
        sse("x", event="a\nb")


def test_sse_comment_is_ignored_by_event_parsers() -> None:
    assert sse_comment() == ": keep-alive\n\n"
    assert sse("", retry_ms=3000) == "retry: 3000\ndata: \n\n"
