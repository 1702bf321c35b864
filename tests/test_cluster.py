"""Redis Cluster: the URL picks the cluster client; rooms spread over every primary and work.

The domain tests run on the cluster too (see conftest.py); these check what only a cluster
has: several nodes, and readers that must keep each command's keys in one slot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.exceptions
from hookkit import receiver
from redis.asyncio.cluster import RedisCluster

from handraise.app import create_app
from handraise.config import Settings
from handraise.events import REDIS_ERRORS, EventHub, read_events
from handraise.hooks import HookSettings, HookWorker, add_hook
from handraise.pins import issue_pin
from handraise.queue import Queue
from handraise.rooms import close_room, create_room, list_rooms
from handraise.store import Redis, client_from_url, free_port, is_cluster, key, slot_of

pytestmark = pytest.mark.cluster

QUICK = HookSettings(scan_s=0.05, lease_s=3.0, read_block_s=0.2, timeout_s=5.0, trust_env=False)


@pytest.fixture
async def cluster(redis_cluster: str) -> AsyncIterator[Redis]:
    client = client_from_url(redis_cluster)
    await client.flushall()
    yield client
    await client.aclose()


async def rooms_on_every_primary(redis: Redis) -> list[str]:
    """Rooms created until each primary holds one (ids are random, so slots are too)."""
    by_node: dict[str, str] = {}
    primaries = {n.name for n in redis.get_primaries()}
    for _ in range(60):
        room = (await create_room(redis, "Spread")).room.id
        node = redis.get_node_from_key(key(room, "room")).name
        by_node.setdefault(node, room)
        if set(by_node) == primaries:
            return list(by_node.values())
    raise AssertionError(f"60 rooms landed on only {sorted(by_node)}")


async def test_a_cluster_url_gives_the_cluster_client_and_a_plain_url_one_server(
        redis_cluster: str, redis_server: str) -> None:
    clustered, single = client_from_url(redis_cluster), client_from_url(redis_server)
    try:
        assert isinstance(clustered, RedisCluster) and is_cluster(clustered)
        assert not is_cluster(single)
        assert await clustered.ping()
        assert len(clustered.get_primaries()) == 3
    finally:
        await clustered.aclose()
        await single.aclose()


async def test_rooms_on_three_primaries_each_keep_their_queue_and_close_cleanly(cluster: Redis) -> None:
    rooms = await rooms_on_every_primary(cluster)
    assert len({slot_of(key(r, "room")) for r in rooms}) == 3
    q = Queue(cluster)
    for room in rooms:
        a, b = await q.join(room, number="+15550100001"), await q.join(room, number="+15550100002")
        await q.raise_hand(room, b, source="keypad")
        await q.raise_hand(room, a, source="web")
        assert [h.participant for h in await q.queue(room)] == [b, a]
        await q.call_on(room)  # the next hand: b
        assert (await q.snapshot(room)).speaker == b
    assert [await close_room(cluster, r) for r in rooms] == [True, True, True]
    for room in rooms:
        assert [e.type for e in await read_events(cluster, room)][-1] == "room.closed"
        assert await cluster.exists(key(room, "participants"), key(room, "hands")) == 0


async def test_the_event_hub_follows_rooms_on_different_primaries(cluster: Redis) -> None:
    rooms = await rooms_on_every_primary(cluster)
    hub, q = EventHub(cluster, block_ms=200), Queue(cluster)
    try:
        for room in rooms:
            async with hub.subscribe(room) as sub:
                pid = await q.join(room)
                event = await sub.get()
                assert (event.type, event.participant) == ("participant.joined", pid)
    finally:
        await hub.close()


async def test_one_hook_worker_delivers_every_room_on_every_primary_in_order(cluster: Redis) -> None:
    # On one server a single XREAD follows every room; on a cluster one per slot.
    async with receiver() as got:
        await add_hook(cluster, got.url)
        worker = HookWorker(cluster, settings=QUICK)
        worker.start()
        try:
            rooms = await rooms_on_every_primary(cluster)
            q = Queue(cluster)
            for room in rooms:
                pid = await q.join(room, number="+15550100003")
                await q.raise_hand(room, pid, source="web")
            expected = {r: [e.id for e in await read_events(cluster, r)] for r in rooms}
            total = sum(len(ids) for ids in expected.values())
            await got.until(lambda r: sum(d.event["room"] in expected for d in r.accepted) >= total)
        finally:
            await worker.stop()
    for room, ids in expected.items():
        assert [d.event["id"] for d in got.accepted if d.event["room"] == room] == ids
    assert sum(d.event["room"] in expected for d in got.tries) == total  # each once


async def test_an_unreachable_cluster_is_redis_unavailable_a_503_not_a_500() -> None:
    # redis-py reports it with a bare RedisClusterException, which no handler expects.
    url = f"redis+cluster://127.0.0.1:{free_port()}"
    dead = client_from_url(url)
    try:
        with pytest.raises(redis.exceptions.ConnectionError, match="cannot be connected"):
            await dead.get(key("r1", "room"))
        with pytest.raises(REDIS_ERRORS):
            await Queue(dead).snapshot("r1")  # a script
    finally:
        await dead.aclose()
    app = create_app(Settings(redis_url=url))
    async with app.test_app():
        health = await app.test_client().get("/healthz")
        assert health.status_code == 503 and (await health.get_json())["redis"] == "unreachable"


async def test_the_dashboard_the_companion_page_and_metrics_read_rooms_on_every_primary(
        cluster: Redis) -> None:
    # The web edges over the cluster client: a page of one room (its slot), the companion
    # link (a global PIN key, then the room's), and /metrics (one pipeline over every room).
    rooms = await rooms_on_every_primary(cluster)
    q = Queue(cluster)
    pids = {}
    for room in rooms:
        pids[room] = await q.join(room, number="+15550100004", call_sid="CA" + "4" * 32)
        await q.raise_hand(room, pids[room], source="keypad")
    app = create_app(Settings(public_url="http://localhost", host_password="correct horse battery",
                              secret_key="cluster-secret-key-0123456789ab", metrics_access="host"),
                     redis=cluster)
    async with app.test_app():
        host = app.test_client()
        assert (await host.post("/host/login", form={"password": "correct horse battery"})).status_code == 303
        for room in rooms:
            page = await host.get(f"/host/rooms/{room}")
            assert page.status_code == 200 and "Caller 0004" in await page.get_data(as_text=True)
        caller = app.test_client()
        pin = await issue_pin(cluster, rooms[1], pids[rooms[1]])
        assert (await caller.post("/join", form={"pin": pin})).status_code == 303
        me = await caller.get("/me")
        assert "ending 0004" in await me.get_data(as_text=True)
        metrics = await (await host.get("/metrics")).get_data(as_text=True)
    open_rooms = len(await list_rooms(cluster))
    assert f"handraise_rooms_open {open_rooms}" in metrics
    assert f"handraise_hands_raised {len(rooms)}" in metrics
