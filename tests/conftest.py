"""Shared fixtures: a real redis-server spawned on a free port for the whole run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from handraise.store import Redis, client_from_url, scratch_redis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a throwaway redis-server (no persistence) running for the test session."""
    with scratch_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
async def redis(redis_server: str) -> AsyncIterator[Redis]:
    """An asyncio client on an emptied database."""
    client = client_from_url(redis_server)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()
