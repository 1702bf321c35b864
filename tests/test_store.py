"""Key naming and the embedded, persistent Redis."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from handraise.queue import Queue
from handraise.rooms import create_room, find_by_code
from handraise.store import EmbeddedRedis, Redis, client_from_url, eval_script, global_key, key


def test_every_room_key_carries_the_room_hash_tag() -> None:
    assert key("r1", "hands") == "hr:{r1}:hands"
    assert key("r1", "p", "pabc") == "hr:{r1}:p:pabc"
    assert global_key("code", "x") == "hr:code:x"
    for bad in ("", "a}b", "a:b"):
        with pytest.raises(ValueError):
            key(bad, "hands")


async def test_a_growing_pool_does_not_read_package_metadata_per_connection(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst of calls grows the pool by dozens of connections at once: each must be cheap
    (redis-py 8 otherwise resolves its driver version from the package metadata every time)."""
    import redis.utils

    client = client_from_url("redis://127.0.0.1:9/0")  # never connected
    lookups: list[int] = []
    real = redis.utils.get_lib_version
    monkeypatch.setattr(redis.utils, "get_lib_version", lambda: lookups.append(1) or real())
    try:
        pool = client.connection_pool
        made = [pool.make_connection() for _ in range(3)]
        assert lookups == []
        if hasattr(made[0], "driver_info"):
            assert made[0].driver_info is made[1].driver_info is made[2].driver_info
    finally:
        await client.aclose()


async def _create_and_raise(url: str) -> tuple[str, str, list[str]]:
    client = client_from_url(url)
    try:
        created = await create_room(client, "Persisted")
        room = created.room.id
        q = Queue(client)
        people = [await q.join(room) for _ in range(3)]
        for p in reversed(people):
            await q.raise_hand(room, p, source="keypad")
        return room, created.room.access_code, list(reversed(people))
    finally:
        await client.aclose()


async def _read_back(url: str, room: str, code: str) -> tuple[list[str], str | None]:
    client = client_from_url(url)
    try:
        found = await find_by_code(client, code)
        hands = [h.participant for h in await Queue(client).queue(room)]
        return hands, found[0].id if found else None
    finally:
        await client.aclose()


def test_restarting_the_embedded_redis_keeps_rooms_and_hands(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as server:
        room, code, order = asyncio.run(_create_and_raise(server.url))
    assert not server.socket_path.exists()  # really stopped
    assert (tmp_path / "appendonlydir").exists() or (tmp_path / "appendonly.aof").exists()
    with EmbeddedRedis(tmp_path) as server:
        hands, found = asyncio.run(_read_back(server.url, room, code))
    assert hands == order
    assert found == room


def test_two_users_share_one_embedded_server_and_the_last_stops_it(tmp_path: Path) -> None:
    first, second = EmbeddedRedis(tmp_path), EmbeddedRedis(tmp_path)
    first.start()
    second.start()
    first.stop()
    assert second.socket_path.exists()
    asyncio.run(_create_and_raise(second.url))
    second.stop()
    assert not second.socket_path.exists()


async def test_a_script_runs_by_its_hash_and_again_after_the_server_forgot_it(redis: Redis) -> None:
    script = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
    name = key("r-script", "n")
    await redis.delete(name)
    assert await eval_script(redis, script, 1, name, 2) == 2
    await redis.script_flush()  # as after a Redis restart: the server no longer knows it
    assert await eval_script(redis, script, 1, name, 3) == 5
    assert await redis.script_exists(hashlib.sha1(script.encode()).hexdigest()) == [True]
