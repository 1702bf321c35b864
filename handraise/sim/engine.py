"""The emulator's core: calls executing TwiML, conferences and their status callbacks.

Everything runs on one asyncio loop. A call is a task that fetches TwiML over real HTTP
(signed per TWILIO.md §5) and executes it verb by verb; a REST redirect or a hang-up
cancels that task after setting the reason the conference should report.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import aiohttp
from multidict import CIMultiDictProxy
from twilio.request_validator import RequestValidator
from yarl import URL

from handraise.sim.twiml import (
    TwimlError,
    Verb,
    parse_media_twiml,
    parse_stream_params,
    parse_twiml,
    validate_label,
)

log = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
APPLICATION_ERROR_TEXT = "We are sorry, an application error has occurred. Goodbye."


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: two letters + 32 lowercase hex digits."""
    return prefix + secrets.token_hex(16)


def rfc2822(when: datetime | None = None) -> str:
    """Twilio's date format, e.g. ``Thu, 01 Jun 2017 20:48:32 +0000`` (§3.3, §4)."""
    return format_datetime(when or datetime.now(UTC))


def tf(value: bool) -> str:
    """Webhook booleans are the strings ``true``/``false`` (§3.3)."""
    return "true" if value else "false"


@dataclass
class SimConfig:
    """Settings of one emulator instance.

    The time scales multiply simulated durations: ``media_time_scale=0`` makes Say, Play,
    Pause and announcements instantaneous (tests); ``wait_time_scale`` scales Gather
    timeouts and Dial ``timeLimit``; ``stream_speed`` > 1 sends media frames faster than
    real time (the frames' ``timestamp`` still advances 20 ms each).
    """

    voice_url: str
    account_sid: str
    auth_token: str
    voice_method: str = "POST"
    host: str = "127.0.0.1"
    port: int = 0
    keypad_tones_in_stream: bool = True
    media_time_scale: float = 1.0
    wait_time_scale: float = 1.0
    stream_speed: float = 1.0
    background: str = "noise"  # "noise" (low comfort noise) or "silence"
    background_level_dbm0: float = -65.0
    seed: int | None = None
    webhook_timeout: float = 15.0
    #: A slow Twilio: each REST request waits this long before it is handled (``math.inf``:
    #: it is never answered). Read per request, so a test can change it mid-call.
    rest_delay_s: float = 0.0
    #: False: a new connection for each webhook (so a TCP balancer spreads them).
    webhook_keepalive: bool = True


class WebhookError(Exception):
    """A webhook got no answer: connection refused or reset, or the timeout (§5)."""


@dataclass
class WebhookResponse:
    """The app's answer to a webhook."""

    status_code: int
    text: str
    headers: CIMultiDictProxy[str]
    ms: float  # from sending the request to reading the whole answer


@dataclass
class SimEvent:
    """One entry of the emulator's event feed."""

    seq: int
    t: float
    kind: str
    call_sid: str | None
    data: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "t": round(self.t, 4), "kind": self.kind,
                "call_sid": self.call_sid, "data": self.data}


@dataclass
class Transfer:
    """Where TwiML execution goes next: fetch ``url`` (or run inline ``twiml``)."""

    url: str
    method: str = "POST"
    extra: dict[str, str] = field(default_factory=dict)
    twiml: str | None = None
    purpose: str = "redirect"


HANGUP = Transfer(url="", purpose="hangup")


class DigitSink:
    """Something listening for keypad digits on a call (Gather, hangupOnStar, Connect)."""

    def on_digit(self, digit: str) -> bool:  # pragma: no cover - interface
        """Take one digit; return False when it was not wanted."""
        raise NotImplementedError


@dataclass
class Call:
    sid: str
    from_: str
    to: str
    direction: str = "inbound"
    status: str = "ringing"
    date_created: datetime = field(default_factory=lambda: datetime.now(UTC))
    start_time: datetime | None = None
    end_time: datetime | None = None
    started_monotonic: float = field(default_factory=time.monotonic)
    doc_url: str = ""
    current_verb: str | None = None
    transcript: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    participant: Participant | None = None
    streams: dict[str, Any] = field(default_factory=dict)  # sid -> media.MediaStream
    sinks: list[DigitSink] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    leave_reason: str | None = None
    redirecting: bool = False
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    date_updated: datetime = field(default_factory=lambda: datetime.now(UTC))

    def elapsed(self) -> float:
        return time.monotonic() - self.started_monotonic


@dataclass
class Participant:
    call: Call
    conference: Conference
    label: str | None
    muted: bool
    hold: bool
    start_conference_on_enter: bool
    end_conference_on_exit: bool
    beep: str
    wait_url: str | None
    wait_method: str
    hangup_on_star: bool
    status: str = "connected"
    date_created: datetime = field(default_factory=lambda: datetime.now(UTC))
    date_updated: datetime = field(default_factory=lambda: datetime.now(UTC))
    done: asyncio.Future[str] = field(default_factory=lambda: asyncio.get_running_loop()
                                      .create_future())
    wait_task: asyncio.Task[None] | None = None

    def finish(self, how: str) -> None:
        if not self.done.done():
            self.done.set_result(how)

    def callback_fields(self) -> dict[str, str]:
        fields = {
            "CallSid": self.call.sid,
            "Muted": tf(self.muted),
            "Hold": tf(self.hold),
            "Coaching": "false",
            "EndConferenceOnExit": tf(self.end_conference_on_exit),
            "StartConferenceOnEnter": tf(self.start_conference_on_enter),
        }
        if self.label is not None:
            fields["ParticipantLabel"] = self.label
        return fields


@dataclass
class Conference:
    sid: str
    friendly_name: str
    status: str = "init"  # init | in-progress | completed
    date_created: datetime = field(default_factory=lambda: datetime.now(UTC))
    date_updated: datetime = field(default_factory=lambda: datetime.now(UTC))
    participants: dict[str, Participant] = field(default_factory=dict)
    status_callback: str | None = None
    status_callback_method: str = "POST"
    subscribed: frozenset[str] = frozenset()
    max_participants: int = 250
    sequence: int = 0
    started: bool = False
    reason_ended: str | None = None
    call_sid_ending: str | None = None
    callbacks: asyncio.Queue[dict[str, str] | None] = field(default_factory=asyncio.Queue)
    sender: asyncio.Task[None] | None = None


# StatusCallbackEvent value -> the subscription keyword that enables it (§3.3).
EVENT_KEYWORD = {
    "conference-start": "start",
    "conference-end": "end",
    "participant-join": "join",
    "participant-leave": "leave",
    "participant-mute": "mute",
    "participant-unmute": "mute",
    "participant-hold": "hold",
    "participant-unhold": "hold",
    "participant-modify": "modify",
    "participant-speech-start": "speaker",
    "participant-speech-stop": "speaker",
    "announcement-end": "announcement",
    "announcement-fail": "announcement",
}


class Engine:
    """Calls, conferences and the event feed; no HTTP server (see ``Simulator``)."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.validator = RequestValidator(config.auth_token)
        self.calls: dict[str, Call] = {}
        self.conferences: dict[str, Conference] = {}
        self.events: list[SimEvent] = []
        self._seq = itertools.count(1)
        self._changed = asyncio.Event()
        self._subscribers: set[asyncio.Queue[SimEvent]] = set()
        self._t0 = time.monotonic()
        # The media module (numpy, the synthesiser) is imported lazily below because it
        # imports this one; load it now rather than on the first key press, when importing
        # numpy would stall this loop for some 0.2 s with webhook answers unread (the first
        # burst of calls in bench/meeting.py measured it as the app's latency).
        import handraise.sim.media  # noqa: F401
        self._http: aiohttp.ClientSession | None = None  # made on the loop, at first use
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ events
    def emit(self, kind: str, call_sid: str | None = None, /, **data: Any) -> SimEvent:
        event = SimEvent(next(self._seq), time.monotonic() - self._t0, kind, call_sid, data)
        self.events.append(event)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        for queue in self._subscribers:
            queue.put_nowait(event)
        return event

    def subscribe(self) -> asyncio.Queue[SimEvent]:
        queue: asyncio.Queue[SimEvent] = asyncio.Queue()
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[SimEvent]) -> None:
        self._subscribers.discard(queue)

    async def wait_for(self, predicate: Callable[[SimEvent], bool], *, timeout: float = 10.0,  # noqa: ASYNC109
                       after: int = 0) -> SimEvent:
        """The first event with ``seq > after`` matching ``predicate``; waits for it."""
        deadline = asyncio.get_running_loop().time() + timeout
        index = 0
        while True:
            changed = self._changed
            while index < len(self.events):
                event = self.events[index]
                index += 1
                if event.seq > after and predicate(event):
                    return event
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"no matching sim event within {timeout} s")
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                continue

    async def wait_event(self, kind: str, /, *, call_sid: str | None = None, after: int = 0,
                         timeout: float = 10.0, **match: Any) -> SimEvent:  # noqa: ASYNC109
        """The first event of ``kind`` (and call, and data items equal to ``match``)."""

        def predicate(event: SimEvent) -> bool:
            if event.kind != kind or (call_sid is not None and event.call_sid != call_sid):
                return False
            return all(event.data.get(k) == v for k, v in match.items())

        return await self.wait_for(predicate, timeout=timeout, after=after)

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        for call in list(self.calls.values()):
            if call.status not in ("completed", "busy", "failed", "canceled", "no-answer"):
                await self.hang_up(call.sid)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()

    # ------------------------------------------------------------------ timing
    async def media_sleep(self, seconds: float) -> None:
        if seconds > 0 and self.config.media_time_scale > 0:
            await asyncio.sleep(seconds * self.config.media_time_scale)
        else:
            await asyncio.sleep(0)

    def wait_seconds(self, seconds: float) -> float:
        return seconds * self.config.wait_time_scale

    # ------------------------------------------------------------------ webhooks
    def standard_params(self, call: Call) -> dict[str, str]:
        """The standard voice request parameters (TWILIO.md §7)."""
        return {
            "CallSid": call.sid,
            "AccountSid": self.config.account_sid,
            "From": call.from_,
            "To": call.to,
            "Caller": call.from_,
            "Called": call.to,
            "CallStatus": call.status,
            "ApiVersion": API_VERSION,
            "Direction": call.direction,
        }

    @property
    def http(self) -> aiohttp.ClientSession:
        """The webhook client: aiohttp, one connection per request in flight, as Twilio has.

        Not httpx: httpcore 1.0's pool rescans every connection for every queued request
        and, for each idle one, every connection again (O(n^2) per request; it also closes
        idle connections whenever more than 20 are open in all, encode/httpcore#1035). A
        burst of 30 calls spent more of this loop there than in the emulator itself, and
        every webhook's time includes this loop's delays. Idle connections close before
        hypercorn's 5 s keep-alive timeout, so no request races the server's close.
        """
        if self._http is None:
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=4.0) \
                if self.config.webhook_keepalive else aiohttp.TCPConnector(limit=0, force_close=True)
            self._http = aiohttp.ClientSession(
                connector=connector, trust_env=False,
                timeout=aiohttp.ClientTimeout(total=self.config.webhook_timeout))
        return self._http

    async def request(self, url: str, method: str, params: dict[str, str], *, purpose: str,
                      call_sid: str | None = None) -> WebhookResponse:
        """A signed webhook request (§5): POST form body, or GET with params in the query.

        Its ``ms`` is from sending the request to reading the whole answer (this loop's own
        delays included). Raises :class:`WebhookError` for no answer (refused, reset, timeout).
        """
        method = (method or "POST").upper()
        headers = {"User-Agent": "TwilioProxy/1.1 (handraise-sim)"}
        data: dict[str, str] | None = None
        if method == "GET":
            if params:
                url = url + ("&" if urlsplit(url).query else "?") + urlencode(params)
            # GET: the query string is part of the signed URL, no params (§5).
            headers["X-Twilio-Signature"] = self.validator.compute_signature(url, {})
        else:
            headers["X-Twilio-Signature"] = self.validator.compute_signature(url, params)
            data = params
        t0 = time.perf_counter()
        try:
            # encoded=True: the URL goes out as signed, not re-quoted by yarl.
            async with self.http.request(method, URL(url, encoded=True), data=data,
                                         headers=headers, allow_redirects=False) as answer:
                text = await answer.text()
                response = WebhookResponse(answer.status, text, answer.headers,
                                           (time.perf_counter() - t0) * 1000)
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = str(exc) or type(exc).__name__
            self.emit("webhook", call_sid, purpose=purpose, url=url, method=method,
                      params=params, status=None, error=error)
            raise WebhookError(error) from exc
        self.emit("webhook", call_sid, purpose=purpose, url=url, method=method, params=params,
                  status=response.status_code, ms=response.ms)
        return response

    async def fetch_twiml(self, call: Call, transfer: Transfer) -> tuple[list[Verb], str]:
        if transfer.twiml is not None:
            verbs, warnings = parse_twiml(transfer.twiml)
            url = call.doc_url
        else:
            url = transfer.url
            params = self.standard_params(call) | transfer.extra
            try:
                response = await self.request(url, transfer.method, params,
                                              purpose=transfer.purpose, call_sid=call.sid)
            except WebhookError as exc:
                raise TwimlError(11200, f"HTTP retrieval failure: {exc}") from exc
            if response.status_code >= 400:
                raise TwimlError(11200, f"HTTP retrieval failure: {url} returned "
                                        f"{response.status_code}")
            verbs, warnings = parse_twiml(response.text)
            call.doc_url = url
        for warning in warnings:
            self.record_error(call, warning.code, warning.message, level="warning")
        self.emit("twiml", call.sid, url=url, verbs=[v.name for v in verbs])
        return verbs, url

    def record_error(self, call: Call | None, code: int, message: str,
                     level: str = "error") -> None:
        entry = {"code": code, "message": message, "level": level, "t": call.elapsed()
                 if call else 0.0}
        if call is not None:
            call.errors.append(entry)
        log.warning("twilio %s %s: %s", level, code, message)
        self.emit("error" if level == "error" else "warning", call.sid if call else None,
                  code=code, message=message)

    def hear(self, call: Call, kind: str, **data: Any) -> None:
        """Append to what the caller heard (transcript) and to the feed."""
        entry = {"t": round(call.elapsed(), 3), "at": datetime.now(UTC).isoformat(),
                 "kind": kind} | data
        call.transcript.append(entry)
        self.emit("heard", call.sid, **entry)

    # ------------------------------------------------------------------ calls
    def place_call(self, from_: str, to: str, *, voice_url: str | None = None,
                   method: str | None = None) -> Call:
        call = Call(sid=new_sid("CA"), from_=from_, to=to)
        self.calls[call.sid] = call
        self.emit("call-placed", call.sid, from_=from_, to=to)
        start = Transfer(voice_url or self.config.voice_url,
                         method or self.config.voice_method, purpose="voice")
        call.task = self.spawn(self._call_main(call, start))
        return call

    def get_call(self, sid: str) -> Call:
        try:
            return self.calls[sid]
        except KeyError:
            raise KeyError(sid) from None

    @staticmethod
    def is_live(call: Call) -> bool:
        return call.status in ("queued", "ringing", "in-progress")

    async def _call_main(self, call: Call, transfer: Transfer) -> None:
        try:
            await self._run(call, transfer)
        except asyncio.CancelledError:
            # Hang-up or REST redirect; whoever cancelled decides what comes next.
            return
        except TwimlError as exc:
            self.record_error(call, exc.code, exc.message)
            self.hear(call, "say", text=APPLICATION_ERROR_TEXT, voice="man",
                      language="en-US")
        except Exception as exc:  # an emulator bug must not vanish silently
            log.exception("call %s crashed", call.sid)
            self.record_error(call, 0, f"emulator internal error: {exc!r}")
        await self._finish_call(call, call.status if call.status in ("busy", "failed")
                                else "completed")

    async def _run(self, call: Call, transfer: Transfer) -> None:
        current: Transfer | None = transfer
        while current is not None and current is not HANGUP:
            verbs, url = await self.fetch_twiml(call, current)
            current = await self._execute(call, verbs, url)

    async def _execute(self, call: Call, verbs: list[Verb], doc_url: str) -> Transfer | None:
        for verb in verbs:
            call.current_verb = verb.name
            self.emit("verb", call.sid, verb=verb.name, attrs=verb.attrs)
            if call.status == "ringing" and verb.name != "Reject":
                call.status = "in-progress"  # answered by the first verb that is not Reject
                call.start_time = datetime.now(UTC)
            result = await self._verb(call, verb, doc_url)
            if result is not None:
                return result
        call.current_verb = None
        return None  # end of document: Twilio hangs up

    async def _verb(self, call: Call, verb: Verb, doc_url: str) -> Transfer | None:
        name = verb.name
        if name in ("Say", "Play", "Pause"):
            await self.play_media_verb(call, verb, kind="heard")
        elif name == "Gather":
            return await self._gather(call, verb, doc_url)
        elif name == "Redirect":
            target = urljoin(doc_url, verb.text) if verb.text else doc_url
            return Transfer(target, verb.attr("method", "POST"), purpose="redirect")
        elif name == "Hangup":
            return HANGUP
        elif name == "Reject":
            call.status = "busy" if verb.attr("reason") == "busy" else "failed"
            return HANGUP
        elif name == "Dial":
            return await self._dial(call, verb, doc_url)
        elif name == "Start":
            from handraise.sim.media import start_stream

            stream = verb.children[0]
            await start_stream(self, call, url=self.stream_url(doc_url, stream.attr("url")),
                               name=stream.attrs.get("name"),
                               track=stream.attr("track", "inbound_track"),
                               params=parse_stream_params(stream),
                               status_callback=self._abs(doc_url, stream.attrs.get(
                                   "statusCallback")),
                               status_callback_method=stream.attr("statusCallbackMethod",
                                                                  "POST"))
        elif name == "Stop":
            from handraise.sim.media import stop_stream

            stream_name = verb.children[0].attrs.get("name")
            if stream_name:
                await stop_stream(self, call, stream_name)
            else:
                for sid in list(call.streams):
                    await stop_stream(self, call, sid)
        elif name == "Connect":
            from handraise.sim.media import connect_stream

            stream = verb.children[0]
            await connect_stream(self, call, url=self.stream_url(doc_url, stream.attr("url")),
                                 name=stream.attrs.get("name"),
                                 params=parse_stream_params(stream),
                                 status_callback=self._abs(doc_url, stream.attrs.get(
                                     "statusCallback")),
                                 status_callback_method=stream.attr("statusCallbackMethod",
                                                                    "POST"))
        return None

    @staticmethod
    def _abs(doc_url: str, url: str | None) -> str | None:
        return urljoin(doc_url, url) if url else None

    @staticmethod
    def stream_url(doc_url: str, url: str) -> str:
        """Absolute ws(s):// URL for a <Stream url> that may be relative (§1.2)."""
        absolute = urljoin(doc_url, url)
        if absolute.startswith("https://"):
            return "wss://" + absolute[len("https://"):]
        if absolute.startswith("http://"):
            return "ws://" + absolute[len("http://"):]
        return absolute

    async def play_media_verb(self, call: Call, verb: Verb, *, kind: str,
                              extra: dict[str, Any] | None = None,
                              to: list[Call] | None = None) -> None:
        """Say/Play/Pause: record what was heard and take (scaled) time."""
        listeners = to if to is not None else [call]
        extra = extra or {}
        if verb.name == "Pause":
            await self.media_sleep(float(verb.attr("length", "1") or 1))
            return
        loops = int(verb.attr("loop", "1") or 1)
        loops = 1000 if loops == 0 else loops
        for _ in range(loops):
            if verb.name == "Say":
                for listener in listeners:
                    self.hear(listener, "say" if kind == "heard" else kind, text=verb.text,
                              voice=verb.attr("voice", "man"),
                              language=verb.attr("language", "en-US"), **extra)
                # ~2.5 words per second, like a TTS voice.
                await self.media_sleep(0.3 + len(verb.text.split()) / 2.5)
            elif verb.attrs.get("digits"):
                digits = verb.attrs["digits"]
                for listener in listeners:
                    self.hear(listener, "play-digits" if kind == "heard" else kind,
                              digits=digits, **extra)
                await self.media_sleep(sum(0.5 if d == "w" else 0.2 for d in digits))
            else:
                for listener in listeners:
                    self.hear(listener, "play" if kind == "heard" else kind, url=verb.text,
                              **extra)
                await self.media_sleep(2.0)  # the emulator does not fetch or decode audio

    # ------------------------------------------------------------------ digits
    def press(self, call: Call, digits: str) -> None:
        """The caller presses keys: tones into streams, digits to whoever listens."""
        from handraise.sim.media import keypad_audio

        for digit in digits:
            if digit not in "0123456789*#ABCD":
                raise ValueError(f"not a keypad digit: {digit!r}")
        self.emit("digits-pressed", call.sid, digits=digits)
        if call.streams:
            audio = keypad_audio(self, digits) if self.config.keypad_tones_in_stream else None
            for stream in list(call.streams.values()):
                stream.on_keys(digits, audio)
        for digit in digits:
            taken = False
            for sink in list(reversed(call.sinks)):
                if sink.on_digit(digit):
                    taken = True
                    break
            if not taken:
                self.emit("digit-ignored", call.sid, digit=digit)

    def speak(self, call: Call, duration_ms: float) -> None:
        from handraise.sim.media import speech_audio

        self.emit("speech", call.sid, duration_ms=duration_ms)
        if call.streams:
            audio = speech_audio(self, duration_ms)
            for stream in list(call.streams.values()):
                stream.inject(audio)
        p = call.participant
        if p is not None and p.conference.started and not p.muted and not p.hold:
            # §3.3 "speaker": speech-start now, speech-stop when the caller falls silent.
            self.conference_event(p.conference, "participant-speech-start", p)
            asyncio.get_running_loop().call_later(
                duration_ms / 1000 / max(self.config.stream_speed, 1e-3), self._speech_stop, p)

    def _speech_stop(self, participant: Participant) -> None:
        if participant.call.sid in participant.conference.participants:
            self.conference_event(participant.conference, "participant-speech-stop",
                                  participant)

    # ------------------------------------------------------------------ Gather
    async def _gather(self, call: Call, verb: Verb, doc_url: str) -> Transfer | None:
        gather = _Gather(
            num_digits=int(verb.attr("numDigits", "0") or 0),
            finish_on_key=verb.attrs.get("finishOnKey", "#"),
        )
        timeout = self.wait_seconds(float(verb.attr("timeout", "5") or 5))
        inputs = verb.attr("input", "dtmf").split()
        if "speech" in inputs:
            self.record_error(call, 0, "Gather input=speech is not emulated; only keys count",
                              level="warning")
        self.emit("gather-start", call.sid, num_digits=gather.num_digits,
                  finish_on_key=gather.finish_on_key, timeout=timeout)
        if "dtmf" in inputs:
            call.sinks.append(gather)
        prompts = asyncio.ensure_future(self._gather_prompts(call, verb.children))
        try:
            # bargeIn: the first key stops the nested prompts.
            first: set[asyncio.Future[Any]] = {prompts, gather.first_key, gather.done}
            await asyncio.wait(first,
                               return_when=asyncio.FIRST_COMPLETED)
            if not prompts.done():
                prompts.cancel()
                await asyncio.gather(prompts, return_exceptions=True)
            # §6.1: the timeout runs after the nested verbs finish, and again after each key.
            while not gather.done.done():
                activity: asyncio.Future[Any] = asyncio.ensure_future(gather.activity.wait())
                waiting: set[asyncio.Future[Any]] = {activity, gather.done}
                finished, _ = await asyncio.wait(waiting, timeout=timeout,
                                                 return_when=asyncio.FIRST_COMPLETED)
                activity.cancel()
                if not finished:
                    break
                gather.activity.clear()
        finally:
            if gather in call.sinks:
                call.sinks.remove(gather)
            if not prompts.done():
                prompts.cancel()
        digits = "".join(gather.digits)
        result = "digits" if digits else "empty"
        self.emit("gather-end", call.sid, digits=digits, result=result)
        if not digits and not verb.flag("actionOnEmptyResult"):
            return None  # fall through to the next verb, no request (§6.1)
        action = urljoin(doc_url, verb.attrs["action"]) if verb.attrs.get("action") else doc_url
        return Transfer(action, verb.attr("method", "POST"), {"Digits": digits},
                        purpose="gather-action")

    async def _gather_prompts(self, call: Call, children: list[Verb]) -> None:
        for child in children:
            await self.play_media_verb(call, child, kind="heard")

    # ------------------------------------------------------------------ Dial/Conference
    async def _dial(self, call: Call, verb: Verb, doc_url: str) -> Transfer | None:
        noun = verb.children[0]
        name = noun.text
        label = noun.attrs.get("participantLabel")
        conference = self.active_conference(name)
        if label is not None:
            try:
                validate_label(label)
            except TwimlError as exc:
                self.record_error(call, exc.code, exc.message)
                return None  # not added; the next verb runs (§3.2)
            if conference and any(p.label == label for p in conference.participants.values()):
                self.record_error(call, 16025, f"participantLabel {label!r} already in use in "
                                               f"conference {name!r}")
                return None  # §3.2: not added, call continues with the next verb
        coach = noun.attrs.get("coach")
        if coach is not None and (conference is None or coach not in conference.participants):
            # §3.1: an invalid coach CallSid fails the call to the action URL with 13240.
            self.record_error(call, 13240, "Dial->Conference: Invalid Whisper SID")
            return self._dial_action(verb, doc_url, "failed")
        if conference and len(conference.participants) >= conference.max_participants:
            self.record_error(call, 16020, f"Conference {name!r} is full")
            return self._dial_action(verb, doc_url, "failed")
        if conference is None:
            conference = self._create_conference(name, noun, doc_url)
        beep = noun.attr("beep", "true")
        participant = Participant(
            call=call,
            conference=conference,
            label=label,
            muted=noun.flag("muted"),
            hold=False,
            start_conference_on_enter=noun.flag("startConferenceOnEnter", True),
            end_conference_on_exit=noun.flag("endConferenceOnExit"),
            beep=beep,
            wait_url=self._abs(doc_url, noun.attrs["waitUrl"]) if noun.attrs.get("waitUrl")
            else ("" if "waitUrl" in noun.attrs else None),
            wait_method=noun.attr("waitMethod", "POST"),
            hangup_on_star=verb.flag("hangupOnStar"),
        )
        call.participant = participant
        call.leave_reason = None
        star = _StarSink(participant) if participant.hangup_on_star else None
        if star:
            call.sinks.append(star)
        time_limit = self.wait_seconds(float(verb.attr("timeLimit", "14400") or 14400))
        timer = asyncio.get_running_loop().call_later(time_limit, participant.finish,
                                                      "time-limit")
        self.join(conference, participant)
        how = "ended"
        try:
            how = await asyncio.shield(participant.done)
        finally:
            timer.cancel()
            if star:
                call.sinks.remove(star)
            if participant.call.sid in conference.participants:
                self.leave(participant, call.leave_reason or "participant_hung_up")
            call.participant = None
        # §0.3: leaving by * reports DialCallStatus=answered; a conference end "completed".
        return self._dial_action(verb, doc_url, "answered" if how == "star" else "completed")

    def _dial_action(self, verb: Verb, doc_url: str, status: str) -> Transfer | None:
        if not verb.attrs.get("action"):
            return None
        # No DialCallSid/DialCallDuration for conferences (§6.2).
        return Transfer(urljoin(doc_url, verb.attrs["action"]), verb.attr("method", "POST"),
                        {"DialCallStatus": status}, purpose="dial-action")

    def active_conference(self, name: str) -> Conference | None:
        for conference in self.conferences.values():
            if conference.friendly_name == name and conference.status != "completed":
                return conference
        return None

    def _create_conference(self, name: str, noun: Verb, doc_url: str) -> Conference:
        events = noun.attr("statusCallbackEvent").replace(",", " ").split()
        conference = Conference(
            sid=new_sid("CF"),
            friendly_name=name,
            # §3.1: statusCallback and its events are taken from the first participant.
            status_callback=self._abs(doc_url, noun.attrs.get("statusCallback")),
            status_callback_method=noun.attr("statusCallbackMethod", "POST"),
            subscribed=frozenset(events),
            max_participants=int(noun.attr("maxParticipants", "250") or 250),
        )
        self.conferences[conference.sid] = conference
        conference.sender = self.spawn(self._send_callbacks(conference))
        self.emit("conference-created", None, conference_sid=conference.sid,
                  friendly_name=name)
        return conference

    def conference_event(self, conference: Conference, event: str,
                         participant: Participant | None = None,
                         extra: dict[str, str] | None = None) -> None:
        """Record a conference event; send its status callback if subscribed (§3.3)."""
        params: dict[str, str] = {
            "ConferenceSid": conference.sid,
            "FriendlyName": conference.friendly_name,
            "AccountSid": self.config.account_sid,
            "Timestamp": rfc2822(),
            "StatusCallbackEvent": event,
        }
        if participant is not None:
            params |= participant.callback_fields()
        params |= extra or {}
        subscribed = (conference.status_callback is not None
                      and EVENT_KEYWORD[event] in conference.subscribed)
        if subscribed:
            conference.sequence += 1
            params["SequenceNumber"] = str(conference.sequence)
            conference.callbacks.put_nowait(params)
        self.emit("conference", participant.call.sid if participant else None, event=event,
                  conference_sid=conference.sid, params=params, sent=subscribed)

    async def _send_callbacks(self, conference: Conference) -> None:
        """Deliver a conference's callbacks one at a time, in SequenceNumber order."""
        while True:
            params = await conference.callbacks.get()
            if params is None:
                return
            assert conference.status_callback is not None
            try:
                response = await self.request(conference.status_callback,
                                              conference.status_callback_method, params,
                                              purpose="conference-status-callback")
                if response.status_code >= 400:
                    self.record_error(None, 16011, f"conference callback returned "
                                                   f"{response.status_code}")
            except WebhookError as exc:
                self.record_error(None, 16011, f"conference callback failed: {exc}")

    def join(self, conference: Conference, participant: Participant) -> None:
        call = participant.call
        conference.participants[call.sid] = participant
        conference.date_updated = datetime.now(UTC)
        self.conference_event(conference, "participant-join", participant)
        if conference.started and participant.beep in ("true", "onEnter"):
            for other in conference.participants.values():
                self.hear(other.call, "beep", reason="enter")
        if not conference.started:
            present = list(conference.participants.values())
            # §3.1: starts with >= 2 participants of whom >= 1 has startConferenceOnEnter.
            if len(present) >= 2 and any(p.start_conference_on_enter for p in present):
                self._start_conference(conference)
            else:
                participant.wait_task = self.spawn(self._wait_music(participant))

    def _start_conference(self, conference: Conference) -> None:
        conference.started = True
        conference.status = "in-progress"
        self.conference_event(conference, "conference-start")
        for p in conference.participants.values():
            if p.wait_task is not None:
                p.wait_task.cancel()
                p.wait_task = None

    async def _wait_music(self, participant: Participant) -> None:
        """What a caller hears before the conference starts (waitUrl, §3.1)."""
        call = participant.call
        if participant.wait_url is None:
            self.hear(call, "wait-music", url="default")
            return
        if participant.wait_url == "":
            return
        try:
            await self.play_media_url(call, participant.wait_url, participant.wait_method,
                                      kind="wait", purpose="wait-url", to=[call])
        except TwimlError as exc:
            self.record_error(call, exc.code, exc.message)

    async def play_media_url(self, call: Call | None, url: str, method: str, *, kind: str,
                             purpose: str, to: list[Call],
                             params: dict[str, str] | None = None) -> None:
        """Fetch a wait/hold/announce URL; audio is 'played', TwiML may only hold media."""
        base = self.standard_params(call) if call is not None else {
            "AccountSid": self.config.account_sid}
        try:
            response = await self.request(url, method, base | (params or {}), purpose=purpose,
                                          call_sid=call.sid if call else None)
        except WebhookError as exc:
            raise TwimlError(11200, f"HTTP retrieval failure: {exc}") from exc
        if response.status_code >= 400:
            raise TwimlError(11200, f"HTTP retrieval failure: {url} returned "
                                    f"{response.status_code}")
        if response.headers.get("content-type", "").startswith("audio/"):
            for listener in to:
                self.hear(listener, kind, url=url)
            await self.media_sleep(2.0)
            return
        for verb in parse_media_twiml(response.text):
            if verb.name == "Redirect":
                target = urljoin(url, verb.text) if verb.text else url
                await self.play_media_url(call, target, verb.attr("method", "POST"), kind=kind,
                                          purpose=purpose, to=to, params=params)
                return
            await self.play_media_verb(call or to[0], verb, kind=kind, to=to)

    def leave(self, participant: Participant, reason: str, *, call_status: str | None = None,
              kicked: bool = False) -> None:
        """Remove a participant (§3.3 participant-leave), then apply the end rules."""
        conference = participant.conference
        call = participant.call
        if conference.participants.pop(call.sid, None) is None:
            return
        if participant.wait_task is not None:
            participant.wait_task.cancel()
        participant.status = "complete"
        conference.date_updated = datetime.now(UTC)
        status = call_status or ("completed" if reason == "participant_hung_up"
                                 and not participant.done.done() else "in-progress")
        self.conference_event(conference, "participant-leave", participant,
                              {"ReasonParticipantLeft": reason, "ParticipantCallStatus": status})
        participant.finish("left")
        if conference.status == "completed":
            return
        if conference.started and participant.beep in ("true", "onExit"):
            for other in conference.participants.values():
                self.hear(other.call, "beep", reason="exit")
        if participant.end_conference_on_exit:
            self.end_conference(
                conference,
                "participant-with-end-conference-on-exit-kicked" if kicked
                else "participant-with-end-conference-on-exit-left",
                ending=participant)
        elif not conference.participants:
            self.end_conference(conference, "last-participant-kicked" if kicked
                                else "last-participant-left", ending=participant)

    def end_conference(self, conference: Conference, reason: str,
                       ending: Participant | None = None) -> None:
        if conference.status == "completed":
            return
        conference.status = "completed"
        conference.reason_ended = reason
        conference.call_sid_ending = ending.call.sid if ending else None
        conference.date_updated = datetime.now(UTC)
        leave_reason = ("conference_ended_via_api" if reason == "conference-ended-via-api"
                        else "moderator_ended_conference")
        for other in list(conference.participants.values()):
            conference.participants.pop(other.call.sid)
            if other.wait_task is not None:
                other.wait_task.cancel()
            other.status = "complete"
            self.conference_event(conference, "participant-leave", other,
                                  {"ReasonParticipantLeft": leave_reason,
                                   "ParticipantCallStatus": "in-progress"})
            other.finish("ended")
        extra = {"ReasonConferenceEnded": reason,
                 "Reason": {
                     "conference-ended-via-api": "Conference ended via API",
                     "last-participant-left": "Last participant left",
                     "last-participant-kicked": "Last participant kicked",
                 }.get(reason, "Participant with endConferenceOnExit left")}
        if ending is not None:
            extra["CallSidEndingConference"] = ending.call.sid
            if ending.label is not None:
                extra["ParticipantLabelEndingConference"] = ending.label
        self.conference_event(conference, "conference-end", None, extra)
        conference.callbacks.put_nowait(None)

    def set_muted(self, participant: Participant, muted: bool) -> None:
        if participant.muted != muted:
            participant.muted = muted
            participant.date_updated = datetime.now(UTC)
            self.conference_event(participant.conference,
                                  "participant-mute" if muted else "participant-unmute",
                                  participant)

    def set_hold(self, participant: Participant, hold: bool, hold_url: str | None = None,
                 hold_method: str = "GET") -> None:
        if participant.hold == hold:
            return
        participant.hold = hold
        participant.date_updated = datetime.now(UTC)
        self.conference_event(participant.conference,
                              "participant-hold" if hold else "participant-unhold", participant)
        if hold:
            if hold_url:
                self.spawn(self._safe_media(participant.call, hold_url, hold_method, "hold",
                                            "hold-url"))
            else:
                self.hear(participant.call, "hold-music", url="default")

    async def _safe_media(self, call: Call, url: str, method: str, kind: str,
                          purpose: str) -> None:
        try:
            await self.play_media_url(call, url, method, kind=kind, purpose=purpose, to=[call])
        except TwimlError as exc:
            self.record_error(call, exc.code, exc.message)

    def announce(self, conference: Conference, url: str, method: str,
                 participant: Participant | None = None) -> None:
        """Participant or conference AnnounceUrl (§4.1, §4.2); runs in the background."""
        self.spawn(self._announce(conference, url, method, participant))

    async def _announce(self, conference: Conference, url: str, method: str,
                        participant: Participant | None) -> None:
        listeners = ([participant.call] if participant is not None
                     else [p.call for p in conference.participants.values()])
        call = participant.call if participant is not None else None
        extra = {"ConferenceSid": conference.sid}
        try:
            await self.play_media_url(call, url, method, kind="announcement",
                                      purpose="announce-url", to=listeners, params=extra)
        except TwimlError as exc:
            self.record_error(call, exc.code, exc.message)
            fields = {"AnnounceUrl": url, "ReasonAnnouncementFailed": exc.message}
            self.conference_event(conference, "announcement-fail", self._present(participant),
                                  fields)
            return
        # §3.3: participant fields only if that participant is still present.
        self.conference_event(conference, "announcement-end", self._present(participant),
                              {"AnnounceUrl": url})

    @staticmethod
    def _present(participant: Participant | None) -> Participant | None:
        if participant is None:
            return None
        return participant if participant.call.sid in participant.conference.participants \
            else None

    # ------------------------------------------------------------------ call control
    async def redirect(self, call: Call, transfer: Transfer) -> None:
        """REST ``Calls(sid).update(Url|Twiml)``: leave the conference, run new TwiML."""
        call.leave_reason = "participant_updated_via_api"  # §0.6
        await self._cancel_task(call)
        from handraise.sim.media import stop_connect_streams

        await stop_connect_streams(self, call)  # §2.4: a <Connect><Stream> gets stop
        call.leave_reason = None
        call.task = self.spawn(self._call_main(call, transfer))

    async def _cancel_task(self, call: Call) -> None:
        task = call.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def hang_up(self, sid: str, status: str = "completed") -> None:
        call = self.calls[sid]
        if not self.is_live(call):
            return
        call.leave_reason = "participant_hung_up"
        await self._cancel_task(call)
        await self._finish_call(call, status)

    async def _finish_call(self, call: Call, status: str) -> None:
        if call.finished.is_set():
            return
        from handraise.sim.media import stop_all_streams

        if call.participant is not None:
            self.leave(call.participant, call.leave_reason or "participant_hung_up",
                       call_status="completed")
            call.participant = None
        call.status = status
        call.end_time = datetime.now(UTC)
        call.current_verb = None
        await stop_all_streams(self, call)
        call.finished.set()
        self.emit("call-ended", call.sid, status=status)

    def call_state(self, call: Call) -> dict[str, Any]:
        p = call.participant
        return {
            "sid": call.sid,
            "from": call.from_,
            "to": call.to,
            "status": call.status,
            "current_verb": call.current_verb,
            "conference": None if p is None else {
                "sid": p.conference.sid, "friendly_name": p.conference.friendly_name,
                "status": p.conference.status, "label": p.label, "muted": p.muted,
                "hold": p.hold},
            "streams": [s.state() for s in call.streams.values()],
            "transcript": list(call.transcript),
            "errors": list(call.errors),
        }


@dataclass
class _Gather(DigitSink):
    num_digits: int
    finish_on_key: str
    digits: list[str] = field(default_factory=list)
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    first_key: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    activity: asyncio.Event = field(default_factory=asyncio.Event)

    def on_digit(self, digit: str) -> bool:
        if self.done.done():
            return False
        if not self.first_key.done():
            self.first_key.set_result(None)
        # finishOnKey="" means no finishing key: * and # are ordinary digits (§6.1).
        if self.finish_on_key and digit == self.finish_on_key:
            self.done.set_result(None)
            return True
        self.digits.append(digit)
        if self.num_digits and len(self.digits) >= self.num_digits:
            self.done.set_result(None)
        else:
            self.activity.set()
        return True


@dataclass
class _StarSink(DigitSink):
    participant: Participant

    def on_digit(self, digit: str) -> bool:
        if digit != "*":
            return False
        # §0.3 hangupOnStar: * takes the caller out of the conference to the Dial action.
        # The ReasonParticipantLeft Twilio reports for this is not documented [UNCONFIRMED];
        # participant_hung_up is the closest §3.3 value (the caller's leg left the room).
        self.participant.call.leave_reason = "participant_hung_up"
        self.participant.finish("star")
        return True
