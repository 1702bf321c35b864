"""The whole phone stack for end-to-end tests: the app served over HTTP, the emulator, Redis."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quart import Quart

from handraise.app import create_app
from handraise.config import Settings
from handraise.phone.control import HostControls
from handraise.phone.webhooks import host_controls
from handraise.queue import Queue
from handraise.rooms import Room
from handraise.sim import ServedApp, SimConfig, Simulator, free_port
from handraise.store import Redis, client_from_url, spawn_redis_server, wait_until_ready

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "e2eToken0123456789abcdef01234567"
HOST_PASSWORD = "e2e host password"


@dataclass
class Stack:
    app: Quart
    served: ServedApp
    sim: Simulator
    redis: Redis
    queue: Queue

    @property
    def host(self) -> HostControls:
        return host_controls(self.app)

    async def dial_in(self, digits: str, number: str) -> str:
        """Place a call and type ``digits`` at the code prompt; returns the CallSid."""
        sid = self.sim.place_call(number, "+15550109999")
        await self.sim.wait_event("gather-start", call_sid=sid, num_digits=6)
        self.sim.press(sid, digits)
        return sid

    async def join(self, code: str, number: str, *, host: bool = False) -> tuple[str, str]:
        """Dial in and reach the conference; returns (CallSid, participant id)."""
        sid = await self.dial_in(code, number)
        if not host:
            await self.sim.wait_event("gather-start", call_sid=sid, num_digits=2)
        await self.sim.wait_event("conference", call_sid=sid, event="participant-join")
        return sid, self.sim.state(sid)["conference"]["label"]

    async def reach_prejoin(self, room: Room, number: str) -> tuple[str, str]:
        """Dial ``room``'s access code and stop in the pre-join window; (CallSid, participant id)."""
        sid = await self.dial_in(room.access_code, number)
        await self.sim.wait_event("gather-start", call_sid=sid, num_digits=2)
        [pid] = [p.id for p in (await self.queue.snapshot(room.id)).participants
                 if p.call_sid == sid]
        return sid, pid

    def said(self, sid: str) -> str:
        return " | ".join(str(t.get("text", "")) for t in self.sim.transcript(sid))

    def errors(self) -> list[dict[str, Any]]:
        return [e for c in self.sim.engine.calls.values() for e in c.errors]


class StoppableRedis:
    """A persistent redis-server this test can stop and start again on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = spawn_redis_server(
            ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--dir", str(self.workdir)])
        wait_until_ready({"host": "127.0.0.1", "port": self.port})

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


@contextlib.asynccontextmanager
async def phone_stack(redis_url: str, *, reconcile_interval_s: float = 20.0,
                      app_settings: dict[str, Any] | None = None, app_connects: bool = False,
                      **sim_options: Any) -> AsyncIterator[Stack]:
    """App + emulator on free ports; the app's public URL is where it is served.
    ``app_settings`` overrides fields of the app's :class:`Settings`. With ``app_connects``
    the app connects to ``redis_url`` itself (HANDRAISE_REDIS_URL); else it is handed the
    test's client."""
    port, sim_port = free_port(), free_port()
    public = f"http://127.0.0.1:{port}"
    redis = client_from_url(redis_url)
    settings = Settings(public_url=public, twilio_account_sid=ACCOUNT_SID,
                        twilio_auth_token=AUTH_TOKEN, twilio_api_url=f"http://127.0.0.1:{sim_port}",
                        reconcile_interval_s=reconcile_interval_s, host_password=HOST_PASSWORD,
                        secret_key="e2e-secret-key-0123456789abcdef",
                        redis_url=redis_url if app_connects else None, **(app_settings or {}))
    app = create_app(settings, redis=None if app_connects else redis)
    options: dict[str, Any] = {"media_time_scale": 0.0, "wait_time_scale": 0.05, "seed": 11,
                               "background": "silence"}
    options |= sim_options
    config = SimConfig(voice_url=public + "/voice/incoming", account_sid=ACCOUNT_SID,
                       auth_token=AUTH_TOKEN, port=sim_port, **options)
    try:
        async with ServedApp(app, port=port, health_path="/healthz") as served, \
                Simulator(config) as sim:
            yield Stack(app, served, sim, redis, Queue(redis))
    finally:
        await redis.aclose()


async def until(check: Callable[[], Any], timeout: float = 10.0) -> Any:  # noqa: ASYNC109
    """Poll an async or sync check with a deadline; returns its first truthy value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)  # polling with a deadline, not synchronisation
