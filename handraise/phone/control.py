"""Host controls over Twilio's REST API: mute, call on, done, lower, prompt, remove, end.

Two layers:

* :class:`TwilioControl` is the thin REST edge (the official ``twilio`` client, async
  calls only, base URL from ``HANDRAISE_TWILIO_API_URL``). Each call returns a
  :class:`RestOutcome` instead of raising: ``ok``, ``gone`` (Twilio 20404, the caller
  already left) or ``failed`` (anything else, with a sentence for the host).
* :class:`HostControls` is what the dashboard's buttons call. It keeps Redis and Twilio in
  step: the REST call first, local state only when it succeeded, local clean-up when the
  caller turned out to be gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, ParamSpec

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from .. import floor
from ..config import DEFAULT_TWILIO_API_URL, Settings
from ..errors import HandraiseError, NotFound
from ..events import REDIS_ERRORS
from ..metrics import Metrics
from ..pins import issue_pin, revoke_pin
from ..queue import Participant, Queue
from ..rooms import SETTINGS_BY_NAME, Room, get_room, update_room
from ..store import Redis, eval_script, key
from .keys import room_commands
from .streams import note_gather
from .twiml import (
    ANNOUNCEMENTS,
    COMMAND_PHRASES,
    KEYPAD_STREAM,
    PhoneUrls,
    keypad_stream_params,
    queue_line,
    spoken_name,
    where_line,
)

log = logging.getLogger(__name__)

P = ParamSpec("P")
OutcomeKind = Literal["ok", "gone", "failed"]


@dataclass(frozen=True)
class RestOutcome:
    kind: OutcomeKind
    message: str = ""
    #: Twilio did not answer in time: the change may still be applied, late.
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.kind == "ok"


#: "Call on next" tries at most this many hands whose callers are outside the conference.
NEXT_TRIES = 10
NOBODY_IN_CALL = ("No raised hand is in the conference right now: their callers are still "
                  "joining or answering a prompt. Try again in a moment.")


@dataclass(frozen=True)
class ActionResult:
    """What a host action did, with a sentence fit for the dashboard."""

    ok: bool
    message: str
    participant: str | None = None
    #: The REST call timed out (Twilio may still apply it).
    timed_out: bool = False
    #: Refused because the caller is not in the conference right now (joining, at a prompt).
    outside: bool = False


class _BaseUrlHttpClient(AsyncTwilioHttpClient):
    """``twilio``'s async HTTP client sending ``https://api.twilio.com`` requests elsewhere.

    A custom ``http_client`` is the library's documented extension point; the REST client
    itself always builds api.twilio.com URLs.
    """

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")

    async def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        if url.startswith(DEFAULT_TWILIO_API_URL):
            url = self.base_url + url[len(DEFAULT_TWILIO_API_URL):]
        response: Response = await super().request(method, url, *args, **kwargs)
        return response


class TwilioControl:
    """Outbound REST calls. Create inside a running event loop; ``await close()`` at the end."""

    def __init__(self, settings: Settings, *, timeout: float | None = None,
                 metrics: Metrics | None = None) -> None:
        self.metrics = metrics
        #: Seconds one REST call may take (``HANDRAISE_TWILIO_TIMEOUT``).
        self.timeout = settings.twilio_timeout_s if timeout is None else timeout
        self._http: AsyncTwilioHttpClient | None = None
        self._client: Client | None = None
        if settings.twilio_account_sid and settings.twilio_auth_token:
            if settings.twilio_api_url.rstrip("/") == DEFAULT_TWILIO_API_URL:
                self._http = AsyncTwilioHttpClient(timeout=self.timeout)
            else:
                self._http = _BaseUrlHttpClient(settings.twilio_api_url, timeout=self.timeout)
            self._client = Client(settings.twilio_account_sid, settings.twilio_auth_token,
                                  http_client=self._http)
            # twilio loads its REST tree (some 95 modules) on first use. Here, at start-up,
            # not in the first host action, where importing it stalled the event loop about
            # 0.1 s with every webhook in flight waiting (bench/meeting.py --only many).
            _ = self._client.api.v2010.account

    @property
    def configured(self) -> bool:
        return self._client is not None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def _do(self, what: str, call: Any) -> RestOutcome:
        if self._client is None:
            return RestOutcome("failed", "Twilio is not configured (TWILIO_ACCOUNT_SID and "
                                         "TWILIO_AUTH_TOKEN), so calls cannot be controlled.")
        started = time.perf_counter()
        outcome = await self._call(what, call)
        if self.metrics is not None:
            self.metrics.observe("handraise_twilio_rest_seconds", time.perf_counter() - started,
                                 outcome=outcome.kind)
        return outcome

    async def _call(self, what: str, call: Any) -> RestOutcome:
        assert self._client is not None
        try:
            # The async client stores its timeout but does not apply it (twilio 9: each
            # request passes timeout=None on to aiohttp, which then waits forever).
            async with asyncio.timeout(self.timeout):
                await call(self._client)
        except TwilioRestException as exc:
            if exc.status == 404 or exc.code == 20404:
                log.info("twilio: %s: not found (the call already left)", what)
                return RestOutcome("gone", "That caller has already left the call.")
            log.warning("twilio: %s failed: %s %s", what, exc.code, exc.msg)
            return RestOutcome("failed", f"Twilio refused to {what} (error {exc.code}): {exc.msg}")
        except TimeoutError:
            log.warning("twilio: %s: no answer within %.1f s", what, self.timeout)
            return RestOutcome("failed", f"Twilio did not answer within {self.timeout:g} s, so "
                                         f"could not {what}; nothing was changed. Try again "
                                         "in a moment.", timed_out=True)
        except (TwilioException, aiohttp.ClientError, OSError) as exc:
            log.warning("twilio: %s failed: %r", what, exc)
            return RestOutcome("failed", f"Could not reach Twilio to {what}; nothing was changed.")
        return RestOutcome("ok")

    def _participant(self, client: Client, conference_sid: str, who: str) -> Any:
        return client.conferences(conference_sid).participants(who)

    async def set_muted(self, conference_sid: str, who: str, muted: bool) -> RestOutcome:
        return await self._do(
            "mute the caller" if muted else "unmute the caller",
            lambda c: self._participant(c, conference_sid, who).update_async(muted=muted),
        )

    async def announce_to(self, conference_sid: str, who: str, url: str) -> RestOutcome:
        return await self._do(
            "play a private announcement",
            lambda c: self._participant(c, conference_sid, who).update_async(
                announce_url=url, announce_method="POST"),
        )

    async def kick(self, conference_sid: str, who: str) -> RestOutcome:
        return await self._do(
            "remove the caller", lambda c: self._participant(c, conference_sid, who).delete_async())

    async def redirect(self, call_sid: str, url: str) -> RestOutcome:
        return await self._do(
            "redirect the call", lambda c: c.calls(call_sid).update_async(url=url, method="POST"))

    async def end_conference(self, conference_sid: str) -> RestOutcome:
        return await self._do(
            "end the conference",
            lambda c: c.conferences(conference_sid).update_async(status="completed"))

    async def hang_up(self, call_sid: str) -> RestOutcome:
        return await self._do(
            "hang up the call", lambda c: c.calls(call_sid).update_async(status="completed"))

    async def start_stream(self, call_sid: str, url: str, *, name: str,
                           params: Mapping[str, str]) -> RestOutcome:
        """Fork the call's inbound audio to ``url`` (REST Streams create, TWILIO.md §1.3),
        with the ``<Parameter>``s a TwiML ``<Start><Stream>`` would carry."""
        numbered: dict[str, str] = {}
        for i, (pname, value) in enumerate(params.items(), start=1):
            numbered[f"parameter{i}_name"] = pname
            numbered[f"parameter{i}_value"] = value
        return await self._do(
            "start the keypad stream",
            lambda c: c.calls(call_sid).streams.create_async(
                url=url, name=name, track="inbound_track", **numbered))

    async def call_status(self, call_sid: str) -> str | None:
        """The call's status (``in-progress``, ``completed``…), None if unknown or unreachable."""
        found: list[str] = []

        async def fetch(c: Client) -> None:
            found.append(str((await c.calls(call_sid).fetch_async()).status))

        outcome = await self._do("look up the call", fetch)
        return found[0] if outcome.ok and found else ("completed" if outcome.kind == "gone" else None)

    async def list_participants(self, conference_sid: str) -> tuple[RestOutcome, list[RemoteParticipant]]:
        found: list[RemoteParticipant] = []

        async def fetch(c: Client) -> None:
            for item in await c.conferences(conference_sid).participants.list_async():
                found.append(RemoteParticipant(
                    label=item.label, call_sid=item.call_sid, muted=bool(item.muted),
                    hold=bool(item.hold), host=bool(item.start_conference_on_enter)))

        outcome = await self._do("list the conference's participants", fetch)
        return outcome, found


@dataclass(frozen=True)
class RemoteParticipant:
    """One participant as Twilio lists it."""

    label: str | None
    call_sid: str | None
    muted: bool
    hold: bool
    host: bool


PROMPT_TTL_S = 120
#: The prompting key's value while a star-mode caller answers an invitation to speak.
INVITE_MARK = "invite"


@dataclass(frozen=True)
class FloorTiming:
    """The floor's durations (settings ``HANDRAISE_INVITE_TIMEOUT``, ``_SPEAK_WARNING``, ``_SPEAK_GRACE``)."""

    invite_timeout_s: float = 15.0
    speak_warn_s: float = 15.0
    speak_grace_s: float = 10.0


#: How long a private sentence waits in Redis for Twilio to fetch it (seconds).
NOTE_TTL_S = 300


def note_key(room: str, note: str) -> str:
    """A private sentence for one caller, named in the AnnounceUrl by a random token."""
    return key(room, "note", note)


def key_options(room: Room, *, host: bool) -> list[tuple[str, str]]:
    """(keys, what they do) of one caller's keypad commands in ``room``, as spoken help says
    them: the participants' commands, or the host's (with help). A command without a phrase
    in :data:`COMMAND_PHRASES` (another feature's) is named by its setting's label."""
    options = []
    for seq, command in room_commands(room.keys(), host=host).items():
        if command == "host_only":
            continue
        phrase = "hear these keys again" if host and command == "help" else COMMAND_PHRASES.get(command)
        if phrase is None:
            setting = SETTINGS_BY_NAME.get(f"{command}_keys")
            label = setting.label if setting else command.replace("_", " ")
            phrase = label.lower().removesuffix(" keys")
        options.append((seq, phrase))
    # Help last: "... star 0 to hear this again" reads best at the end.
    options.sort(key=lambda o: o[0] == room.help_keys)
    return options
#: Call statuses after which a call cannot come back (anything else may still join).
CALL_OVER = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})


ENDED_CONFERENCE_TTL_S = 24 * 3600  # far longer than any callback can trail its conference


def ended_key(room: str) -> str:
    """ConferenceSids of the room that ended: their late callbacks must not revive them."""
    return key(room, "ended-conferences")


async def remember_ended(redis: Redis, room: str, conference_sid: str) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.sadd(ended_key(room), conference_sid)
        pipe.expire(ended_key(room), ENDED_CONFERENCE_TTL_S)
        await pipe.execute()


def prompting_key(room: str, pid: str) -> str:
    """Set while a host prompt has pulled ``pid`` out of the conference."""
    return key(room, "prompting", pid)


async def forget_participant(queue: Queue, room: str, pid: str, *, reason: str) -> bool:
    """Remove a participant whose call is gone: hand, speaker state and web PIN go too."""
    left = await queue.leave(room, pid, reason=reason)
    await revoke_pin(queue.redis, room, pid)
    return left


_SET_CONFERENCE = """
-- KEYS 1 participants, 2 participant hash ; ARGV 1 pid, 2 ConferenceSid ('' = in none)
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'conference_sid', ARGV[2])
return 1
"""


async def set_conference(redis: Redis, room: str, pid: str, conference_sid: str) -> bool:
    """Record which conference ``pid`` is in ('' for none); False if ``pid`` is not in the room.

    One script, so that a participant who just left is not brought back as a stub hash.
    """
    keys = [key(room, "participants"), key(room, "p", pid)]
    return bool(await eval_script(redis, _SET_CONFERENCE, len(keys), *keys, pid, conference_sid))


async def clear_conference(queue: Queue, room: str, conference_sid: str, *,
                           reason: str = "conference-ended") -> int:
    """The conference ended: its participants leave, the room forgets it.

    Callers outside it (the pre-join window, a host prompt, the star menu) stay: their calls
    go on, and they join the room's next conference.
    """
    state = await queue.snapshot(room)
    n = 0
    for p in state.participants:
        if await queue.redis.hget(key(room, "p", p.id), "conference_sid") == conference_sid:
            n += await forget_participant(queue, room, p.id, reason=reason)
    await queue.new_meeting(room)  # the fair order counts who spoke in this meeting only
    with contextlib.suppress(NotFound):
        await update_room(queue.redis, room, conference_sid="", maxlen=queue.maxlen)
    return n


_REDIS_DOWN = ActionResult(False, "The hand queue is briefly unavailable (Redis cannot be reached); "
                                  "nothing was changed. Try again in a moment.")


def _redis_guarded(method: Callable[P, Awaitable[ActionResult]]) -> Callable[P, Awaitable[ActionResult]]:
    """A lost Redis or a refused domain step (the caller just left…) becomes a clear result."""

    @functools.wraps(method)
    async def run(*args: P.args, **kwargs: P.kwargs) -> ActionResult:
        try:
            return await method(*args, **kwargs)
        except HandraiseError as exc:
            return ActionResult(False, exc.message)
        except REDIS_ERRORS as exc:
            log.warning("host action %s: redis unavailable: %r", method.__name__, exc)
            return _REDIS_DOWN

    return run


class HostControls:
    """The host's buttons. Every method returns an :class:`ActionResult`, never raises for
    Twilio trouble; domain errors (unknown participant…) come back as ``ok=False`` too."""

    def __init__(self, queue: Queue, twilio: TwilioControl, urls: PhoneUrls,
                 timing: FloorTiming | None = None) -> None:
        self.queue = queue
        self.redis: Redis = queue.redis
        self.twilio = twilio
        self.urls = urls
        self.timing = timing or FloorTiming()
        self._undoing: set[asyncio.Task[RestOutcome]] = set()

    def _undo(self, step: Awaitable[RestOutcome]) -> None:
        """Run a compensating REST call in the background (the host's answer does not wait)."""
        task: asyncio.Task[RestOutcome] = asyncio.ensure_future(step)
        self._undoing.add(task)
        task.add_done_callback(self._undoing.discard)

    async def _target(self, room: str, pid: str) -> tuple[Room, Participant]:
        return await self.queue.room_and_participant(room, pid)

    async def _in_call(self, room: str, pid: str) -> tuple[Participant, str] | ActionResult:
        """The participant and the ConferenceSid for an action on a caller in the conference,
        or the refusal."""
        try:
            r, p = await self._target(room, pid)
        except HandraiseError as exc:
            return ActionResult(False, exc.message, pid)
        if not r.conference_sid:
            return ActionResult(False, "The conference has not started yet.", pid)
        return p, r.conference_sid

    @staticmethod
    def _who(p: Participant) -> str:
        return p.label or p.call_sid or p.id

    async def _gone(self, room: str, pid: str) -> ActionResult:
        """Twilio does not list them in the conference: hung up, or just not in it right now."""
        try:
            p = await self.queue.participant(room, pid)
        except NotFound:
            return ActionResult(False, "That caller has already left the call.", pid)
        status = await self.twilio.call_status(p.call_sid) if p.call_sid else "completed"
        if status is None:
            # Twilio could not be asked: forgetting a live caller would strand them, so keep them.
            return ActionResult(False, "That caller is not in the conference, and Twilio could not "
                                       "be reached to check their call; nothing was changed. Try "
                                       "again in a moment.", pid)
        if status not in CALL_OVER:
            return ActionResult(False, "That caller is not in the conference right now (joining, or "
                                       "answering a prompt); try again in a moment.", pid, outside=True)
        await forget_participant(self.queue, room, pid, reason="gone")
        return ActionResult(False, "That caller has already left the call.", pid)

    async def _set_muted(self, room: str, pid: str, muted: bool) -> ActionResult:
        found = await self._in_call(room, pid)
        if isinstance(found, ActionResult):
            return found
        p, conference = found
        outcome = await self.twilio.set_muted(conference, self._who(p), muted)
        if outcome.kind == "gone":
            return await self._gone(room, pid)
        if not outcome.ok:
            return ActionResult(False, outcome.message, pid, timed_out=outcome.timed_out)
        await self.queue.update(room, pid, muted=muted)
        log.info("room %s: %s %s", room, "muted" if muted else "unmuted", pid)
        return ActionResult(True, "Muted." if muted else "Unmuted.", pid)

    async def _announce(self, room: str, pid: str, key: str, n: int | None = None, *,
                        target: tuple[Room, Participant] | None = None) -> RestOutcome:
        """A private prompt to one caller; failure is logged, not fatal (the action happened)."""
        try:
            r, p = target or await self._target(room, pid)
        except HandraiseError as exc:
            return RestOutcome("failed", exc.message)
        if not r.conference_sid:
            return RestOutcome("failed", "The conference has not started yet.")
        # The PIN reminder names the caller, never the PIN: the handler looks it up.
        url = self.urls.announce_pin(room, pid) if key == "pin" else self.urls.announce(key, n)
        return await self.twilio.announce_to(r.conference_sid, self._who(p), url)

    @_redis_guarded
    async def announce(self, room: str, pid: str, key: str, n: int | None = None, *,
                       target: tuple[Room, Participant] | None = None) -> ActionResult:
        """Play one of :data:`twiml.ANNOUNCEMENTS` to ``pid`` only (``"raised"`` takes ``n``).

        For the web page: after a raise from the companion page, tell the caller their place.
        ``target``: the room and ``pid`` as the caller has just read them (the keypad reads
        them with its other checks), so they are not read again.
        """
        if key not in ANNOUNCEMENTS:
            return ActionResult(False, f"There is no announcement {key!r}.", pid)
        outcome = await self._announce(room, pid, key, n, target=target)
        return ActionResult(outcome.ok, outcome.message or "Announced.", pid)

    @_redis_guarded
    async def tell(self, room: str, pid: str, text: str) -> ActionResult:
        """Say ``text`` to ``pid`` only (the host's keypad answers, "where am I?").

        The sentence waits in Redis under a random token named in the AnnounceUrl, so no
        name or number is ever in a URL Twilio logs.
        """
        found = await self._in_call(room, pid)
        if isinstance(found, ActionResult):
            return found
        p, conference = found
        note = secrets.token_urlsafe(12)
        await self.redis.set(note_key(room, note), text, ex=NOTE_TTL_S)
        outcome = await self.twilio.announce_to(conference, self._who(p),
                                                self.urls.announce_note(room, pid, note))
        return ActionResult(outcome.ok, outcome.message or "Told them.", pid)

    @_redis_guarded
    async def tell_where(self, room: str, pid: str) -> ActionResult:
        """Tell ``pid`` privately whether their hand is up and their place in line (star 3)."""
        state = await self.queue.snapshot(room)
        position = next((h.position for h in state.queue if h.participant == pid), None)
        return await self.tell(room, pid, where_line(position, speaking=state.speaker == pid))

    @_redis_guarded
    async def tell_help(self, room: str, pid: str) -> ActionResult:
        """Tell ``pid`` privately the room's keys, their web PIN and the page address (star 0)."""
        found = await self._in_call(room, pid)
        if isinstance(found, ActionResult):
            return found
        p, conference = found
        outcome = await self.twilio.announce_to(conference, self._who(p),
                                                self.urls.announce_help(room, pid))
        return ActionResult(outcome.ok, outcome.message or "Told them the keys.", pid)

    @_redis_guarded
    async def queue_report(self, room: str) -> ActionResult:
        """How many hands are up and whose is next: "Three hands up. Next: caller ending 4 8 2 1." """
        state = await self.queue.snapshot(room)
        head = next((h for h in state.queue if h.position == 1), None)
        p = state.participant(head.participant) if head else None
        return ActionResult(True, queue_line(len(state.queue), spoken_name(p.display_name)
                                             if p else None))

    @_redis_guarded
    async def remind_pin(self, room: str, pid: str) -> ActionResult:
        """Tell ``pid`` privately where the companion page is and their PIN (star 0)."""
        outcome = await self._announce(room, pid, "pin")
        return ActionResult(outcome.ok, outcome.message or "Told them their PIN.", pid)

    @_redis_guarded
    async def mute(self, room: str, pid: str) -> ActionResult:
        return await self._set_muted(room, pid, True)

    @_redis_guarded
    async def unmute(self, room: str, pid: str) -> ActionResult:
        """Unmute ``pid``; in a consent room, invite them instead (nobody is unmuted unasked)."""
        r = await get_room(self.redis, room)
        if r.unmute == "consent" and (await self.queue.participant(room, pid)).role != "host":
            return await self._invite(r, pid)
        return await self._set_muted(room, pid, False)

    @_redis_guarded
    async def call_on(self, room: str, pid: str | None = None) -> ActionResult:
        """Unmute ``pid`` (or the first raised hand), make them the speaker, tell them privately.

        In a consent room (``unmute = consent``) this invites them instead; they go live
        when they accept (:meth:`answer`). ``pid`` None is "Call on next" (the dashboard's
        button, the API's ``call-next``, the host's keypad): one function for all of them.
        """
        r = await get_room(self.redis, room)
        act = self._invite if r.unmute == "consent" else self._call_on_now
        if pid is not None:
            return await act(r, pid)
        candidates, refusal = await self._next_hands(r)
        for candidate in candidates:
            result = await act(r, candidate, next_hand=True)
            if not result.outside:
                return result
            log.info("room %s: call on next passed over %s (not in the conference yet)", room, candidate)
        return refusal or ActionResult(False, NOBODY_IN_CALL)

    async def _next_hands(self, r: Room) -> tuple[list[str], ActionResult | None]:
        """"Call on next"'s candidates in queue order, or the refusal when there are none.

        A caller at a host prompt (or in the star menu) is left out. A caller Twilio does not
        have in the conference yet (the pre-join window) is passed over by :meth:`call_on`,
        which then tries the next hand: one caller outside must not stop the meeting.
        """
        hands = await self.queue.queue(r.id)
        if not hands:
            return [], ActionResult(False, "No hand is raised.")
        if not r.conference_sid:
            return [], ActionResult(False, "The conference has not started yet.")
        async with self.redis.pipeline(transaction=False) as pipe:
            for hand in hands[:NEXT_TRIES]:
                pipe.exists(prompting_key(r.id, hand.participant))
            prompting = await pipe.execute()
        candidates = [h.participant for h, asked in zip(hands, prompting, strict=False) if not asked]
        return candidates, None if candidates else ActionResult(False, NOBODY_IN_CALL)

    async def _call_on_now(self, r: Room, pid: str, *, next_hand: bool = False) -> ActionResult:
        room = r.id
        try:
            r, p = await self._target(room, pid)
        except HandraiseError as exc:
            return ActionResult(False, exc.message, pid)
        # Twilio first: when it fails or does not answer, the queue is left as it was.
        result = await self._set_muted(room, pid, False)
        if not result.ok:
            if result.timed_out and r.conference_sid:
                # A slow Twilio may still unmute them, late: mute them again behind it, so
                # the call ends as the queue says (muted, not the speaker), not half-changed.
                self._undo(self.twilio.set_muted(r.conference_sid, self._who(p), True))
            return result
        # The turn names the speaker it replaced atomically: of two racing clicks, the
        # later one mutes the earlier speaker, so only one caller stays live.
        try:
            turn = await self.queue.call_on(room, pid, by="host")
        except Exception:
            # Unmuted but not made the speaker (Redis went away): mute them again rather
            # than leave a live caller the queue does not know about.
            if r.conference_sid:
                await self.twilio.set_muted(r.conference_sid, self._who(p), True)
            raise
        if turn is not None and turn.previous:
            await self._set_muted(room, turn.previous, True)
        if r.speak_limit_s:
            await floor.schedule(self.redis, room)
        await self._announce(room, pid, "live")
        return ActionResult(True, "They are live.", pid)

    # --- consent rooms: invitations to speak -------------------------------------------

    async def _invite(self, r: Room, pid: str, *, next_hand: bool = False) -> ActionResult:
        """Invite ``pid`` to speak (``next_hand``: as "Call on next"); the caller alone hears it."""
        p = await self.queue.participant(r.id, pid)
        if p.role == "host":  # a host needs nobody's leave to speak
            return await self._call_on_now(r, pid)
        if not r.conference_sid:
            return ActionResult(False, "The conference has not started yet.", pid)
        got = await floor.invite(self.redis, r.id, pid, timeout_s=self.timing.invite_timeout_s,
                                 next_hand=next_hand, maxlen=self.queue.maxlen)
        if got.outcome == "busy":
            try:
                other = (await self.queue.participant(r.id, got.participant)).display_name
            except NotFound:
                other = "The invited caller"
            return ActionResult(False, f"{other} has not answered the invitation yet; wait for "
                                       "their answer.", got.participant)
        if got.outcome == "speaking":
            return ActionResult(True, "They are live already.", pid)
        if r.keypad_mode == "star" and p.call_sid:
            # The star-mode keypad is read outside the conference: a short Gather and back.
            await self.redis.set(prompting_key(r.id, pid), INVITE_MARK, ex=PROMPT_TTL_S)
            outcome = await self.twilio.redirect(p.call_sid, self.urls.invite(r.id, pid))
            if not outcome.ok:
                await self.redis.delete(prompting_key(r.id, pid))
        else:
            outcome = await self.twilio.announce_to(
                r.conference_sid, self._who(p), self.urls.announce_invite(r.accept_keys, r.decline_keys))
        if not outcome.ok:  # not delivered: take it back, so the next one is not held up
            await floor.withdraw(self.redis, r.id, pid, maxlen=self.queue.maxlen)
        if outcome.kind == "gone":
            return await self._gone(r.id, pid)
        if not outcome.ok:
            return ActionResult(False, outcome.message, pid)
        log.info("room %s: invited %s to speak%s", r.id, pid, " (call on next)" if next_hand else "")
        return ActionResult(True, f"Invited {p.display_name}; waiting for their answer.", pid)

    @_redis_guarded
    async def answer(self, room: str, pid: str, *, accept: bool, source: str,
                     in_gather: bool = False) -> ActionResult:
        """The caller's answer to their invitation: keypad 1 / 2, or Go live / Stay muted.

        ``in_gather``: answered in the star-mode Gather, whose TwiML puts them back (the
        caller is outside the conference, so no REST unmute).
        """
        got = await floor.answer(self.redis, room, pid, accept=accept, source=source,
                                 maxlen=self.queue.maxlen)
        if got.outcome == "none":
            return ActionResult(False, "There is no invitation to answer.", pid)
        asked = await self.redis.get(prompting_key(room, pid)) == INVITE_MARK and not in_gather
        if got.outcome in ("declined", "expired"):
            log.info("room %s: %s %s the invitation to speak", room, pid,
                     "declined" if got.outcome == "declined" else "answered too late")
            if asked:  # answered on the page while the phone waits in the Gather: back in
                await self._bring_back(room, pid)
            if got.next:
                await self._advance(room)
            if got.outcome == "expired":
                return ActionResult(False, "The invitation had expired; you stay muted.", pid)
            return ActionResult(True, "You stay muted.", pid)
        r, _ = await self._target(room, pid)
        if in_gather or asked:
            # Outside the conference: the rejoin reads the mute state, so they come back live.
            await self.queue.update(room, pid, muted=False)
        else:
            result = await self._set_muted(room, pid, False)
            if not result.ok:
                return result
        turn = await self.queue.call_on(room, pid, by="host")
        if turn is not None and turn.previous:
            await self._set_muted(room, turn.previous, True)
        if asked:
            await self._bring_back(room, pid)
        if r.speak_limit_s:
            await floor.schedule(self.redis, room)
        if not in_gather and not asked:
            await self._announce(room, pid, "live")
        log.info("room %s: %s accepted the invitation to speak (%s)", room, pid, source)
        return ActionResult(True, "You are live.", pid)

    async def _bring_back(self, room: str, pid: str) -> None:
        p = await self.queue.participant(room, pid)
        if p.call_sid:
            outcome = await self.twilio.redirect(p.call_sid, self.urls.rejoin(room, pid))
            if not outcome.ok:
                log.info("room %s: could not bring %s back from the invitation: %s", room, pid,
                         outcome.message)

    async def _advance(self, room: str) -> None:
        """A "Call on next" invitation was declined: invite the next hand, if any."""
        result = await self.call_on(room)
        log.info("room %s: call on next after a decline: %s", room, result.message)

    async def on_timer(self, action: floor.TimerAction) -> None:
        """Carry out what the floor's sweep claimed (this process alone does)."""
        room, pid = action.room, action.participant
        if action.kind in ("no_answer", "left"):
            if action.kind == "no_answer" and \
                    await self.redis.get(prompting_key(room, pid)) != INVITE_MARK:
                await self._announce(room, pid, "no_answer")  # star mode: its Gather says so
            if action.next:
                await self._advance(room)
        elif action.kind == "cue":
            await self._announce(room, pid, "time_cue", max(1, round(self.timing.speak_warn_s)))
        elif action.kind == "mute":
            await self._announce(room, pid, "time_up")
            result = await self.done(room, pid)
            log.info("room %s: %s reached the speaking limit: %s", room, pid, result.message)

    @_redis_guarded
    async def done(self, room: str, pid: str | None = None) -> ActionResult:
        """End the current speaker's turn: mute them again."""
        pid = pid or await self.queue.speaker(room)
        if pid is None:
            return ActionResult(False, "Nobody is speaking.")
        result = await self._set_muted(room, pid, True)
        if not result.ok:
            return result
        await self.queue.done_speaking(room, pid, by="host")
        return ActionResult(True, "Done; they are muted again.", pid)

    @_redis_guarded
    async def lower_hand(self, room: str, pid: str) -> ActionResult:
        try:
            lowered = await self.queue.lower_hand(room, pid, by="host")
        except HandraiseError as exc:
            return ActionResult(False, exc.message, pid)
        if not lowered:
            return ActionResult(False, "Their hand was not raised.", pid)
        await self._announce(room, pid, "lowered")
        return ActionResult(True, "Hand lowered.", pid)

    @_redis_guarded
    async def rename(self, room: str, pid: str, name: str) -> ActionResult:
        """Set the name the host and the queue show for ``pid`` ("" goes back to "Caller 4821")."""
        changed = await self.queue.update(room, pid, name=name)
        shown = (await self.queue.participant(room, pid)).display_name
        if not changed:
            return ActionResult(True, f"The name is already {shown}.", pid)
        return ActionResult(True, f"Renamed to {shown}.", pid)

    @_redis_guarded
    async def lower_all(self, room: str) -> ActionResult:
        n = await self.queue.lower_all(room, by="host")
        return ActionResult(True, f"{n} hand{'s' if n != 1 else ''} lowered.")

    @_redis_guarded
    async def undo_lower_all(self, room: str) -> ActionResult:
        """Bring back the hands "Lower all hands" took down (within 15 s, once)."""
        n = await self.queue.undo_lower_all(room, by="host")
        if n is None:
            return ActionResult(False, "Nothing to undo.")
        if n == 0:
            return ActionResult(True, "No hand came back: those callers have left or speak now.")
        return ActionResult(True, f"{n} hand{'s are' if n != 1 else ' is'} back in the queue.")

    @_redis_guarded
    async def mute_all(self, room: str) -> ActionResult:
        """Mute every caller except hosts; the speaker's turn ends."""
        state = await self.queue.snapshot(room)
        targets = [p for p in state.participants if p.role != "host" and not p.muted]
        results = await asyncio.gather(*(self._set_muted(room, p.id, True) for p in targets))
        if state.speaker:
            await self.queue.done_speaking(room, state.speaker, by="host")
        failed = [r for r in results if not r.ok]
        if failed:
            return ActionResult(False, f"Muted {len(results) - len(failed)} of {len(results)}: "
                                       f"{failed[0].message}")
        return ActionResult(True, f"Muted {len(results)} caller{'s' if len(results) != 1 else ''}.")

    @_redis_guarded
    async def remove(self, room: str, pid: str) -> ActionResult:
        """Take a caller out of the conference (their call ends)."""
        try:
            r, p = await self._target(room, pid)
        except HandraiseError as exc:
            return ActionResult(False, exc.message, pid)
        if r.conference_sid:
            outcome = await self.twilio.kick(r.conference_sid, self._who(p))
        elif p.call_sid:
            outcome = RestOutcome("failed", "The conference has not started yet.")
        else:
            outcome = RestOutcome("gone")
        if outcome.kind == "gone" and p.call_sid:
            # Not in the conference (code menu, prompt): end the call itself.
            outcome = await self.twilio.hang_up(p.call_sid)
        if not outcome.ok and outcome.kind != "gone":
            return ActionResult(False, outcome.message, pid)
        await forget_participant(self.queue, room, pid, reason="removed")
        log.info("room %s: removed %s", room, pid)
        return ActionResult(True, "Removed from the call.", pid)

    @_redis_guarded
    async def end_conference(self, room: str) -> ActionResult:
        """End the conference for everyone; the room stays open for a later meeting."""
        try:
            r = await get_room(self.redis, room)
        except HandraiseError as exc:
            return ActionResult(False, exc.message)
        if r.conference_sid:
            outcome = await self.twilio.end_conference(r.conference_sid)
            if not outcome.ok and outcome.kind != "gone":
                return ActionResult(False, outcome.message)
            await remember_ended(self.redis, room, r.conference_sid)
            n = await clear_conference(self.queue, room, r.conference_sid)
        else:
            n = 0  # no conference: whoever is in the room is still on their way in
        log.info("room %s: conference ended by the host (%d participants)", room, n)
        return ActionResult(True, "The conference has ended.")

    @_redis_guarded
    async def prompt(self, room: str, pid: str) -> ActionResult:
        """Pull one caller into a short "press star 1" Gather and back, state intact."""
        try:
            _, p = await self._target(room, pid)
        except HandraiseError as exc:
            return ActionResult(False, exc.message, pid)
        if not p.call_sid:
            return ActionResult(False, "That participant has no phone call.", pid)
        # Set before the redirect: the interrupted Dial's action may arrive at once.
        await self.redis.set(prompting_key(room, pid), "1", ex=PROMPT_TTL_S)
        outcome = await self.twilio.redirect(p.call_sid, self.urls.prompt(room, pid))
        if not outcome.ok:
            await self.redis.delete(prompting_key(room, pid))
        if outcome.kind == "gone":
            return await self._gone(room, pid)
        if not outcome.ok:
            return ActionResult(False, outcome.message, pid)
        return ActionResult(True, "They are being asked.", pid)

    async def has_outsiders(self, room: str) -> bool:
        """True if a caller of ``room`` is not known to be in its conference.

        They are in the pre-join window, the star menu or a host prompt, or they hung up
        there, which no callback reports: only :meth:`reconcile` can tell which.
        """
        r = await get_room(self.redis, room)
        state = await self.queue.snapshot(room)
        callers = [p.id for p in state.participants if p.call_sid]
        if not callers:
            return False
        async with self.redis.pipeline(transaction=False) as pipe:
            for pid in callers:
                pipe.hget(key(room, "p", pid), "conference_sid")
            found = await pipe.execute()
        return any(not sid or sid != r.conference_sid for sid in found)

    async def welcome_back(self, r: Room, pid: str, call_sid: str | None) -> None:
        """A caller who joined while Redis was away (degraded mode), now added to the room,
        gets what the normal way in gives: a web PIN and, in a ``stream`` room, the keypad
        stream (their degraded TwiML had none)."""
        await issue_pin(self.redis, r.id, pid)
        # They are in the conference, past any Gather: the stream's keys are theirs from
        # the start (without this mark they would be taken for the pre-join window's).
        await note_gather(self.redis, r.id, pid, "")
        if r.keypad_mode == "stream" and call_sid:
            outcome = await self.twilio.start_stream(
                call_sid, self.urls.media_stream(), name=KEYPAD_STREAM,
                params=keypad_stream_params(r.id, pid))
            if not outcome.ok:
                log.warning("room %s: no keypad stream for %s, who joined while Redis was "
                            "away: %s", r.id, pid, outcome.message)

    @_redis_guarded
    async def reconcile(self, room: str) -> ActionResult:
        """Bring the room's participants in line with Twilio's list (after Redis was away).

        Adds callers who joined while Redis could not record them (with a web PIN and, in
        a ``stream`` room, a keypad stream, as the normal way in gives) and refreshes mute
        and hold. A participant Twilio does not list is removed only when their call is over
        (callers in the pre-join window or a host prompt are not listed, yet still there):
        this also catches a hang-up during the pre-join window, which no callback reports.
        With no conference running, nobody is listed: only the finished calls go.
        """
        r = await get_room(self.redis, room)
        remote: list[RemoteParticipant] = []
        if r.conference_sid:
            outcome, remote = await self.twilio.list_participants(r.conference_sid)
            if not outcome.ok:
                return ActionResult(False, outcome.message)
        state = await self.queue.snapshot(room)
        added = 0
        for x in remote:
            if not x.label:
                continue
            if state.participant(x.label) is None:
                try:
                    await self.queue.join(room, role="host" if x.host else "participant",
                                          call_sid=x.call_sid, label=x.label, muted=x.muted,
                                          hold=x.hold, participant_id=x.label)
                except HandraiseError as exc:
                    log.info("room %s: could not re-add %s: %s", room, x.label, exc.message)
                    continue
                added += 1
                if not x.host:
                    await self.welcome_back(r, x.label, x.call_sid)
            else:
                await self.queue.update(room, x.label, muted=x.muted, hold=x.hold)
            if r.conference_sid:
                await set_conference(self.redis, room, x.label, r.conference_sid)
        listed = {x.label for x in remote}
        removed = 0
        host_gone = False
        for p in state.participants:
            if p.id in listed or not p.call_sid:
                continue
            if await self.twilio.call_status(p.call_sid) in CALL_OVER:
                # A host who was in the conference has the field (set to '' on stepping out);
                # one who hung up before ever joining has not, and ends nothing.
                joined = bool(await self.redis.hexists(key(room, "p", p.id), "conference_sid"))
                removed += await forget_participant(self.queue, room, p.id, reason="gone")
                host_gone = host_gone or (p.role == "host" and joined)
        log.info("room %s: reconciled with Twilio (%d added, %d removed)", room, added, removed)
        if host_gone and r.end_on_host_exit and r.conference_sid:
            # A star room's host who hung up in the key menu (outside the conference, so no
            # callback, and joined without endConferenceOnExit): the meeting ends as promised.
            ended = await self.end_conference(room)
            log.info("room %s: the host's call is over; %s", room, ended.message)
        return ActionResult(True, f"Reconciled with Twilio: {added} added, {removed} removed.")


RoomAction = Callable[[HostControls, str], Awaitable[ActionResult]]
ParticipantAction = Callable[[HostControls, str, str], Awaitable[ActionResult]]

#: The host's room-wide buttons by the name the dashboard and the API give them in URLs.
ROOM_ACTIONS: dict[str, RoomAction] = {
    "call-next": lambda h, r: h.call_on(r),
    "done": lambda h, r: h.done(r),
    "lower-all": lambda h, r: h.lower_all(r),
    "undo-lower-all": lambda h, r: h.undo_lower_all(r),
    "mute-all": lambda h, r: h.mute_all(r),
    "end": lambda h, r: h.end_conference(r),
}
#: The host's keypad commands (phone/keys.py names) -> the room action they run.
HOST_KEY_ACTIONS: dict[str, RoomAction] = {
    # Looked up at each press: whatever the dashboard's button does, the key does.
    "host_call_next": lambda h, r: ROOM_ACTIONS["call-next"](h, r),
    "host_done": lambda h, r: ROOM_ACTIONS["done"](h, r),
    "host_lower_all": lambda h, r: ROOM_ACTIONS["lower-all"](h, r),
    "host_mute_all": lambda h, r: ROOM_ACTIONS["mute-all"](h, r),
    "host_queue": lambda h, r: h.queue_report(r),
}


async def host_key(host: HostControls, room: str, pid: str, command: str) -> ActionResult:
    """A host's keypad command: the same action as the dashboard's button, and the host hears
    its sentence privately. A participant never runs one (checked here too, not only by
    their key table): they hear "That key is for the host." """
    action = HOST_KEY_ACTIONS.get(command)
    if action is None:
        return ActionResult(False, f"There is no host key command {command!r}.")
    try:
        caller = await host.queue.participant(room, pid)
    except HandraiseError as exc:
        return ActionResult(False, exc.message, pid)
    if caller.role != "host":
        log.warning("room %s: participant %s pressed the host's %s; refused", room, pid, command)
        await host.announce(room, pid, "host_only")
        return ActionResult(False, "That key is for the host.", pid)
    result = await action(host, room)
    log.info("room %s: host %s by keypad: %s", room, command, result.message)
    told = await host.tell(room, pid, result.message)
    if not told.ok:
        log.info("room %s: could not tell host %s privately: %s", room, pid, told.message)
    return result
#: The host's buttons for one participant (rename also takes the new name).
PARTICIPANT_ACTIONS: dict[str, ParticipantAction] = {
    "call-on": lambda h, r, p: h.call_on(r, p),
    "lower": lambda h, r, p: h.lower_hand(r, p),
    "mute": lambda h, r, p: h.mute(r, p),
    "unmute": lambda h, r, p: h.unmute(r, p),
    "prompt": lambda h, r, p: h.prompt(r, p),
    "remove": lambda h, r, p: h.remove(r, p),
}
