"""A signed-in host over Quart's test client, on a real Redis."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from quart import Quart
from quart.typing import TestClientProtocol

from handraise.app import create_app
from handraise.config import Settings
from handraise.store import Redis

PASSWORD = "correct horse battery"
SECRET = "test-secret-key-0123456789abcdef"


def settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"public_url": "http://localhost", "host_password": PASSWORD,
                            "secret_key": SECRET}
    return Settings(**(base | overrides))


@dataclass
class Host:
    app: Quart
    client: TestClientProtocol
    csrf: str

    def headers(self, **extra: str) -> dict[str, str]:
        return {"X-CSRF-Token": self.csrf, **extra}


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', html)
    assert found, "no CSRF field in the page"
    return found.group(1)


async def sign_in(client: TestClientProtocol, password: str = PASSWORD) -> str:
    """Sign in; returns the session's CSRF token read from the rooms page."""
    response = await client.post("/host/login", form={"password": password})
    assert response.status_code == 303, await response.get_data(as_text=True)
    page = await client.get("/host")
    return csrf_of(await page.get_data(as_text=True))


@contextlib.asynccontextmanager
async def signed_in(redis: Redis, **overrides: Any) -> AsyncIterator[Host]:
    app = create_app(settings(**overrides), redis=redis)
    async with app.test_app():
        client = app.test_client()
        yield Host(app, client, await sign_in(client))
