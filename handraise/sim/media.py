"""Media Streams: the emulator opens the app's WebSocket and streams the caller's audio.

Protocol per TWILIO.md §1.4: ``connected``, ``start`` (sequenceNumber "1"), a ``media``
message every 20 ms (160 mu-law bytes, base64, counters as strings), ``stop``. ``dtmf``
messages only on bidirectional ``<Connect><Stream>`` (§1.1). The upgrade request carries
``X-Twilio-Signature`` over the ``ws(s)://`` URL with no params (§1.6).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from handraise.dsp import mulaw, synth
from handraise.sim.engine import DigitSink, new_sid, rfc2822

if TYPE_CHECKING:
    from handraise.sim.engine import Call, Engine

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
FRAME_MS = 20
SEQ: Any = object()  # placeholder: "number this message when it is sent"
FRAME_SAMPLES = synth.FRAME_BYTES  # 160 samples = 160 mu-law bytes = 20 ms at 8 kHz
TRACK_NAMES = {"inbound_track": ["inbound"], "outbound_track": ["outbound"],
               "both_tracks": ["inbound", "outbound"]}


def _rng(engine: Engine) -> np.random.Generator:
    rng = getattr(engine, "_media_rng", None)
    if rng is None:
        rng = np.random.default_rng(engine.config.seed)
        engine._media_rng = rng  # type: ignore[attr-defined]
    return rng


def keypad_audio(engine: Engine, digits: str) -> FloatArray:
    """Tones of a human pressing keys: 70–110 ms tones, 70–130 ms gaps, ordinary levels.

    Each key gets its own duration, level (-13…-7 dBm0 low group) and twist (-2…+2 dB),
    within the ranges a phone's keypad produces (ITU-T Q.24 accepts far wider).
    """
    rng = _rng(engine)
    parts = [synth.silence(float(rng.uniform(40.0, 80.0)))]
    for digit in digits:
        parts.append(synth.dtmf(digit, tone_ms=float(rng.uniform(70.0, 110.0)),
                                gap_ms=float(rng.uniform(70.0, 130.0)),
                                level_dbm0=float(rng.uniform(-13.0, -7.0)),
                                twist_db=float(rng.uniform(-2.0, 2.0)), rng=rng))
    return np.concatenate(parts).astype(np.float64)


def speech_audio(engine: Engine, duration_ms: float) -> FloatArray:
    return np.asarray(synth.speech_like(duration_ms, level_dbm0=-20.0, rng=_rng(engine)),
                      dtype=np.float64)


class MediaStream(DigitSink):
    """One stream of one call: a WebSocket client sending the call's audio."""

    def __init__(self, engine: Engine, call: Call, *, url: str, name: str | None, track: str,
                 params: dict[str, str], status_callback: str | None,
                 status_callback_method: str, bidirectional: bool) -> None:
        self.engine = engine
        self.call = call
        self.sid = new_sid("MZ")
        self.name = name or self.sid
        self.url = url
        self.track = track
        self.params = params
        self.status_callback = status_callback
        self.status_callback_method = status_callback_method
        self.bidirectional = bidirectional
        self.status = "in-progress"
        self.date_updated = datetime.now(UTC)
        self.sequence = 0
        self.frames_sent = 0
        self.dtmf_sent: list[str] = []
        self.received: dict[str, int] = {}
        self._pending: list[FloatArray] = []
        self._pending_offset = 0
        self._stop = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._ws: ClientConnection | None = None
        self.task: asyncio.Task[None] | None = None
        self._background = self._make_background()
        self._bg_index = 0

    def _make_background(self) -> list[FloatArray]:
        config = self.engine.config
        if config.background == "silence":
            return [np.zeros(FRAME_SAMPLES)]
        noise = np.asarray(synth.noise(2000.0, config.background_level_dbm0,
                                       rng=_rng(self.engine)), dtype=np.float64)
        return [noise[i:i + FRAME_SAMPLES] for i in range(0, len(noise) - FRAME_SAMPLES + 1,
                                                          FRAME_SAMPLES)]

    # -------------------------------------------------------------- audio input
    def inject(self, audio: FloatArray) -> None:
        """Queue audio the caller makes (speech, keypad tones) into the inbound track."""
        self._pending.append(audio)

    def on_keys(self, digits: str, audio: FloatArray | None) -> None:
        if audio is not None:
            self.inject(audio)

    def on_digit(self, digit: str) -> bool:
        """Bidirectional streams report each key as a ``dtmf`` message (§1.4)."""
        if not self.bidirectional or self._ws is None or self.status != "in-progress":
            return False
        self.dtmf_sent.append(digit)
        self.engine.spawn(self._send({"event": "dtmf", "streamSid": self.sid,
                                      "sequenceNumber": SEQ,
                                      "dtmf": {"track": "inbound_track", "digit": digit}}))
        return True

    def _next_frame(self) -> FloatArray:
        background = self._background[self._bg_index % len(self._background)]
        self._bg_index += 1
        frame = background.copy()
        filled = 0
        while filled < FRAME_SAMPLES and self._pending:
            head = self._pending[0]
            take = min(FRAME_SAMPLES - filled, len(head) - self._pending_offset)
            frame[filled:filled + take] += head[self._pending_offset:self._pending_offset + take]
            filled += take
            self._pending_offset += take
            if self._pending_offset >= len(head):
                self._pending.pop(0)
                self._pending_offset = 0
        return frame

    # -------------------------------------------------------------- protocol
    def _next_seq(self) -> str:
        self.sequence += 1
        return str(self.sequence)

    async def _send(self, message: dict[str, Any]) -> None:
        """Send one message; a ``SEQ`` placeholder gets the next sequenceNumber.

        Numbering under the lock keeps sequenceNumber increasing on the wire even when a
        ``dtmf`` or ``mark`` is sent from another task than the media pump (§1.4).
        """
        if self._ws is None:
            return
        async with self._send_lock:
            if message.get("sequenceNumber") is SEQ:
                message["sequenceNumber"] = self._next_seq()
            with contextlib.suppress(WebSocketException, OSError):
                await self._ws.send(json.dumps(message))

    async def run(self) -> None:
        engine, call = self.engine, self.call
        # §1.6: sign the ws(s):// URL exactly as connected, with no body params.
        signature = engine.validator.compute_signature(self.url, {})
        try:
            self._ws = await connect(self.url, additional_headers={
                "X-Twilio-Signature": signature}, proxy=None, compression=None,
                open_timeout=10, user_agent_header="Twilio.TmeWs/1.0 (handraise-sim)")
        except (OSError, WebSocketException, TimeoutError) as exc:
            engine.record_error(call, 31920, f"Stream - WebSocket - Handshake Error: {exc}")
            self._finish()
            await self._status_callback("stream-error", error=str(exc))
            return
        engine.emit("stream-started", call.sid, stream_sid=self.sid, name=self.name,
                    url=self.url, params=self.params, track=self.track)
        await self._status_callback("stream-started")
        receiver = asyncio.ensure_future(self._receive())
        try:
            await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
            await self._send({
                "event": "start",
                "sequenceNumber": SEQ,
                "start": {
                    "accountSid": engine.config.account_sid,
                    "streamSid": self.sid,
                    "callSid": call.sid,
                    "tracks": TRACK_NAMES[self.track],
                    "customParameters": self.params,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                    "channels": 1},
                },
                "streamSid": self.sid,
            })
            await self._pump(receiver)
        finally:
            server_closed = receiver.done()
            receiver.cancel()
            if not server_closed:
                await self._send({"event": "stop", "sequenceNumber": SEQ,
                                  "stop": {"accountSid": engine.config.account_sid,
                                           "callSid": call.sid},
                                  "streamSid": self.sid})
                with contextlib.suppress(WebSocketException, OSError):
                    await self._ws.close()
            received = self._ws.protocol.close_rcvd
            self._finish()
            # app_close_code: the code of the app's Close frame, None if none came (the
            # socket was aborted after the close timeout, or dropped).
            engine.emit("stream-stopped", call.sid, stream_sid=self.sid, name=self.name,
                        frames=self.frames_sent, closed_by_app=server_closed,
                        app_close_code=received.code if received is not None else None)
            await self._status_callback("stream-stopped")

    async def _pump(self, receiver: asyncio.Future[None]) -> None:
        """A media message per track every 20 ms (scaled by ``stream_speed``)."""
        loop = asyncio.get_running_loop()
        interval = FRAME_MS / 1000 / max(self.engine.config.stream_speed, 1e-3)
        tracks = TRACK_NAMES[self.track]
        chunks = dict.fromkeys(tracks, 0)
        deadline = loop.time()
        silence = base64.b64encode(mulaw.encode(np.zeros(FRAME_SAMPLES))).decode()
        stopper: asyncio.Future[Any] = asyncio.ensure_future(self._stop.wait())
        waiting: set[asyncio.Future[Any]] = {stopper, receiver}
        try:
            while not self._stop.is_set() and not receiver.done():
                timestamp = str(self.frames_sent * FRAME_MS)
                for track in tracks:
                    chunks[track] += 1
                    if track == "inbound":
                        payload = base64.b64encode(mulaw.encode(self._next_frame())).decode()
                    else:
                        payload = silence  # the emulator mixes no conference audio
                    await self._send({"event": "media", "sequenceNumber": SEQ,
                                      "media": {"track": track, "chunk": str(chunks[track]),
                                                "timestamp": timestamp, "payload": payload},
                                      "streamSid": self.sid})
                self.frames_sent += 1
                deadline += interval
                delay = deadline - loop.time()
                if delay > 0:
                    await asyncio.wait(waiting, timeout=delay,
                                       return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()

    async def _receive(self) -> None:
        """Read what the app sends; echo marks (bidirectional); return when it closes."""
        assert self._ws is not None
        with contextlib.suppress(WebSocketException, OSError):
            async for raw in self._ws:
                try:
                    message = json.loads(raw)
                except (TypeError, ValueError):
                    continue
                event = str(message.get("event"))
                self.received[event] = self.received.get(event, 0) + 1
                if self.bidirectional and event == "mark":
                    await self._send({"event": "mark", "sequenceNumber": SEQ,
                                      "streamSid": self.sid, "mark": message.get("mark", {})})

    def _finish(self) -> None:
        self.status = "stopped"
        self.date_updated = datetime.now(UTC)
        self.call.streams.pop(self.sid, None)
        if self in self.call.sinks:
            self.call.sinks.remove(self)

    async def _status_callback(self, event: str, error: str | None = None) -> None:
        if not self.status_callback:
            return
        params = {"AccountSid": self.engine.config.account_sid, "CallSid": self.call.sid,
                  "StreamSid": self.sid, "StreamName": self.name, "StreamEvent": event,
                  "Timestamp": datetime.now(UTC).isoformat()}
        if error is not None:
            params["StreamError"] = error
        with contextlib.suppress(Exception):
            await self.engine.request(self.status_callback, self.status_callback_method,
                                      params, purpose="stream-status-callback",
                                      call_sid=self.call.sid)

    async def stop(self) -> None:
        self._stop.set()
        if self.task is not None and self.task is not asyncio.current_task():
            await asyncio.gather(self.task, return_exceptions=True)

    def state(self) -> dict[str, Any]:
        return {"sid": self.sid, "name": self.name, "url": self.url, "track": self.track,
                "status": self.status, "bidirectional": self.bidirectional,
                "frames_sent": self.frames_sent, "custom_parameters": self.params}

    def resource(self, account_sid: str) -> dict[str, Any]:
        """The Stream REST resource JSON (§1.3)."""
        return {"sid": self.sid, "account_sid": account_sid, "call_sid": self.call.sid,
                "name": self.name, "status": self.status,
                "date_updated": rfc2822(self.date_updated),
                "uri": f"/2010-04-01/Accounts/{account_sid}/Calls/{self.call.sid}/Streams/"
                       f"{self.sid}.json"}


async def start_stream(engine: Engine, call: Call, *, url: str, name: str | None, track: str,
                       params: dict[str, str], status_callback: str | None,
                       status_callback_method: str) -> MediaStream:
    """``<Start><Stream>`` or REST Streams create: non-blocking (§1.1)."""
    stream = MediaStream(engine, call, url=url, name=name, track=track, params=params,
                         status_callback=status_callback,
                         status_callback_method=status_callback_method, bidirectional=False)
    call.streams[stream.sid] = stream
    stream.task = engine.spawn(stream.run())
    return stream


async def connect_stream(engine: Engine, call: Call, *, url: str, name: str | None,
                         params: dict[str, str], status_callback: str | None,
                         status_callback_method: str) -> None:
    """``<Connect><Stream>``: blocks the document until the app closes the socket (§1.1)."""
    stream = MediaStream(engine, call, url=url, name=name, track="inbound_track",
                         params=params, status_callback=status_callback,
                         status_callback_method=status_callback_method, bidirectional=True)
    call.streams[stream.sid] = stream
    call.sinks.append(stream)
    stream.task = engine.spawn(stream.run())
    await asyncio.shield(stream.task)


def find_stream(call: Call, sid_or_name: str) -> MediaStream | None:
    for stream in call.streams.values():
        if isinstance(stream, MediaStream) and sid_or_name in (stream.sid, stream.name):
            return stream
    return None


async def stop_stream(engine: Engine, call: Call, sid_or_name: str) -> MediaStream | None:
    stream = find_stream(call, sid_or_name)
    if stream is not None:
        await stream.stop()
    return stream


async def stop_connect_streams(engine: Engine, call: Call) -> None:
    for stream in list(call.streams.values()):
        if stream.bidirectional:
            await stream.stop()


async def stop_all_streams(engine: Engine, call: Call) -> None:
    for stream in list(call.streams.values()):
        await stream.stop()
