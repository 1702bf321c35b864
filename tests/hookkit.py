"""Webhook receivers for tests and benchmarks: one served by Quart, one that never answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from quart import Quart, Response, request

from handraise.hooks import SIGNATURE_HEADER, Clock, verify
from handraise.sim import ServedApp
from handraise.store import free_port


@dataclass
class Delivery:
    body: bytes
    headers: dict[str, str]
    received_at: float  # time.time() when it arrived

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.body))

    @property
    def signed_at(self) -> int:
        return int(self.headers[SIGNATURE_HEADER].split(",")[0].removeprefix("t="))


@dataclass
class Receiver:
    """Every POST it got (``tries``) and those it accepted (``accepted``), in arrival order."""

    url: str
    tries: list[Delivery] = field(default_factory=list)
    accepted: list[Delivery] = field(default_factory=list)
    #: Decides the status of each try (default 200); sees the try and how many came before.
    answer: Callable[[Delivery, int], int] = lambda _d, _n: 200
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def ids(self) -> list[str]:
        return [d.event["id"] for d in self.accepted]

    def signed_by(self, secret: str, *, now: float | None = None) -> bool:
        return all(verify(secret, d.body, d.headers[SIGNATURE_HEADER], now=now or d.signed_at)
                   for d in self.tries)

    async def until(self, check: Callable[[Receiver], bool], timeout: float = 15.0) -> None:  # noqa: ASYNC109
        """Wait (woken by each delivery) until ``check`` holds, or fail after ``timeout``."""
        async with asyncio.timeout(timeout):
            while not check(self):
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def receiver(answer: Callable[[Delivery, int], int] | None = None) -> AsyncIterator[Receiver]:
    """A receiver on a free port, served by hypercorn in this loop."""
    app = Quart("receiver")
    port = free_port()
    got = Receiver(url=f"http://127.0.0.1:{port}/hook")
    if answer is not None:
        got.answer = answer

    @app.post("/hook")
    async def post_hook() -> Response:
        delivery = Delivery(await request.get_data(), dict(request.headers), time.time())
        status = got.answer(delivery, len(got.tries))
        got.tries.append(delivery)
        if 200 <= status < 300:
            got.accepted.append(delivery)
        got.changed.set()
        return Response("", status=status)

    @app.get("/")
    async def get_root() -> str:
        return "ok"

    async with ServedApp(app, port=port, health_path="/"):
        yield got


@contextlib.asynccontextmanager
async def black_hole() -> AsyncIterator[str]:
    """A URL whose server accepts connections and reads, but never answers."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:  # noqa: ASYNC109
    """Poll an async check with a deadline; returns its first truthy value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)  # polling with a deadline, not synchronisation


class FastClock(Clock):
    """Time ``scale`` times faster than the wall's: backoff of minutes passes in milliseconds."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.start_wall = time.time()
        self.start = time.monotonic()

    def now(self) -> float:
        return self.start_wall + (time.monotonic() - self.start) * self.scale

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.scale)  # a scaled timer, not synchronisation
