"""Shared fixtures: a real redis-server, and a real 3-master Redis Cluster, for the whole run.

The domain tests (:data:`BOTH_REDIS`) run twice through the ``redis`` fixture: on one
server and on the cluster (``-m "not cluster"`` skips the second run). On the cluster every
multi-key command must keep to one slot, which the rooms' hash tags promise.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator

import pytest

from handraise.store import Redis, client_from_url, scratch_cluster, scratch_redis

#: Test modules whose ``redis`` runs on both a single server and the cluster.
BOTH_REDIS = re.compile(r"(^|\.)test_(queue|events|rooms\w*|tokens|hooks|handlog|pins)$")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "redis_kind" in metafunc.fixturenames and BOTH_REDIS.search(metafunc.module.__name__):
        metafunc.parametrize(
            "redis_kind", ["single", pytest.param("cluster", marks=pytest.mark.cluster)], indirect=True)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a throwaway redis-server (no persistence) running for the test session."""
    with scratch_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis+cluster://`` URL of a throwaway 3-master Redis Cluster for the test session."""
    with scratch_cluster(tmp_path_factory.mktemp("cluster")) as url:
        yield url


@pytest.fixture
def redis_kind(request: pytest.FixtureRequest) -> str:
    """``"single"`` or ``"cluster"``: which Redis the ``redis`` fixture connects to."""
    return str(getattr(request, "param", "single"))


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, redis_kind: str) -> str:
    """URL of the Redis the ``redis`` fixture uses (the cluster one is started on first use)."""
    return str(request.getfixturevalue("redis_cluster" if redis_kind == "cluster" else "redis_server"))


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """An asyncio client on an emptied database (every primary, on the cluster)."""
    client = client_from_url(redis_url)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()
