"""API tokens: shown once, stored as a hash, scoped, revocable, rate-limited."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

from handraise.errors import Invalid, NotFound
from handraise.rooms import create_room
from handraise.store import Redis, is_cluster
from handraise.tokens import authenticate, create_token, list_tokens, revoke_token, take, token_hash


async def test_a_token_is_stored_only_as_its_hash(redis: Redis) -> None:
    secret, token = await create_token(redis, "chat bridge")
    assert re.fullmatch(r"hr_[A-Za-z0-9_-]{43}", secret)
    every = {"target_nodes": RedisCluster.PRIMARIES} if is_cluster(redis) else {}
    dump = json.dumps({k: await _value(redis, k) for k in await redis.keys("*", **every)})
    assert secret not in dump and token_hash(secret) in dump
    found = await authenticate(redis, secret)
    assert found is not None and found.id == token.id and found.room is None
    assert (await list_tokens(redis))[0].last_used_at is not None


async def _value(redis: Redis, k: str) -> object:
    kind = await redis.type(k)
    if kind == "hash":
        return await redis.hgetall(k)
    if kind == "string":
        return await redis.get(k)
    if kind == "zset":
        return await redis.zrange(k, 0, -1)
    return kind


async def test_unknown_malformed_and_revoked_tokens_authenticate_nobody(redis: Redis) -> None:
    secret, token = await create_token(redis, "bot")
    assert await authenticate(redis, "hr_" + "x" * 43) is None
    assert await authenticate(redis, "not a token") is None
    assert (await revoke_token(redis, token.id)).name == "bot"
    assert await authenticate(redis, secret) is None
    assert await list_tokens(redis) == []
    with pytest.raises(NotFound):
        await revoke_token(redis, token.id)


async def test_a_room_token_needs_a_room_that_exists(redis: Redis) -> None:
    room = (await create_room(redis, "Scoped")).room.id
    _, token = await create_token(redis, "screen", room=room)
    assert token.room == room
    with pytest.raises(NotFound):
        await create_token(redis, "screen", room="rnothere")
    with pytest.raises(Invalid):
        await create_token(redis, "  ")


async def test_tokens_are_revoked_by_name_only_when_the_name_is_unambiguous(redis: Redis) -> None:
    await create_token(redis, "twin")
    await create_token(redis, "twin")
    _, single = await create_token(redis, "single")
    with pytest.raises(Invalid, match="by its id"):
        await revoke_token(redis, "twin")
    assert (await revoke_token(redis, "single")).id == single.id


async def test_the_rate_limit_counts_requests_per_token_and_says_how_long_to_wait(redis: Redis) -> None:
    _, slow = await create_token(redis, "slow", rate_per_min=3)
    _, other = await create_token(redis, "other", rate_per_min=3)
    assert [await take(redis, slow) for _ in range(3)] == [0, 0, 0]
    wait = await take(redis, slow)
    assert 1 <= wait <= 60
    assert await take(redis, other) == 0  # each token has its own window


@pytest.mark.slow
def test_tokens_create_list_revoke_from_the_command_line(tmp_path: Path) -> None:
    env = {"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path),
           "HANDRAISE_DATA_DIR": str(tmp_path / "data")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "handraise.cli", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    created = cli("tokens", "create", "--name", "meeting bot", "--rate", "120")
    assert created.returncode == 0, created.stderr
    secret = re.search(r"hr_[A-Za-z0-9_-]{43}", created.stdout)
    token_id = re.search(r"Token (t\w+) created", created.stdout)
    assert secret and token_id
    listed = cli("tokens", "list")
    assert token_id.group(1) in listed.stdout and "meeting bot" in listed.stdout
    assert secret.group(0) not in listed.stdout and "120" in listed.stdout
    assert cli("tokens", "create", "--name", "x", "--room", "rnothere").returncode == 1
    revoked = cli("tokens", "revoke", token_id.group(1))
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    assert "No tokens" in cli("tokens", "list").stdout
