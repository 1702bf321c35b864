"""Fixtures of the property tests: one app on a real Redis, driven from plain (sync) tests.

Hypothesis runs each example as a plain function call, so the app lives in an
:class:`asyncio.Runner` of this module's own: it starts once, and every example runs its
requests to completion in that loop (``fuzz.run(coro)``).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fuzzkit import ACCOUNT_SID, PASSWORD, PUBLIC, TOKEN, Fuzz

from handraise.app import create_app
from handraise.config import Settings
from handraise.queue import Queue
from handraise.store import client_from_url

sys.path.insert(0, str(Path(__file__).parent.parent / "phone"))  # twimlcheck, shared with tests/phone


@pytest.fixture(scope="module")
def fuzz(redis_server: str) -> Iterator[Fuzz]:
    """The app (voice, companion page, API) on the session's redis-server; Twilio's REST
    URL leads nowhere, so announcements fail softly, as they must."""
    settings = Settings(public_url=PUBLIC, twilio_account_sid=ACCOUNT_SID, twilio_auth_token=TOKEN,
                        twilio_api_url="http://127.0.0.1:9", host_password=PASSWORD,
                        secret_key="fuzz-secret-key-0123456789abcdef",
                        # Not under test here: its pass over the examples' thousands of rooms
                        # (each asking the unreachable Twilio) would only slow the examples.
                        reconcile_interval_s=3600)
    with asyncio.Runner() as runner:
        redis = client_from_url(redis_server)
        runner.run(redis.flushall())
        app = create_app(settings, redis=redis)
        served = app.test_app()
        runner.run(served.__aenter__())
        try:
            yield Fuzz(runner, app, redis, Queue(redis))
        finally:
            runner.run(served.__aexit__(None, None, None))
            runner.run(redis.aclose())
