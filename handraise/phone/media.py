"""Media Streams WebSocket (``/voice/stream``): keypad tones in a caller's audio -> their hand.

Rooms in keypad mode ``stream`` fork each participant's call audio here (``<Start><Stream>``
with ``<Parameter>``s ``room`` and ``participant``). Per stream: frames are parsed and
held to Twilio's order (:mod:`.frames`), decoded by a DTMF detector
(:class:`~handraise.dsp.dtmf.DtmfDetector`), turned into commands by the room's key
mapping (:class:`~.keys.KeyDecoder`), and a command raises or lowers the hand
(source ``keypad``) and tells the caller privately.

Detection runs inline: about 40 µs per 20 ms frame and call (see ``bench/media.py``), so
one core follows hundreds of calls. Redis and Twilio work runs in a per-stream worker task,
so a slow REST call or a lost Redis never stalls the reading of frames.

Bad input is skipped with a log line and the socket stays open; only a bad signature
(403 at the upgrade) or a stream naming no known participant is refused (close 1008).
Every stream records the keypad self-test (:mod:`.streams`) and logs at INFO when it
stops whether keypad tones were seen in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING

from quart import Blueprint, current_app, websocket

from ..dsp.dtmf import DigitEvent, DigitStart, DtmfDetector
from ..errors import HandraiseError, NotFound
from ..events import REDIS_ERRORS
from ..rooms import get_room
from .control import prompting_key
from .frames import FRAME_BYTES, FrameError, Media, Start, Stop, StreamReader
from .keys import DEFAULT_COMMANDS, KeyCommand, KeyDecoder
from .security import twilio_signed_websocket
from .streams import KeypadCheck, forget_gather, last_gather, record_check

if TYPE_CHECKING:
    from .webhooks import PhoneServices

#: Star 0 in the conference: hear the companion page's address and the web PIN again.
PIN_KEYS = "*0"

log = logging.getLogger(__name__)

bp = Blueprint("voice_media", __name__, url_prefix="/voice")

PREJOIN_LIMIT_S = 120.0
"""With no Gather mark this long after the stream started, keys count as in-conference."""
GATHER_GRACE_S = 3.0
"""A command matching the keys a Gather read this recently is that same press."""
WORKER_QUEUE = 32
"""Pending Redis/Twilio jobs per stream; beyond this, jobs are dropped with a log line."""
FINISH_TIMEOUT_S = 10.0
"""Longest wait for a stopped stream's pending jobs (a raise, its announcement)."""
_LOUD_SKIPS = 3
"""Skipped frames logged one by one per stream; after that, every 1000th."""

# Finishing streams whose handler was cancelled (the socket dropped): kept referenced.
_finishing: set[asyncio.Task[None]] = set()


class KeypadListener:
    """Detector and decoder of one stream, plus its self-test counts. No I/O.

    Parameters
    ----------
    commands : mapping of str to str
        Key sequence -> command name (the room's ``raise_keys``/``lower_keys``).
    label : str
        Names the stream in log lines (room and participant ids).
    """

    def __init__(self, commands: Mapping[str, str] = DEFAULT_COMMANDS, *, label: str = "") -> None:
        self.detector = DtmfDetector()
        try:
            self.decoder = KeyDecoder(commands, label=label)
        except ValueError as exc:
            log.warning("keypad %s: room key mapping unusable (%s); using *1 / *2", label, exc)
            self.decoder = KeyDecoder(DEFAULT_COMMANDS, label=label)
        self.frames = 0
        self.digits = 0
        self.tones_seen = False

    def feed(self, payload: bytes) -> tuple[list[KeyCommand], bool]:
        """One frame of mu-law: (commands completed, True if this frame held the first key)."""
        self.frames += 1
        return self._take(self.detector.feed(payload))

    def flush(self) -> tuple[list[KeyCommand], bool]:
        """End of the stream: a key still sounding ends here."""
        return self._take(self.detector.flush())

    def _take(self, events: list[DigitStart | DigitEvent]) -> tuple[list[KeyCommand], bool]:
        first = bool(events) and not self.tones_seen
        commands = []
        for event in events:
            self.tones_seen = True
            if isinstance(event, DigitEvent):
                self.digits += 1
            command = self.decoder.feed(event)
            if command is not None:
                commands.append(command)
        return commands, first


class _Stream:
    """One WebSocket connection from Twilio: reads frames, runs commands in a worker."""

    def __init__(self, svc: PhoneServices) -> None:
        self.svc = svc
        self.reader = StreamReader()
        self.listener: KeypadListener | None = None
        self.room = ""
        self.pid = ""
        self.started = time.monotonic()
        self.odd_size_logged = False
        self.jobs: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue(WORKER_QUEUE)
        self.worker: asyncio.Task[None] | None = None
        self.finished = False

    @property
    def label(self) -> str:
        return f"room {self.room or '?'} participant {self.pid or '?'}"

    # --- reading ----------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            raw = await websocket.receive()
            try:
                msg = self.reader.feed(raw)
            except FrameError as exc:
                self._skipped(str(exc))
                continue
            if isinstance(msg, Media):
                self._media(msg)
            elif isinstance(msg, Start):
                if not await self._begin(msg):
                    await websocket.close(1008, "unknown participant")
                    return
            elif isinstance(msg, Stop):
                await self.finish()
                return

    def _skipped(self, why: str) -> None:
        n = self.reader.skipped
        if n <= _LOUD_SKIPS or n % 1000 == 0:
            log.warning("media stream (%s): frame skipped (%d so far): %s", self.label, n, why)

    def _media(self, msg: Media) -> None:
        if self.listener is None or msg.track != "inbound":
            return  # not ours to detect (a refused start, or the outbound track)
        if len(msg.payload) != FRAME_BYTES and not self.odd_size_logged:
            self.odd_size_logged = True
            log.info("media stream (%s): frames of %d bytes, not %d (detected all the same)",
                     self.label, len(msg.payload), FRAME_BYTES)
        commands, first = self.listener.feed(msg.payload)
        if first:
            self._tones_seen()
        for command in commands:
            self._submit(partial(self._command, command))

    def _tones_seen(self) -> None:
        log.info("media stream (%s): keypad tones seen in the stream", self.label)
        self._submit(self._record)

    # --- start and stop ---------------------------------------------------------------

    async def _begin(self, start: Start) -> bool:
        """Check the stream's participant; False refuses the stream."""
        self.room = start.parameters.get("room", "")
        self.pid = start.parameters.get("participant", "")
        if not self.room or not self.pid:
            log.warning("media stream %s: no room or participant parameter; refused",
                        start.stream_sid[-6:])
            return False
        commands: Mapping[str, str] = DEFAULT_COMMANDS
        try:
            room = await get_room(self.svc.redis, self.room)
            participant = await self.svc.queue.participant(self.room, self.pid)
        except (NotFound, ValueError):
            log.warning("media stream %s (%s): unknown room or participant; refused",
                        start.stream_sid[-6:], self.label)
            return False
        except REDIS_ERRORS as exc:
            # Cannot check now; listen anyway (raising will fail until Redis is back).
            log.warning("media stream (%s): redis unavailable at start (%r); listening with "
                        "the default keys", self.label, exc)
        else:
            if participant.call_sid and participant.call_sid != start.call_sid:
                log.warning("media stream (%s): call %s is not this participant's; refused",
                            self.label, start.call_sid[-6:])
                return False
            commands = {PIN_KEYS: "pin", room.raise_keys: "raise", room.lower_keys: "lower"}
        self.listener = KeypadListener(commands, label=self.label)
        self.worker = asyncio.create_task(self._work())
        self._submit(self._record)
        log.info("media stream (%s): listening for keys (stream %s)", self.label,
                 start.stream_sid[-6:])
        return True

    async def finish(self) -> None:
        """The stream ended: last key, self-test, pending jobs, one INFO line."""
        if self.finished:
            return
        self.finished = True
        if self.listener is None:
            return
        listener = self.listener
        commands, first = listener.flush()
        if first:
            self._tones_seen()
        log.info("media stream (%s): stopped after %d frames (%d skipped), %d keys; "
                 "keypad tones seen in stream: %s", self.label, listener.frames,
                 self.reader.skipped, listener.digits, "yes" if listener.tones_seen else "no")
        for command in commands:
            self._submit(partial(self._command, command))
        self._submit(partial(self._record, stopped=True))
        if self.worker is not None:
            drained = asyncio.ensure_future(self.jobs.join())
            await asyncio.wait({drained, self.worker}, timeout=FINISH_TIMEOUT_S,
                               return_when=asyncio.FIRST_COMPLETED)
            if not drained.done():
                drained.cancel()
                log.warning("media stream (%s): pending jobs dropped at stop", self.label)
            self.worker.cancel()

    # --- the worker -------------------------------------------------------------------

    def _submit(self, job: Callable[[], Awaitable[None]]) -> None:
        try:
            self.jobs.put_nowait(job)
        except asyncio.QueueFull:
            log.warning("media stream (%s): too much pending work; a job was dropped", self.label)

    async def _work(self) -> None:
        while True:
            job = await self.jobs.get()
            try:
                await job()
            except REDIS_ERRORS as exc:
                log.warning("media stream (%s): redis unavailable: %r", self.label, exc)
            except HandraiseError as exc:
                log.info("media stream (%s): %s", self.label, exc.message)
            except Exception:
                log.exception("media stream (%s): a job failed", self.label)
            finally:
                self.jobs.task_done()

    async def _record(self, *, stopped: bool = False) -> None:
        listener = self.listener
        assert listener is not None
        await record_check(self.svc.redis, self.room, KeypadCheck(
            participant=self.pid, stream=self.reader.stream_sid, frames=listener.frames,
            digits=listener.digits, tones_seen=listener.tones_seen, stopped=stopped,
            updated_at=round(time.time(), 3)))

    async def _in_conference(self, command: KeyCommand) -> bool:
        """False for keys a ``<Gather>`` reads (pre-join window, host prompt): not ours."""
        redis, room, pid = self.svc.redis, self.room, self.pid
        if await redis.exists(prompting_key(room, pid)):
            log.debug("media stream (%s): %s during a host prompt; the prompt reads it",
                      self.label, command.keys)
            return False
        mark = await last_gather(redis, room, pid)
        if mark is None:
            if time.monotonic() - self.started < PREJOIN_LIMIT_S:
                log.debug("media stream (%s): %s in the pre-join window; its Gather reads it",
                          self.label, command.keys)
                return False
            return True
        when, digits = mark
        if digits and digits.endswith(command.keys) and time.time() - when < GATHER_GRACE_S:
            await forget_gather(redis, room, pid, when)
            log.debug("media stream (%s): %s already read by a Gather", self.label, command.keys)
            return False
        return True

    async def _command(self, command: KeyCommand) -> None:
        if not await self._in_conference(command):
            return
        svc, room, pid = self.svc, self.room, self.pid
        if command.name == "raise":
            position, new = await svc.queue.raise_hand(room, pid, source="keypad")
            log.info("room %s: %s raised a hand with %s in the conference (position %d%s)",
                     room, pid, command.keys, position, "" if new else ", already raised")
            result = await svc.host.announce(room, pid, "raised", n=position)
        elif command.name == "lower":
            lowered = await svc.queue.lower_hand(room, pid, by="keypad")
            log.info("room %s: %s pressed %s in the conference (%s)", room, pid, command.keys,
                     "hand lowered" if lowered else "no hand was raised")
            result = await svc.host.announce(room, pid, "lowered" if lowered else "not_raised")
        elif command.name == "pin":
            log.info("room %s: %s asked for their web PIN again (%s)", room, pid, command.keys)
            result = await svc.host.remind_pin(room, pid)
        else:
            log.debug("media stream (%s): no action for %r", self.label, command.name)
            return
        if not result.ok:
            log.info("room %s: could not tell %s privately: %s", room, pid, result.message)


@bp.websocket("/stream")
@twilio_signed_websocket
async def ws_stream() -> None:
    """Twilio Media Streams: detect the caller's keypad tones, raise or lower their hand."""
    from .webhooks import phone

    stream = _Stream(phone(current_app))
    try:
        await stream.run()
    except asyncio.CancelledError:
        # The socket dropped without a stop: finish in the background, then stop too.
        if not stream.finished:
            task = asyncio.ensure_future(stream.finish())
            _finishing.add(task)
            task.add_done_callback(_finishing.discard)
        raise
    except Exception:
        log.exception("media stream (%s): failed", stream.label)
        with contextlib.suppress(Exception):
            await stream.finish()
        raise
