"""Serving: the :class:`Simulator` (engine + HTTP on one port) and ``serve_asgi``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from types import TracebackType
from typing import Any

import httpx
from hypercorn.asyncio import serve
from hypercorn.config import Config

from handraise.sim.engine import Call, Engine, SimConfig, SimEvent
from handraise.sim.rest import create_sim_app

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class ServedApp:
    """An ASGI app served by hypercorn on this loop; ``async with`` starts and stops it.

    The handraise app itself (it carries ``HANDRAISE_SETTINGS``) is served the way
    ``handraise serve`` serves it: hypercorn for HTTP, the C media reader for
    ``/voice/stream``, one port (:mod:`handraise.phone.fastmedia`).
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0,
                 health_path: str = "/") -> None:
        self.app = app
        self.settings = getattr(app, "config", {}).get("HANDRAISE_SETTINGS")
        self.host = host
        self.port = port or free_port(host)
        self.health_path = health_path
        self._shutdown = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self, timeout: float = 10.0) -> str:  # noqa: ASYNC109
        if self.settings is not None:
            from handraise.phone.fastmedia import listening_socket, serve_app

            sock = listening_socket(self.host, self.port)
            self._task = asyncio.ensure_future(serve_app(
                self.app, self.settings, [sock], shutdown_trigger=self._shutdown.wait))
        else:
            config = Config()
            config.bind = [f"{self.host}:{self.port}"]
            config.accesslog = None
            config.errorlog = logging.getLogger("hypercorn.error")
            config.graceful_timeout = 1.0
            self._task = asyncio.ensure_future(serve(self.app, config,
                                                     shutdown_trigger=self._shutdown.wait))
        deadline = asyncio.get_running_loop().time() + timeout
        async with httpx.AsyncClient(trust_env=False) as client:
            while True:
                if self._task.done():
                    self._task.result()  # raises the start-up error
                try:
                    await client.get(self.base_url + self.health_path, timeout=1.0)
                    return self.base_url
                except httpx.TransportError:
                    if asyncio.get_running_loop().time() > deadline:
                        raise TimeoutError(f"{self.base_url} did not come up") from None
                    await asyncio.sleep(0.02)  # polling with a deadline, not synchronisation

    async def stop(self) -> None:
        self._shutdown.set()
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._task, 5.0)

    async def __aenter__(self) -> ServedApp:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()


class Simulator:
    """The Twilio emulator, in-process: ``async with Simulator(config) as sim: …``.

    ``sim.base_url`` is what the app under test uses instead of ``https://api.twilio.com``.
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.engine = Engine(config)
        self.app = create_sim_app(self.engine)
        self.server = ServedApp(self.app, host=config.host, port=config.port,
                                health_path="/sim/health")

    @property
    def base_url(self) -> str:
        return self.server.base_url

    async def start(self) -> str:
        return await self.server.start()

    async def stop(self) -> None:
        await self.engine.close()
        await self.server.stop()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    # -------------------------------------------------------------- test API
    def place_call(self, from_: str = "+15550100001", to: str = "+15550109999", *,
                   voice_url: str | None = None) -> str:
        """Start an inbound call to the voice URL; returns its CallSid."""
        return self.engine.place_call(from_, to, voice_url=voice_url).sid

    def call(self, sid: str) -> Call:
        return self.engine.calls[sid]

    def press(self, sid: str, digits: str) -> None:
        """The caller presses keys (tones in streams, digits to a listening Gather…)."""
        self.engine.press(self.engine.calls[sid], digits)

    def speak(self, sid: str, duration_ms: float = 1500.0) -> None:
        self.engine.speak(self.engine.calls[sid], duration_ms)

    async def hang_up(self, sid: str) -> None:
        await self.engine.hang_up(sid)

    def state(self, sid: str) -> dict[str, Any]:
        return self.engine.call_state(self.engine.calls[sid])

    def transcript(self, sid: str) -> list[dict[str, Any]]:
        return list(self.engine.calls[sid].transcript)

    @property
    def events(self) -> list[SimEvent]:
        return self.engine.events

    async def wait_event(self, kind: str, /, *, call_sid: str | None = None, after: int = 0,
                         timeout: float = 10.0, **match: Any) -> SimEvent:  # noqa: ASYNC109
        return await self.engine.wait_event(kind, call_sid=call_sid, after=after,
                                            timeout=timeout, **match)

    async def wait_for(self, predicate: Any, *, timeout: float = 10.0,  # noqa: ASYNC109
                       after: int = 0) -> SimEvent:
        return await self.engine.wait_for(predicate, timeout=timeout, after=after)
