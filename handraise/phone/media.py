"""Media Streams (``/voice/stream``): keypad tones in a caller's audio -> their hand.

Rooms in keypad mode ``stream`` fork each participant's call audio here (``<Start><Stream>``
with ``<Parameter>``s ``room`` and ``participant``). Per stream: frames are parsed and
held to Twilio's order (:mod:`.frames`; media frames of the usual shape take its fast
path), queued in the process's :class:`~.keypad.KeypadBank`, detected there for every
stream at once in one call per 20 ms tick (:class:`MediaHub`), turned into commands by
the room's key mapping (:class:`~.keys.KeyDecoder`), and a command raises or lowers the
hand (source ``keypad``) and tells the caller privately. While an invitation to speak
waits for a caller (consent rooms), their decoder is in answer mode (1 / 2 answer it): the
hub follows :data:`handraise.floor.ANSWERING_CHANNEL`, one subscription per process.

:class:`MediaStream` is the protocol logic of one socket, independent of the WebSocket
server: ``handraise serve`` runs it on the fast listener (:mod:`.fastmedia`, same port);
the Quart route below runs the same code for other ASGI servers and the test client.
A frame costs no logging, no Redis call and no task switch: Redis and Twilio work runs in
a per-stream worker task, started only when there is a job, so a slow REST call or a lost
Redis never stalls the reading of frames.

Bad input is skipped with a log line and the socket stays open; only a bad signature
(403 at the upgrade) or a stream naming no known participant is refused (close 1008).
Every stream records the keypad self-test (:mod:`.streams`) and logs at INFO when it
stops whether keypad tones were seen in it. Each process also keeps a live entry per
stream it holds (written with the self-test record, refreshed for all its streams in one
pipeline every few seconds, removed at the stop), so that after a restart the periodic
reconciliation can tell whose stream is gone and start it again (Twilio never reconnects).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Protocol

from quart import Blueprint, Quart, current_app, websocket

from .. import floor
from ..errors import HandraiseError, NotFound
from ..events import REDIS_ERRORS
from ..queue import IsSpeaker, NoSpeaker, Participant
from ..rooms import Room, get_room
from .control import host_key, prompting_key
from .frames import FRAME_BYTES, FrameError, Media, Start, Stop, StreamReader
from .keypad import MAX_QUEUED, KeypadBank, KeypadListener, Outcome
from .keys import ANSWER_COMMANDS, DEFAULT_COMMANDS, HOST_ONLY, KeyCommand, room_commands
from .security import twilio_signed_websocket
from .streams import (
    LIVE_REFRESH_S,
    KeypadCheck,
    forget_gather,
    press_context,
    process_holder,
    record_check,
    refresh_live,
)

if TYPE_CHECKING:
    from ..store import Redis
    from .webhooks import PhoneServices

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
TICK_S = 0.020
"""Detection tick: one frame of every stream per tick, as Twilio sends them."""

__all__ = ["KeypadListener", "MediaHub", "MediaSource", "MediaStream", "bp", "media_hub"]


class MediaHub:
    """The media streams of one app (process): their keypad bank and its 20 ms tick.

    The tick task runs while at least one stream is open. Streams are tracked from
    their first message to the end of their pending jobs, so :meth:`drain` can finish
    them all before the app closes its Twilio session.
    """

    def __init__(self) -> None:
        #: This process among all that hold streams (the live entries name it).
        self.holder = process_holder()
        self.bank = KeypadBank()
        self.by_slot: dict[int, MediaStream] = {}
        self.open: set[MediaStream] = set()
        self.finishing: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self.late_ticks = 0
        #: A server's reader of many sockets (``handraise serve``'s, :mod:`.fastmedia`):
        #: polled at the start of every tick while it holds sockets.
        self.source: MediaSource | None = None
        #: Streams by (room, participant), for answer mode.
        self.answering: dict[tuple[str, str], MediaStream] = {}
        self._follower: asyncio.Task[None] | None = None

    # --- answer mode follows the invitations (floor.ANSWERING_CHANNEL) ---------------

    def watch(self, stream: MediaStream) -> None:
        """Let ``stream`` hear when its caller's invitation to speak starts and stops."""
        self.answering[(stream.room, stream.pid)] = stream
        if self._follower is None or self._follower.done():
            self._follower = asyncio.ensure_future(self._follow(stream.svc.redis))

    def unwatch(self, stream: MediaStream) -> None:
        if self.answering.get((stream.room, stream.pid)) is stream:
            del self.answering[(stream.room, stream.pid)]

    async def _follow(self, redis: Redis) -> None:
        """One Pub/Sub subscription per process while it has streams; resyncs after a gap."""
        delay = 0.1
        while self.answering:
            try:
                async with redis.pubsub() as pubsub:
                    await pubsub.subscribe(floor.ANSWERING_CHANNEL)
                    delay = 0.1
                    for stream in list(self.answering.values()):
                        stream.sync_answering()  # whatever happened before we listened
                    while self.answering:
                        message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                           timeout=1.0)
                        if message is None:
                            continue
                        room, _, rest = str(message["data"]).partition(" ")
                        pid, _, on = rest.partition(" ")
                        target = self.answering.get((room, pid))
                        if target is not None:
                            target.set_answering(on == "1")
            except REDIS_ERRORS as exc:
                log.warning("media: invitations unavailable (%r); retrying", exc)
                await asyncio.sleep(delay)  # back-off before reconnecting
                delay = min(delay * 2, 5.0)

    def ticking(self) -> None:
        """Make sure the tick runs (it stops when no stream and no socket is left)."""
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.ensure_future(self._tick_forever())

    def join(self, stream: MediaStream, listener: KeypadListener) -> int:
        slot = self.bank.join(listener)
        self.by_slot[slot] = stream
        self.ticking()
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.ensure_future(self._refresh_forever(stream.svc.redis))
        return slot

    def leave(self, slot: int) -> Outcome:
        self.by_slot.pop(slot, None)
        return self.bank.leave(slot)

    def finish_later(self, stream: MediaStream) -> None:
        """Run ``stream.finish()`` in the background (once), referenced until it is done."""
        if stream.finishing:
            return
        stream.finishing = True
        task = asyncio.ensure_future(stream.finish())
        self.finishing.add(task)
        task.add_done_callback(self.finishing.discard)

    async def _tick_forever(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while self.by_slot or (self.source is not None and self.source.busy()):
            deadline += TICK_S
            delay = deadline - loop.time()
            if delay < -TICK_S:
                self.late_ticks += 1
                deadline = loop.time()  # overloaded: do not run a burst of ticks
            # Always through the loop, even when late (sleep(0) when nothing is left to
            # wait): ticks that cost more than TICK_S would otherwise run back to back and
            # nothing else would (webhooks, the streams' jobs, the signal to stop).
            await asyncio.sleep(max(delay, 0.0))
            try:
                if self.source is not None:
                    self.source.poll()
                outcomes = self.bank.tick()
            except Exception:  # pragma: no cover - a bug must not stop every stream
                log.exception("media: keypad tick failed")
                continue
            for slot, (commands, first) in outcomes:
                stream = self.by_slot.get(slot)
                if stream is not None:
                    stream.outcome(commands, first)

    def held(self) -> dict[str, dict[str, str]]:
        """Room -> participant -> stream sid of every stream listening in this process."""
        held: dict[str, dict[str, str]] = {}
        for stream in self.by_slot.values():
            if stream.room and stream.pid and stream.reader.stream_sid:
                held.setdefault(stream.room, {})[stream.pid] = stream.reader.stream_sid
        return held

    async def _refresh_forever(self, redis: Redis) -> None:
        """Renew the live entries of this process's streams: one pipeline per period."""
        failing = False
        while self.by_slot:
            await asyncio.sleep(LIVE_REFRESH_S)
            held = self.held()
            try:
                await refresh_live(redis, held, self.holder)
            except REDIS_ERRORS as exc:
                if not failing:  # once per outage, not every period
                    log.warning("media: live entries of %d streams not refreshed: redis "
                                "unavailable (%r)", sum(map(len, held.values())), exc)
                failing = True
            else:
                failing = False

    async def drain(self, timeout: float = FINISH_TIMEOUT_S) -> None:  # noqa: ASYNC109
        """Finish every open stream and wait for their pending jobs (at shutdown)."""
        for stream in list(self.open):
            self.finish_later(stream)
        if self.finishing:
            await asyncio.wait(set(self.finishing), timeout=timeout)
        if self._ticker is not None:
            self._ticker.cancel()
        if self._follower is not None:
            self._follower.cancel()
        if self._refresher is not None:
            self._refresher.cancel()


class MediaSource(Protocol):
    """What :class:`MediaHub` asks of a server that reads its sockets once per tick."""

    def busy(self) -> bool:
        """True while it holds sockets (the tick keeps running)."""
        ...

    def poll(self) -> None:
        """Read what its sockets have; hand it to their :class:`MediaStream`."""
        ...


def media_hub(app: Quart) -> MediaHub:
    """The app's :class:`MediaHub` (made on first use)."""
    hub: MediaHub | None = app.extensions.get("handraise_media")
    if hub is None:
        hub = app.extensions["handraise_media"] = MediaHub()
    return hub


async def drain(app: Quart) -> None:
    """For the app's shutdown: finish open streams before the Twilio session closes."""
    hub: MediaHub | None = app.extensions.get("handraise_media")
    if hub is not None:
        await hub.drain()


class MediaStream:
    """One Media Streams connection from Twilio, whatever WebSocket server carries it.

    The server calls :meth:`on_message` with each text message and :meth:`dropped` when
    the socket goes away without a ``stop``; ``close(code, reason)`` is how this asks
    the server to close the socket (1008 refused, 1000 after ``stop``).
    """

    def __init__(self, svc: PhoneServices, hub: MediaHub,
                 close: Callable[[int, str], None]) -> None:
        self.svc = svc
        self.hub = hub
        self._close = close
        self.reader = StreamReader()
        self.listener: KeypadListener | None = None
        self.slot: int | None = None
        self.room = ""
        self.pid = ""
        #: The host's leg (stream rooms fork it too): it has no pre-join window.
        self.host = False
        self.started = time.monotonic()
        self.odd_size_logged = False
        self.early: list[tuple[bytes, int]] = []
        self.starting: asyncio.Future[None] | None = None
        self.jobs: deque[Callable[[], Awaitable[None]]] = deque()
        self.worker: asyncio.Task[None] | None = None
        self.finished = False
        self.finishing = False
        self.closed: tuple[int, str] | None = None
        #: An invitation to speak already waited for this caller when the stream began.
        self.invited_at_start = False
        #: Answer mode's keys (the room's accept_keys / decline_keys).
        self.answers: Mapping[str, str] = ANSWER_COMMANDS
        #: Told the stream's slot in the keypad bank when it gets one, and None before the
        #: slot is freed (a server that writes frames into the bank's queues itself).
        self.on_slot: Callable[[int | None], None] | None = None
        hub.open.add(self)

    @property
    def label(self) -> str:
        return f"room {self.room or '?'} participant {self.pid or '?'}"

    # --- reading ----------------------------------------------------------------------

    def on_message(self, raw: str | bytes) -> None:
        """One WebSocket text message (synchronous; never blocks)."""
        payload = self.reader.media_payload(raw)
        if payload is not None:
            self._payload(payload)
            return
        try:
            msg = self.reader.feed(raw)
        except FrameError as exc:
            self._skipped(str(exc))
            return
        if isinstance(msg, Media):
            if msg.track == "inbound":
                self._payload(msg.payload)
        elif isinstance(msg, Start):
            self.starting = asyncio.ensure_future(self._begin(msg))
        elif isinstance(msg, Stop):
            self.close(1000, "stream stopped")
            self.hub.finish_later(self)

    def dropped(self) -> None:
        """The socket went away (with or without a ``stop``)."""
        if not self.finished:
            self.hub.finish_later(self)

    def close(self, code: int, reason: str) -> None:
        if self.closed is None:
            self.closed = (code, reason)
            self._close(code, reason)

    def _payload(self, payload: bytes) -> None:
        self.on_audio(payload, 1)

    def on_audio(self, audio: bytes, count: int) -> None:
        """``count`` inbound media frames, decoded, end to end (a server that parses the
        usual media messages itself hands them over this way, after ``start``)."""
        slot = self.slot
        if slot is not None and len(audio) == FRAME_BYTES * count:
            self.hub.bank.push_frames(slot, audio, count)
            return
        if len(audio) != FRAME_BYTES * count and not self.odd_size_logged:
            self.odd_size_logged = True
            log.info("media stream (%s): frames of %d bytes, not %d (detected all the same)",
                     self.label, len(audio) // max(count, 1), FRAME_BYTES)
        if slot is not None:
            self.hub.bank.push_frames(slot, audio, count)
        elif self.listener is None and len(self.early) < MAX_QUEUED:
            self.early.append((audio, count))  # the start-up check is still running

    def _skipped(self, why: str) -> None:
        n = self.reader.skipped
        if n <= _LOUD_SKIPS or n % 1000 == 0:
            log.warning("media stream (%s): frame skipped (%d so far): %s", self.label, n, why)

    def outcome(self, commands: list[KeyCommand], first: bool) -> None:
        """Detected in a tick: commands to run, and whether the first tone was heard."""
        for command in commands:  # first: the self-test record must not delay a raise
            self._submit(partial(self._command, command))
        if first:
            self._tones_seen()

    def _tones_seen(self, *, record: bool = True) -> None:
        log.info("media stream (%s): keypad tones seen in the stream", self.label)
        if record:
            self._submit(self._record)  # the self-test: tones reach us

    # --- start and stop ---------------------------------------------------------------

    async def _begin(self, start: Start) -> None:
        commands = await self._check(start)
        if commands is None:
            self.early.clear()
            self.close(1008, "unknown participant")
            self.finished = True
            self.hub.open.discard(self)
            return
        # Even if the stream stopped while the check ran: finish() waits for this, then
        # detects what came before the stop.
        self.listener = KeypadListener(commands, label=self.label, answers=self.answers)
        self.slot = self.hub.join(self, self.listener)
        for audio, count in self.early:
            self.hub.bank.push_frames(self.slot, audio, count)
        self.early.clear()
        if self.on_slot is not None:
            self.on_slot(self.slot)
        self._submit(self._record)
        self.hub.watch(self)
        if self.invited_at_start:
            self.set_answering(True)
        log.info("media stream (%s): listening for keys (stream %s)", self.label,
                 start.stream_sid[-6:])

    async def _check(self, start: Start) -> Mapping[str, str] | None:
        """The stream's key mapping after checking its participant; None refuses it."""
        self.room = start.parameters.get("room", "")
        self.pid = start.parameters.get("participant", "")
        if not self.room or not self.pid:
            log.warning("media stream %s: no room or participant parameter; refused",
                        start.stream_sid[-6:])
            return None
        commands: Mapping[str, str] = DEFAULT_COMMANDS
        try:
            room, participant = await self.svc.queue.room_and_participant(self.room, self.pid)
        except NotFound:
            log.warning("media stream %s (%s): unknown room or participant; refused",
                        start.stream_sid[-6:], self.label)
            return None
        except REDIS_ERRORS as exc:
            # Cannot check now; listen anyway (raising will fail until Redis is back).
            log.warning("media stream (%s): redis unavailable at start (%r); listening with "
                        "the default keys", self.label, exc)
        else:
            if participant.call_sid and participant.call_sid != start.call_sid:
                log.warning("media stream (%s): call %s is not this participant's; refused",
                            self.label, start.call_sid[-6:])
                return None
            self.host = participant.role == "host"
            commands = room_commands(room.keys(), host=self.host)
            inv = room.invitation
            self.invited_at_start = inv is not None and inv.pending and inv.participant == self.pid
            self.answers = {room.accept_keys: "accept", room.decline_keys: "decline"}
        return commands

    async def finish(self) -> None:
        """The stream ended: last key, self-test, pending jobs, one INFO line."""
        if self.finished:
            return
        self.finished = True
        try:
            if self.starting is not None and not self.starting.done():
                await asyncio.wait({self.starting}, timeout=FINISH_TIMEOUT_S)
                if not self.starting.done():
                    # Its check outlived the wait (Redis stalled): it must not join the
                    # bank now, with nobody left to leave it.
                    self.starting.cancel()
                    log.warning("media stream (%s): stopped before its start-up check "
                                "answered", self.label)
            if self.listener is None or self.slot is None:
                return
            listener = self.listener
            if self.on_slot is not None:
                self.on_slot(None)
            commands, first = self.hub.leave(self.slot)
            self.slot = None
            if first:
                self._tones_seen(record=False)  # the stopped record below says so too
            log.info("media stream (%s): stopped after %d frames (%d skipped, %d dropped), "
                     "%d keys; keypad tones seen in stream: %s", self.label, listener.frames,
                     self.reader.skipped, listener.dropped, listener.digits,
                     "yes" if listener.tones_seen else "no")
            for command in commands:
                self._submit(partial(self._command, command))
            self._submit(partial(self._record, stopped=True))
            worker = self.worker
            if worker is not None and not worker.done():
                await asyncio.wait({worker}, timeout=FINISH_TIMEOUT_S)
                if not worker.done():
                    worker.cancel()
                    log.warning("media stream (%s): pending jobs dropped at stop", self.label)
        finally:
            self.hub.unwatch(self)  # after the start-up check, which may have watched
            self.hub.open.discard(self)

    # --- the worker -------------------------------------------------------------------

    def _submit(self, job: Callable[[], Awaitable[None]]) -> None:
        if len(self.jobs) >= WORKER_QUEUE:
            log.warning("media stream (%s): too much pending work; a job was dropped", self.label)
            return
        self.jobs.append(job)
        if self.worker is None or self.worker.done():
            self.worker = asyncio.ensure_future(self._work())

    async def _work(self) -> None:
        while self.jobs:
            job = self.jobs.popleft()
            try:
                await job()
            except REDIS_ERRORS as exc:
                log.warning("media stream (%s): redis unavailable: %r", self.label, exc)
            except HandraiseError as exc:
                log.info("media stream (%s): %s", self.label, exc.message)
            except Exception:
                log.exception("media stream (%s): a job failed", self.label)

    def set_answering(self, on: bool) -> None:
        """Answer mode on (an invitation waits for this caller) or off."""
        if self.listener is not None and self.listener.decoder.answering != on:
            self.listener.decoder.answering = on
            log.info("media stream (%s): answer mode %s", self.label, "on" if on else "off")

    def sync_answering(self) -> None:
        """Set answer mode from the room's invitation as Redis has it now."""
        self._submit(self._sync_answering)

    async def _sync_answering(self) -> None:
        invitation = (await get_room(self.svc.redis, self.room)).invitation
        self.set_answering(invitation is not None and invitation.pending
                           and invitation.participant == self.pid)

    async def _record(self, *, stopped: bool = False) -> None:
        listener = self.listener
        assert listener is not None
        await record_check(self.svc.redis, self.room, KeypadCheck(
            participant=self.pid, stream=self.reader.stream_sid, frames=listener.frames,
            digits=listener.digits, tones_seen=listener.tones_seen, stopped=stopped,
            updated_at=round(time.time(), 3)), holder=self.hub.holder)

    async def _in_conference(self, command: KeyCommand
                             ) -> tuple[bool, tuple[Room, Participant] | None]:
        """False for keys a ``<Gather>`` reads (pre-join window, host prompt): not ours. With
        it, the room and participant (None if either is gone), read in the same round trip."""
        redis, room, pid = self.svc.redis, self.room, self.pid
        prompting, mark, found = await press_context(self.svc.queue, room, pid,
                                                     prompting_key(room, pid))
        target = None if isinstance(found, NotFound) else found
        if prompting:
            log.debug("media stream (%s): %s during a host prompt; the prompt reads it",
                      self.label, command.keys)
            return False, target
        if self.host:
            return True, target  # the host joins at once: no pre-join Gather to leave keys to
        if mark is None:
            if time.monotonic() - self.started < PREJOIN_LIMIT_S:
                log.debug("media stream (%s): %s in the pre-join window; its Gather reads it",
                          self.label, command.keys)
                return False, target
            return True, target
        when, digits = mark
        if digits and digits.endswith(command.keys) and time.time() - when < GATHER_GRACE_S:
            await forget_gather(redis, room, pid, when)
            log.debug("media stream (%s): %s already read by a Gather", self.label, command.keys)
            return False, target
        return True, target

    async def _command(self, command: KeyCommand) -> None:
        ours, target = await self._in_conference(command)
        if not ours:
            return
        svc, room, pid = self.svc, self.room, self.pid
        if command.name == "raise":
            position, new = await svc.queue.raise_hand(room, pid, source="keypad")
            log.info("room %s: %s raised a hand with %s in the conference (position %d%s)",
                     room, pid, command.keys, position, "" if new else ", already raised")
            result = await svc.host.announce(room, pid, "raised", n=position, target=target)
        elif command.name == "lower":
            lowered = await svc.queue.lower_hand(room, pid, by="keypad")
            log.info("room %s: %s pressed %s in the conference (%s)", room, pid, command.keys,
                     "hand lowered" if lowered else "no hand was raised")
            result = await svc.host.announce(room, pid, "lowered" if lowered else "not_raised",
                                             target=target)
        elif command.name == "reply":
            result = await svc.host.announce(room, pid, *await _reply(svc, room, pid, command.keys),
                                             target=target)
        elif command.name == "where":
            log.info("room %s: %s asked where their hand is (%s)", room, pid, command.keys)
            result = await svc.host.tell_where(room, pid)
        elif command.name == "help":
            log.info("room %s: %s asked for the keys and their web PIN (%s)", room, pid, command.keys)
            result = await svc.host.tell_help(room, pid)
        elif command.name == HOST_ONLY:
            log.info("room %s: %s pressed the host's %s; nothing done", room, pid, command.keys)
            result = await svc.host.announce(room, pid, HOST_ONLY, target=target)
        elif command.name in ("accept", "decline"):
            accept = command.name == "accept"
            log.info("room %s: %s pressed %s to %s the invitation to speak", room, pid,
                     command.keys, "accept" if accept else "decline")
            result = await svc.host.answer(room, pid, accept=accept, source="keypad")
            if result.ok and not accept:
                result = await svc.host.announce(room, pid, "stay_muted")
            elif not result.ok and "expired" in result.message:
                result = await svc.host.announce(room, pid, "no_answer")
        elif command.name.startswith("host_"):
            await host_key(svc.host, room, pid, command.name)
            return
        else:
            log.debug("media stream (%s): no action for %r", self.label, command.name)
            return
        if not result.ok:
            log.info("room %s: could not tell %s privately: %s", room, pid, result.message)



async def _reply(svc: PhoneServices, room: str, pid: str, keys: str) -> tuple[str, int | None]:
    """Raise a reply to the speaker; the announcement (key, position) that answers it."""
    try:
        position, new = await svc.queue.reply(room, pid, source="keypad")
    except NoSpeaker:
        log.info("room %s: %s pressed %s with nobody speaking", room, pid, keys)
        return "no_speaker", None
    except IsSpeaker:
        return "is_speaker", None
    log.info("room %s: %s raised a reply with %s in the conference (position %d%s)",
             room, pid, keys, position, "" if new else ", already a reply")
    return "reply_raised", position


@bp.websocket("/stream")
@twilio_signed_websocket
async def ws_stream() -> None:
    """Twilio Media Streams: detect the caller's keypad tones, raise or lower their hand."""
    from .webhooks import phone

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    stream = MediaStream(phone(app), media_hub(app), lambda code, reason: None)
    try:
        while stream.closed is None:
            stream.on_message(await websocket.receive())
            if stream.starting is not None and not stream.starting.done():
                await asyncio.shield(stream.starting)
        code, reason = stream.closed
        await websocket.close(code, reason)
    finally:
        stream.dropped()  # no-op after a stop; else finished in the background
