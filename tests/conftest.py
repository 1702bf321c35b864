"""Shared fixtures: a real redis-server spawned on a free port for the whole run."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from handraise.store import Redis, client_from_url, free_port, spawn_redis_server, wait_until_ready


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a throwaway redis-server (no persistence) running for the test session."""
    workdir: Path = tmp_path_factory.mktemp("redis")
    port = free_port()
    proc = spawn_redis_server(
        ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)]
    )
    try:
        wait_until_ready({"host": "127.0.0.1", "port": port})
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
async def redis(redis_server: str) -> AsyncIterator[Redis]:
    """An asyncio client on an emptied database."""
    client = client_from_url(redis_server)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()
