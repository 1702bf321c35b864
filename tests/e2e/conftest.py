"""Fixtures of the end-to-end phone tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from phonekit import StoppableRedis


@pytest.fixture
def stoppable(tmp_path: Path) -> Iterator[StoppableRedis]:
    """A redis-server the test can stop and start again on the same port."""
    server = StoppableRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
