"""``handraise serve`` in a child process, the way an operator runs it, and Media Streams
clients that play Twilio's part on its ``/voice/stream`` (many at once)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from phonekit import ACCOUNT_SID, AUTH_TOKEN, HOST_PASSWORD
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect

from handraise.queue import Queue
from handraise.rooms import create_room
from handraise.sim import free_port
from handraise.store import Redis


class Served:
    """One ``handraise serve`` process on a fixed port; it can be killed and started again."""

    def __init__(self, redis_url: str, log_path: Path, *, port: int | None = None,
                 env: dict[str, str] | None = None, workers: int = 1) -> None:
        self.port = port or free_port()
        self.workers = workers
        self.public = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = os.environ | {
            "HANDRAISE_PUBLIC_URL": self.public, "HANDRAISE_REDIS_URL": redis_url,
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            # Nothing listens here unless the test says otherwise: REST calls fail at once.
            "HANDRAISE_TWILIO_API_URL": "http://127.0.0.1:9",
            "HANDRAISE_SECRET_KEY": "e2e-secret-key-0123456789abcdef",
            "HANDRAISE_HOST_PASSWORD": HOST_PASSWORD, "HANDRAISE_RECONCILE_INTERVAL": "3600",
            "HANDRAISE_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1",
        } | (env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/voice/stream"

    def start(self, timeout: float = 30.0) -> None:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "handraise.cli", "serve", "--host", "127.0.0.1",
                 "--port", str(self.port), "--workers", str(self.workers)],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                httpx.get(self.public + "/healthz", timeout=1.0, trust_env=False)
                return
            except httpx.TransportError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("handraise serve did not start:\n" + self.log()) from None
                time.sleep(0.05)  # polling a child process to listen; nothing to wait on

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """``kill -9``: no shutdown code runs."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, as a service manager stops it; the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@contextlib.contextmanager
def serving(redis_url: str, log_path: Path) -> Iterator[Served]:
    """A started :class:`Served`; at the end it must stop cleanly on SIGTERM (exit code 0)."""
    served = Served(redis_url, log_path)
    served.start()
    try:
        yield served
    finally:
        assert served.terminate() == 0, served.log()[-3000:]


@dataclass
class Caller:
    """A participant seeded in Redis, as if their call had come in."""

    room: str
    pid: str
    call_sid: str


async def seed_callers(redis: Redis, rooms: int, per_room: int) -> list[Caller]:
    """``rooms`` open stream rooms with ``per_room`` participants each (no Twilio call)."""
    queue = Queue(redis)
    out = []
    for r in range(rooms):
        room = (await create_room(redis, f"Burst {r}")).room
        for i in range(per_room):
            pid, call_sid = f"p{r}x{i}", f"CA{r:04d}{i:028x}"
            await queue.join(room.id, call_sid=call_sid, label=pid, participant_id=pid)
            out.append(Caller(room.id, pid, call_sid))
    return out


@dataclass
class StreamClient:
    """Twilio's side of one Media Streams socket: connected, start, then (optionally) stop."""

    caller: Caller
    ws: ClientConnection | None = None
    closed: asyncio.Future[None] | None = None
    messages: list[str] = field(default_factory=list)
    sent: int = 0
    _pump: asyncio.Task[None] | None = None

    async def open(self, url: str) -> None:
        signature = RequestValidator(AUTH_TOKEN).compute_signature(url, {})
        self.ws = await connect(url, additional_headers={"X-Twilio-Signature": signature},
                                proxy=None, compression=None, open_timeout=30,
                                ping_interval=None)
        stream_sid = "MZ" + self.caller.call_sid[2:]
        await self.ws.send(json.dumps({"event": "connected", "protocol": "Call",
                                       "version": "1.0.0"}))
        await self.ws.send(json.dumps({
            "event": "start", "sequenceNumber": "1", "streamSid": stream_sid,
            "start": {"accountSid": ACCOUNT_SID, "streamSid": stream_sid,
                      "callSid": self.caller.call_sid, "tracks": ["inbound"],
                      "customParameters": {"room": self.caller.room,
                                           "participant": self.caller.pid},
                      "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                      "channels": 1}}}))
        self.closed = asyncio.ensure_future(self._read())

    async def send_frames(self, frames: list[bytes]) -> None:
        """Media frames in a row (the server queues them for its 20 ms ticks)."""
        assert self.ws is not None
        stream_sid = "MZ" + self.caller.call_sid[2:]
        for frame in frames:
            self.sent += 1
            await self.ws.send(json.dumps({
                "event": "media", "sequenceNumber": str(self.sent + 1), "streamSid": stream_sid,
                "media": {"track": "inbound", "chunk": str(self.sent),
                          "timestamp": str(self.sent * 20),
                          "payload": base64.b64encode(frame).decode()}}))

    def pump(self, every_s: float, frame: bytes = bytes([0xFF]) * 160) -> None:
        """Send a media frame (default silence) every ``every_s`` until the socket closes."""
        self._pump = asyncio.ensure_future(self._pump_forever(every_s, frame))

    async def _pump_forever(self, every_s: float, frame: bytes) -> None:
        assert self.ws is not None
        stream_sid = "MZ" + self.caller.call_sid[2:]
        payload = base64.b64encode(frame).decode()
        with contextlib.suppress(Exception):
            while self.ws.close_code is None:
                self.sent += 1
                await self.ws.send(json.dumps({
                    "event": "media", "sequenceNumber": str(self.sent + 1),
                    "streamSid": stream_sid,
                    "media": {"track": "inbound", "chunk": str(self.sent),
                              "timestamp": str(self.sent * 20), "payload": payload}}))
                await asyncio.sleep(every_s)  # pacing, as Twilio paces its frames

    async def _read(self) -> None:
        assert self.ws is not None
        with contextlib.suppress(Exception):
            async for message in self.ws:
                self.messages.append(str(message))

    @property
    def close_code(self) -> int | None:
        return None if self.ws is None else self.ws.close_code

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
        if self.ws is not None:
            await self.ws.close()
        if self.closed is not None:
            await self.closed


async def open_streams(url: str, callers: list[Caller]) -> list[StreamClient]:
    """One stream per caller, all opened at once."""
    clients = [StreamClient(c) for c in callers]
    await asyncio.gather(*(c.open(url) for c in clients))
    return clients
