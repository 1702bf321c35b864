"""Voice webhooks and conference status callbacks (the ``voice`` blueprint).

Every route is signed by Twilio (:func:`twilio_signed`) and answers valid TwiML, always:
an internal error or a lost Redis puts (or keeps) the caller in the conference, muted,
with an apology, rather than answering 500 to Twilio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from quart import Blueprint, Quart, Response, current_app, request

from .. import floor
from ..app import services
from ..config import Settings
from ..errors import HandraiseError, NotFound
from ..events import LUA_EMIT, REDIS_ERRORS, encode_changes
from ..pins import issue_pin, pin_of
from ..queue import MAX_PARTICIPANTS, IsSpeaker, NoSpeaker, Queue, RoomFull, Source, mask_number
from ..rooms import (
    Role,
    Room,
    backfill_live_rooms,
    code_hash,
    get_room,
    get_rooms,
    live_rooms,
    lookup_code,
    new_id,
    sweep_live_rooms,
    update_room,
)
from ..store import Redis, eval_script, key
from . import twiml
from .control import (
    CALL_OVER,
    HOST_KEY_ACTIONS,
    INVITE_MARK,
    HostControls,
    TwilioControl,
    clear_conference,
    ended_key,
    forget_participant,
    key_options,
    note_key,
    prompting_key,
    remember_ended,
    set_conference,
)
from .keys import HOST_ONLY, room_commands, star_digits
from .security import twilio_signed
from .streams import note_gather, streams_to_resume

log = logging.getLogger(__name__)

bp = Blueprint("voice", __name__, url_prefix="/voice")

CODE_CACHE_TTL_S = 12 * 3600
#: How long shutdown waits for a reconciliation under way before cancelling it.
RECONCILE_STOP_S = 5.0
#: A caller who dialled in this recently is not given a new keypad stream: the one their
#: TwiML started may still be saying it is live.
RESUME_GRACE_S = 5.0
#: Per caller, at most one attempt to start a keypad stream again in this many seconds...
RESUME_RETRY_S = 60
#: ...or this many after one that worked (time for the new stream to say it is live; a
#: rolling restart that takes it down again must not wait a minute).
RESUME_SETTLE_S = 10
CALL_MAP_TTL_S = 12 * 3600
LEFT_FOR_GOOD = {"participant_hung_up", "conference_ended_via_api", "moderator_ended_conference",
                 "participant_add_failed"}

_NEWER = """
-- KEYS 1: seq hash ; ARGV 1: field, 2: sequence number. 1 if newer than the last applied.
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
if tonumber(ARGV[2]) <= cur then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], 86400)
return 1
"""

# The ordering check and the participant update in one step, so that two processes
# handling callbacks of one caller cannot interleave (a stale one would win otherwise).
_ORDERED_UPDATE = LUA_EMIT + """
-- KEYS 1 participants, 2 participant hash, 3 events, 4 seq hash
-- ARGV 1 maxlen, 2 room, 3 pid, 4 sequence number (-1: none), 5 encoded, 6 typed
-- Returns -1 stale or duplicate, -2 unknown participant, else the number of fields changed.
local seq = tonumber(ARGV[4])
if seq >= 0 then
  local cur = tonumber(redis.call('HGET', KEYS[4], ARGV[3]) or '-1')
  if seq <= cur then return -1 end
end
if redis.call('SISMEMBER', KEYS[1], ARGV[3]) == 0 then return -2 end
if seq >= 0 then
  redis.call('HSET', KEYS[4], ARGV[3], seq)
  redis.call('EXPIRE', KEYS[4], 86400)
end
local ev = {type='participant.updated', room=ARGV[2], participant=ARGV[3]}
local n = set_changed(KEYS[2], ARGV[5], ARGV[6], ev)
if n > 0 then emit(KEYS[3], ARGV[1], ev) end
return n
"""


@dataclass
class PhoneServices:
    """What the phone channel needs, created at start-up (``phone(app)``)."""

    settings: Settings
    queue: Queue
    twilio: TwilioControl
    urls: twiml.PhoneUrls
    host: HostControls
    # code hash -> (room, role, expiry): lets callers in while Redis is away (degraded mode).
    code_cache: dict[str, tuple[Room, Role, float]] = field(default_factory=dict)
    room_cache: dict[str, Room] = field(default_factory=dict)
    # Striped locks (bounded memory) serialise callbacks of one participant in this process.
    locks: list[asyncio.Lock] = field(default_factory=lambda: [asyncio.Lock() for _ in range(64)])
    # Rooms whose changes Redis missed: reconciled with Twilio once Redis answers again.
    dirty: set[str] = field(default_factory=set)
    # The periodic reconciliation (see reconcile_rooms), running while the app serves.
    reconciler: asyncio.Task[None] | None = None
    # The floor's sweep (invitations and speaking limits that are due, see sweep_floor).
    sweeper: asyncio.Task[None] | None = None
    # Set at shutdown. The reconciler stops on it rather than on cancel(): redis-py can
    # swallow a cancellation that lands inside a command, and the loop would run on.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def redis(self) -> Redis:
        return self.queue.redis

    def lock(self, name: str) -> asyncio.Lock:
        return self.locks[zlib.crc32(name.encode()) % len(self.locks)]

    def remember(self, code: str, room: Room, role: Role) -> None:
        now = time.monotonic()
        if len(self.code_cache) > 10_000:
            for stale in [k for k, (_, _, until) in self.code_cache.items() if until < now]:
                del self.code_cache[stale]
        self.code_cache[code_hash(code)] = (room, role, now + CODE_CACHE_TTL_S)
        self.room_cache[room.id] = room

    def cached(self, code: str) -> tuple[Room, Role] | None:
        hit = self.code_cache.get(code_hash(code))
        if hit is None or hit[2] < time.monotonic():
            return None
        return hit[0], hit[1]


def phone(app: Quart) -> PhoneServices:
    svc: PhoneServices | None = app.extensions.get("handraise_phone")
    if svc is None:
        raise RuntimeError("the phone channel is not started (is the app serving?)")
    return svc


def init_phone(app: Quart) -> None:
    """Register the voice blueprints and the phone services' start-up and shut-down."""
    from .media import bp as media_bp

    app.register_blueprint(bp)
    app.register_blueprint(media_bp)
    # twilio's HTTP client logs every request and its headers at INFO.
    for name in ("twilio.http_client", "twilio.async_http_client"):
        logging.getLogger(name).setLevel(logging.WARNING)

    @app.before_serving
    async def start_phone() -> None:
        core = services(app)
        settings = core.settings
        if not settings.public_url:
            log.warning("HANDRAISE_PUBLIC_URL is not set: Twilio webhooks will be refused")
        svc = app.extensions["handraise_phone"] = PhoneServices(
            settings=settings, queue=core.queue, twilio=core.twilio, urls=core.urls, host=core.host,
        )
        if core.twilio.configured:  # without Twilio there is nobody to ask
            from .media import media_hub

            svc.reconciler = asyncio.create_task(
                _reconcile_forever(svc, settings.reconcile_interval_s, media_hub(app).holder))
        svc.sweeper = asyncio.create_task(_sweep_forever(svc, settings.timer_interval_s))

    async def stop_phone() -> None:
        svc: PhoneServices | None = app.extensions.pop("handraise_phone", None)
        if svc is not None and svc.sweeper is not None:
            svc.stopping.set()
            try:
                await asyncio.wait_for(asyncio.shield(svc.sweeper), RECONCILE_STOP_S)
            except TimeoutError:
                svc.sweeper.cancel()
        if svc is not None and svc.reconciler is not None:
            svc.stopping.set()
            try:
                await asyncio.wait_for(asyncio.shield(svc.reconciler), RECONCILE_STOP_S)
            except TimeoutError:  # a reconciliation still talking to Twilio: cut it short
                log.info("stopping: the reconciliation under way was cut short after %.0f s",
                         RECONCILE_STOP_S)
                svc.reconciler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await svc.reconciler

    # First of the shut-down steps: a reconciliation under way uses Redis and the Twilio
    # session, which the core services' shut-down (registered before this) closes.
    app.after_serving_funcs.insert(0, stop_phone)


def host_controls(app: Quart) -> HostControls:
    """The host's buttons (also ``services(app).host``)."""
    return services(app).host


# --- helpers --------------------------------------------------------------------------------


def _xml(body: str) -> Response:
    return Response(body, content_type="text/xml")


def _svc() -> PhoneServices:
    return phone(current_app)


async def _form() -> dict[str, str]:
    if request.method == "GET":  # an operator may set the number's voice URL to GET
        return dict(request.args.items())
    return dict((await request.form).items())


def _arg(name: str) -> str:
    return request.args.get(name, "")


#: Room and participant ids as this app writes them into callback URLs and labels.
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _well_formed(*ids: str) -> bool:
    """True if every id could be one of ours (else it must reach neither Redis keys nor TwiML)."""
    return all(_ID.fullmatch(i) for i in ids)


async def _participant_id(svc: PhoneServices, room: str, call_sid: str) -> str:
    """One participant per call, even when Twilio retries the webhook."""
    pid = new_id("p")
    call_key = key(room, "call", call_sid or pid)
    if await svc.redis.set(call_key, pid, nx=True, ex=CALL_MAP_TTL_S):
        return pid
    existing = await svc.redis.get(call_key)
    return str(existing) if existing else pid


def _join_spec(svc: PhoneServices, room: Room, pid: str, *, role: Role, muted: bool) -> twiml.ConferenceJoin:
    host = role == "host"
    return twiml.ConferenceJoin(
        conference_name=room.conference_name,
        label=pid,
        status_callback=svc.urls.conference_events(room.id),
        wait_url=svc.urls.wait(),
        action_url=svc.urls.after_dial(room.id, pid),
        muted=muted,
        host=host,
        # In star rooms the host's * steps out too (their keys), which must not end the
        # meeting: the app ends it when the host's call is over (_host_left).
        end_on_exit=host and room.end_on_host_exit and room.keypad_mode != "star",
        hangup_on_star=room.keypad_mode == "star",
    )


def _degraded_join(svc: PhoneServices, room: Room, pid: str | None, role: Role) -> Response:
    """Redis is away: join anyway (a host unmuted, everyone else muted) and say why."""
    spec = _join_spec(svc, room, pid or new_id("p"), role=role, muted=role != "host")
    line = ("Hand raising is briefly unavailable, but you can join the meeting. "
            "The host can still unmute you.")
    return _xml(twiml.join_conference(spec, before=(line,)))


def _room_for_recovery(svc: PhoneServices, room_id: str) -> Room | None:
    return svc.room_cache.get(room_id)


async def _recover(svc: PhoneServices, room_id: str, pid: str, exc: BaseException) -> Response:
    """After a failure mid-flow: keep the caller in the conference, muted, with an apology."""
    if isinstance(exc, REDIS_ERRORS):
        svc.dirty.add(room_id)
        log.warning("room %s: redis unavailable during a call of %s: %r", room_id, pid, exc)
    elif isinstance(exc, HandraiseError):  # e.g. removed by the host while out of the conference
        log.info("room %s: %s: %s; back in muted", room_id, pid, exc.message)
    else:
        log.exception("room %s: webhook failed for %s", room_id, pid, exc_info=exc)
    room = _room_for_recovery(svc, room_id)
    if room is None and room_id:
        room = Room(id=room_id, name="", access_code="", status="open", keypad_mode="stream",
                    end_on_host_exit=True, raise_keys="*1", lower_keys="*2", created_at=0)
    if room is None:
        return _xml(twiml.apology())
    return _degraded_join(svc, room, pid or None, "participant")


def _guarded(handler: Callable[[PhoneServices, dict[str, str]], Awaitable[Response]]
             ) -> Callable[[], Awaitable[Response]]:
    """Run a mid-call handler; any failure becomes a muted re-join, never a 500."""

    async def run() -> Response:
        svc = _svc()
        form = await _form()
        if not _well_formed(_arg("room"), _arg("pid")):
            # Not a URL of ours, though signed: nothing to join them to. Say so and hang up.
            log.warning("%s: malformed room or participant id in the URL; the caller is told",
                        request.path)
            return _xml(twiml.apology())
        try:
            return await handler(svc, form)
        except RoomFull as exc:  # a caller the room forgot came back to a full room
            log.info("room %s: %s refused on return: the room is full", _arg("room"), _arg("pid"))
            return _xml(twiml.meeting_full(exc.cap))
        except Exception as exc:  # Twilio must always get TwiML
            return await _recover(svc, _arg("room"), _arg("pid"), exc)

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run


# --- entry: access code ---------------------------------------------------------------------


async def _lookup_code(svc: PhoneServices, code: str) -> tuple[Room, Role] | str | None:
    """(room, role), None for an unknown code, or ``"closed"``."""
    found = await lookup_code(svc.redis, code)
    if found is None:
        return None
    room, role = found
    if room.status != "open":
        return "closed"
    svc.remember(code.strip(), room, role)
    return room, role


@bp.route("/incoming", methods=["GET", "POST"])
@twilio_signed
async def post_incoming() -> Response:
    """The number's voice URL: greet, gather the meeting code, join host or participant."""
    svc = _svc()
    form = await _form()
    call_sid = form.get("CallSid", "")
    try:
        attempt = max(0, int(_arg("attempt") or 0))
    except ValueError:
        attempt = 0
    if "Digits" not in form:
        return _xml(twiml.ask_for_code(svc.urls.incoming(attempt=1), attempt=0))
    code = form.get("Digits", "")
    try:
        found = await _lookup_code(svc, code)
    except REDIS_ERRORS as exc:
        cached = svc.cached(code.strip())
        log.warning("call %s: redis unavailable at code entry (%r); cache %s", call_sid[-6:], exc,
                    "hit" if cached else "miss")
        if cached is None:
            return _xml(twiml.apology("Sorry, we cannot check meeting codes right now. "
                                      "Please call again in a few minutes. Goodbye."))
        room, role = cached
        svc.dirty.add(room.id)
        return _degraded_join(svc, room, None, role)
    except Exception:
        log.exception("call %s: code lookup failed", call_sid[-6:])
        return _xml(twiml.apology())
    if found == "closed":
        return _xml(twiml.room_closed())
    if found is None:
        log.info("call %s: wrong code (attempt %d)", call_sid[-6:], attempt)
        if attempt >= twiml.MAX_CODE_ATTEMPTS:
            return _xml(twiml.goodbye_after_failures())
        return _xml(twiml.ask_for_code(svc.urls.incoming(attempt=attempt + 1), attempt=attempt,
                                       wrong=True))
    assert not isinstance(found, str)
    room, role = found
    pid = ""
    try:
        pid = await _participant_id(svc, room.id, call_sid)
        await svc.queue.join(room.id, role=role, call_sid=call_sid or None, label=pid,
                             number=form.get("From") or None, muted=role != "host",
                             participant_id=pid, cap=MAX_PARTICIPANTS)
        log.info("room %s: %s %s joining from %s", room.id, role, pid, mask_number(form.get("From")))
        if role == "host":
            # Stream rooms fork the host's leg too: the host's keys (call next, mute all...).
            host_stream = svc.urls.media_stream() if room.keypad_mode == "stream" else None
            return _xml(twiml.join_conference(_join_spec(svc, room, pid, role="host", muted=False),
                                              before=("Welcome, host. Starting the meeting.",),
                                              stream_url=host_stream,
                                              stream_params=twiml.keypad_stream_params(room.id, pid)))
        await issue_pin(svc.redis, room.id, pid)
        stream = svc.urls.media_stream() if room.keypad_mode == "stream" else None
        return _xml(twiml.prejoin(svc.urls.prejoin(room.id, pid), raise_keys=room.raise_keys,
                                  stream_url=stream,
                                  stream_params=twiml.keypad_stream_params(room.id, pid)))
    except RoomFull as exc:
        # Twilio would refuse the Dial (16020) and the caller would hear an error instead.
        log.warning("room %s: %s %s refused: the room is full (%d)", room.id, role, pid, exc.cap)
        return _xml(twiml.meeting_full(exc.cap))
    except Exception as exc:  # Twilio must always get TwiML
        if isinstance(exc, REDIS_ERRORS):
            svc.dirty.add(room.id)
            log.warning("room %s: redis unavailable while joining a caller: %r", room.id, exc)
        else:
            log.exception("room %s: joining a caller failed", room.id)
        return _degraded_join(svc, room, pid or None, role)


# --- participant flow -----------------------------------------------------------------------


async def _ensure_in_room(svc: PhoneServices, room: Room, pid: str, form: dict[str, str]) -> bool:
    """Put back a caller the room forgot while they were outside the conference (it ended,
    or a reconciliation missed them), with the same id and a new PIN. True if re-added."""
    try:
        await svc.queue.participant(room.id, pid)
        return False
    except NotFound:
        pass
    await svc.queue.join(room.id, role="participant", call_sid=form.get("CallSid") or None,
                         label=pid, number=form.get("From") or None, muted=True,
                         participant_id=pid, cap=MAX_PARTICIPANTS)
    await issue_pin(svc.redis, room.id, pid)
    log.info("room %s: %s came back from outside the conference; re-added", room.id, pid)
    return True


async def _prejoin(svc: PhoneServices, form: dict[str, str]) -> Response:
    """End of the pre-join raise window: confirm the hand, read the PIN, join muted."""
    room_id, pid = _arg("room"), _arg("pid")
    room = await get_room(svc.redis, room_id)
    if room.status != "open":
        return _xml(twiml.room_closed())
    svc.room_cache[room.id] = room
    await _ensure_in_room(svc, room, pid, form)
    digits = form.get("Digits", "")
    await note_gather(svc.redis, room_id, pid, digits)  # the media stream heard these keys too
    hand_line = None
    if digits and digits == room.raise_keys:
        position, _ = await svc.queue.raise_hand(room_id, pid, source="prompt")
        hand_line = f"Your hand is raised. You are number {position} in line."
        log.info("room %s: %s raised a hand before joining (position %d)", room_id, pid, position)
    elif digits and digits == room.lower_keys:
        await svc.queue.lower_hand(room_id, pid, by="prompt")
        hand_line = "Your hand is down."
    elif digits and digits == room.reply_keys:
        hand_line = await _reply_line(svc, room_id, pid, "prompt")
    p = await svc.queue.participant(room_id, pid)
    pin = await pin_of(svc.redis, room_id, pid)
    spec = _join_spec(svc, room, pid, role=p.role, muted=p.muted)
    return _xml(twiml.participant_join(spec, hand_line=hand_line, pin=pin,
                                       companion_url=svc.urls.companion(),
                                       help_keys=room.help_keys))


async def _rejoin(svc: PhoneServices, form: dict[str, str]) -> Response:
    """Back into the same conference with the same label and mute state."""
    room_id, pid = _arg("room"), _arg("pid")
    room = await get_room(svc.redis, room_id)
    await svc.redis.delete(prompting_key(room_id, pid))
    if room.status != "open":
        return _xml(twiml.room_closed())
    if await _ensure_in_room(svc, room, pid, form):
        # Their old PIN went with them: read the new one.
        p = await svc.queue.participant(room_id, pid)
        spec = _join_spec(svc, room, pid, role=p.role, muted=p.muted)
        return _xml(twiml.participant_join(spec, hand_line=None,
                                           pin=await pin_of(svc.redis, room_id, pid),
                                           companion_url=svc.urls.companion(),
                                           help_keys=room.help_keys))
    p = await svc.queue.participant(room_id, pid)
    return _xml(twiml.join_conference(_join_spec(svc, room, pid, role=p.role, muted=p.muted)))


async def _after_dial(svc: PhoneServices, form: dict[str, str]) -> Response:
    """The caller left the conference: by * (star mode) to the key menu, else goodbye."""
    room_id, pid = _arg("room"), _arg("pid")
    if form.get("DialCallStatus") == "answered":
        room = await get_room(svc.redis, room_id)
        if room.keypad_mode == "star" and room.status == "open":
            host = await _is_host(svc, room_id, pid)
            options = [(digit, what) for seq, what in key_options(room, host=host)
                       for digit in star_digits({seq: what})]
            return _xml(twiml.star_menu(svc.urls.star_keys(room_id, pid), svc.urls.rejoin(room_id, pid),
                                        options))
    prompting = None
    with contextlib.suppress(*REDIS_ERRORS):
        prompting = await svc.redis.get(prompting_key(room_id, pid))
    if prompting == INVITE_MARK:
        return _xml(twiml.redirect(svc.urls.invite(room_id, pid)))
    if prompting:
        # Real Twilio may report the Dial a host prompt interrupted (DialCallStatus=completed,
        # TWILIO.md §2.4); should it run this answer, it must lead to the prompt, not a goodbye.
        return _xml(twiml.redirect(svc.urls.prompt(room_id, pid)))
    return _xml(twiml.meeting_over())


async def _hand_keys(svc: PhoneServices, form: dict[str, str], *, raise_digits: set[str],
                     lower_digits: set[str], source: Source) -> Response:
    room_id, pid = _arg("room"), _arg("pid")
    digits = form.get("Digits", "")
    line = "Returning you to the meeting."
    if digits in raise_digits:
        position, _ = await svc.queue.raise_hand(room_id, pid, source=source)
        line = f"Your hand is raised. You are number {position} in line."
    elif digits in lower_digits:
        await svc.queue.lower_hand(room_id, pid, by=source)
        line = "Your hand is down."
    return _xml(twiml.say_then_redirect(line, svc.urls.rejoin(room_id, pid)))


async def _reply_line(svc: PhoneServices, room_id: str, pid: str, source: Source) -> str:
    """Raise a reply to the speaker; what the caller hears about it."""
    try:
        position, _ = await svc.queue.reply(room_id, pid, source=source)
    except (NoSpeaker, IsSpeaker) as exc:
        return twiml.ANNOUNCEMENTS["no_speaker" if isinstance(exc, NoSpeaker) else "is_speaker"]
    log.info("room %s: %s raised a reply (%s, position %d)", room_id, pid, source, position)
    return f"Your reply is raised. You are number {position} in line."


async def _is_host(svc: PhoneServices, room_id: str, pid: str) -> bool:
    try:
        return (await svc.queue.participant(room_id, pid)).role == "host"
    except NotFound:
        return False


async def _star_keys(svc: PhoneServices, form: dict[str, str]) -> Response:
    """Star mode: the key read after * picks a command of the room's keys (*1 raise, *3
    where am I, *0 help; the host's *5 call next ...), answered before going back in."""
    room_id, pid = _arg("room"), _arg("pid")
    room = await get_room(svc.redis, room_id)
    host = await _is_host(svc, room_id, pid)
    digits = star_digits(room_commands(room.keys(), host=host))
    if not host:  # 1 and 2 raise and lower as the menu always said, unless taken
        digits = {"1": "raise", "2": "lower", **digits}
    command = digits.get(form.get("Digits", ""))
    back = svc.urls.rejoin(room_id, pid)
    if command == "raise":
        return await _hand_keys(svc, form, raise_digits={form["Digits"]}, lower_digits=set(),
                                source="keypad")
    if command == "lower":
        return await _hand_keys(svc, form, raise_digits=set(), lower_digits={form["Digits"]},
                                source="keypad")
    if command == "reply":
        return _xml(twiml.say_then_redirect(await _reply_line(svc, room_id, pid, "keypad"), back))
    if command == "help":
        return _xml(twiml.say_then_redirect(await _help_text(svc, room, pid, host=host), back))
    if command == "where":
        state = await svc.queue.snapshot(room_id)
        position = next((h.position for h in state.queue if h.participant == pid), None)
        return _xml(twiml.say_then_redirect(
            twiml.where_line(position, speaking=state.speaker == pid), back))
    if command == HOST_ONLY:
        log.info("room %s: %s pressed the host's *%s; nothing done", room_id, pid, form["Digits"])
        return _xml(twiml.say_then_redirect(twiml.ANNOUNCEMENTS[HOST_ONLY], back))
    if command is not None and command.startswith("host_"):
        # The same action as the dashboard's button; its sentence is said before going back.
        # The host is outside the conference now, so it is said here, not announced.
        action = HOST_KEY_ACTIONS.get(command)
        if action is not None:
            result = await action(svc.host, room_id)
            log.info("room %s: host %s by keypad (star): %s", room_id, command, result.message)
            return _xml(twiml.say_then_redirect(result.message, back))
    return _xml(twiml.say_then_redirect("Returning you to the meeting.", back))


async def _help_text(svc: PhoneServices, room: Room, pid: str, *, host: bool) -> str:
    """The answer to star 0: the caller's keys, then (participants) the page and their PIN."""
    line = twiml.keys_line(key_options(room, host=host))
    if host:
        return line
    pin = await pin_of(svc.redis, room.id, pid)
    tail = (twiml.pin_line(pin, svc.urls.companion()) if pin
            else "Your web PIN is not available right now.")
    return f"{line} {tail}"


async def _prompt(svc: PhoneServices, form: dict[str, str]) -> Response:
    """The host's prompt (REST redirect target): a short Gather, then back in."""
    room_id, pid = _arg("room"), _arg("pid")
    room = await get_room(svc.redis, room_id)
    return _xml(twiml.host_prompt(svc.urls.prompt_keys(room_id, pid), svc.urls.rejoin(room_id, pid),
                                  raise_keys=room.raise_keys, lower_keys=room.lower_keys))


async def _prompt_keys(svc: PhoneServices, form: dict[str, str]) -> Response:
    """Keys answered to the host's prompt."""
    room = await get_room(svc.redis, _arg("room"))
    await note_gather(svc.redis, room.id, _arg("pid"), form.get("Digits", ""))
    await svc.redis.delete(prompting_key(room.id, _arg("pid")))
    return await _hand_keys(svc, form, raise_digits={room.raise_keys},
                            lower_digits={room.lower_keys}, source="prompt")


async def _invite(svc: PhoneServices, form: dict[str, str]) -> Response:
    """Star mode, consent rooms: the invitation to speak (REST redirect target), then back in."""
    room_id, pid = _arg("room"), _arg("pid")
    room = await get_room(svc.redis, room_id)
    timeout = max(1, round(svc.host.timing.invite_timeout_s) - 5)  # the prompt takes ~5 s
    return _xml(twiml.invite_prompt(svc.urls.invite_keys(room_id, pid), timeout,
                                    accept_keys=room.accept_keys, decline_keys=room.decline_keys))


async def _invite_keys(svc: PhoneServices, form: dict[str, str]) -> Response:
    """The key answered to the invitation (1 go live, 2 stay muted; none: no answer)."""
    room_id, pid = _arg("room"), _arg("pid")
    room = await get_room(svc.redis, room_id)
    digits = form.get("Digits", "")
    rejoin = svc.urls.rejoin(room_id, pid)
    if digits not in (room.accept_keys, room.decline_keys):
        # No answer: it stands until its deadline, which declines it. Another key: declined.
        line = "No answer, so you stay muted." if not digits else \
            "That was not a yes, so you stay muted."
        if digits:
            await svc.host.answer(room_id, pid, accept=False, source="keypad", in_gather=True)
        return _xml(twiml.say_then_redirect(line, rejoin))
    accept = digits == room.accept_keys
    result = await svc.host.answer(room_id, pid, accept=accept, source="keypad", in_gather=True)
    if accept and result.ok:
        line = twiml.ANNOUNCEMENTS["live"]
    elif result.ok:
        line = "You stay muted."
    else:
        line = f"{result.message.rstrip('.')}. Returning you to the meeting."
    return _xml(twiml.say_then_redirect(line, rejoin))


for _path, _handler in (
    ("/invite", _invite),
    ("/invite-keys", _invite_keys),
    ("/prejoin", _prejoin),
    ("/rejoin", _rejoin),
    ("/after-dial", _after_dial),
    ("/star-keys", _star_keys),
    ("/prompt", _prompt),
    ("/prompt-keys", _prompt_keys),
):
    _view = twilio_signed(_guarded(_handler))
    bp.add_url_rule(_path, "post" + _path.replace("/", "_").replace("-", "_"), _view,
                    methods=["POST"])


@bp.post("/wait")
@twilio_signed
async def post_wait() -> Response:
    """Our waitUrl: a spoken line and a pause, no outside audio."""
    return _xml(twiml.wait_music())


@bp.post("/announce")
@twilio_signed
async def post_announce() -> Response:
    """A private announcement (participant AnnounceUrl), Say only."""
    if _arg("msg") == "pin":
        svc = _svc()
        pin = None
        with contextlib.suppress(*REDIS_ERRORS):
            if _well_formed(_arg("room"), _arg("pid")):
                pin = await pin_of(svc.redis, _arg("room"), _arg("pid"))
        return _xml(twiml.pin_reminder(pin, svc.urls.companion()))
    if _arg("msg") == "invited":
        keys = [k if re.fullmatch(r"[*#]?[0-9A-D]", k) else d
                for k, d in ((_arg("accept"), "1"), (_arg("decline"), "2"))]
        return _xml(twiml.say(twiml.invite_line(*keys)))
    if _arg("msg") == "help":
        svc = _svc()
        try:
            room = await get_room(svc.redis, _arg("room"))
            text = await _help_text(svc, room, _arg("pid"),
                                    host=await _is_host(svc, room.id, _arg("pid")))
        except NotFound:
            text = "This meeting's keys are not available."
        except REDIS_ERRORS as exc:
            log.info("room %s: help for %s not available: %r", _arg("room"), _arg("pid"), exc)
            text = "The keys are not available right now. Please try again in a moment."
        return _xml(twiml.say(text))
    if _arg("msg") == "note":
        svc = _svc()
        note: str | None = None
        with contextlib.suppress(*REDIS_ERRORS):
            note = await svc.redis.get(note_key(_arg("room"), _arg("note")))
        if not note:
            log.info("room %s: private note for %s expired or unknown", _arg("room"), _arg("pid"))
        return _xml(twiml.say(str(note or "")))
    n_raw = _arg("n")
    # ASCII digits only, and few: "²".isdigit() is true and int() refuses it; so it does
    # 5000 digits. A place in line is a small number.
    n = int(n_raw) if n_raw.isascii() and n_raw.isdigit() and len(n_raw) <= 6 else None
    return _xml(twiml.announcement(_arg("msg"), n))


# --- conference status callbacks ------------------------------------------------------------


def _flag(form: dict[str, str], name: str) -> bool | None:
    value = form.get(name)
    return None if value is None else value.strip().lower() == "true"


def _seq_key(room: str, conference_sid: str) -> str:
    return key(room, "seq", conference_sid or "none")


async def _newer(svc: PhoneServices, room: str, conference_sid: str, who: str, seq: int) -> bool:
    return bool(await eval_script(svc.redis, _NEWER, 1, _seq_key(room, conference_sid), who, seq))


async def _has_ended(svc: PhoneServices, room: str, conference_sid: str) -> bool:
    return bool(conference_sid) and bool(await svc.redis.sismember(ended_key(room), conference_sid))


async def _ordered_update(svc: PhoneServices, room: str, conference_sid: str, pid: str,
                          seq: int | None, changes: dict[str, Any]) -> int:
    """Apply ``changes`` unless a newer callback was applied: -1 stale, -2 unknown, else count."""
    encoded, typed = encode_changes(changes)
    keys = [key(room, "participants"), key(room, "p", pid), key(room, "events"),
            _seq_key(room, conference_sid)]
    args = [svc.queue.maxlen, room, pid, -1 if seq is None else seq, encoded, typed]
    return int(await eval_script(svc.redis, _ORDERED_UPDATE, len(keys), *keys, *args))


async def _ensure_participant(svc: PhoneServices, room: str, pid: str, form: dict[str, str]) -> bool:
    """True if ``pid`` is known; recreates one that joined while Redis was away."""
    try:
        await svc.queue.participant(room, pid)
        return True
    except NotFound:
        pass
    if form.get("StatusCallbackEvent") == "participant-leave":
        return False
    role: Role = "host" if _flag(form, "StartConferenceOnEnter") else "participant"
    try:
        await svc.queue.join(room, role=role, call_sid=form.get("CallSid") or None, label=pid,
                             muted=bool(_flag(form, "Muted")), hold=bool(_flag(form, "Hold")),
                             participant_id=pid)
    except HandraiseError as exc:
        log.info("room %s: not recovering %s: %s", room, pid, exc.message)
        return False
    log.info("room %s: recovered participant %s from a conference callback", room, pid)
    if role == "participant":
        await svc.host.welcome_back(await get_room(svc.redis, room), pid, form.get("CallSid"))
    return True


async def _apply_callback(svc: PhoneServices, room_id: str, form: dict[str, str]) -> None:
    event = form.get("StatusCallbackEvent", "")
    conference_sid = form.get("ConferenceSid", "")
    try:
        seq: int | None = int(form["SequenceNumber"])
    except (KeyError, ValueError):
        seq = None  # no order to keep: apply it
    if (event not in ("conference-end", "participant-leave")
            and await _has_ended(svc, room_id, conference_sid)):
        # Callbacks are separate requests and may trail the end: a late join or mute must
        # not bring back the dead conference's sid or a participant who has gone (a late
        # leave can only remove, so it still counts).
        log.info("room %s: %s of ended conference %s ignored", room_id, event, conference_sid[-6:])
        return
    room_sid: str | None = None
    if event in ("conference-end", "conference-start", "participant-join"):
        room_sid = (await get_room(svc.redis, room_id)).conference_sid
    if event == "conference-end":
        if conference_sid:
            await remember_ended(svc.redis, room_id, conference_sid)
        if room_sid in (None, conference_sid):
            n = await clear_conference(svc.queue, room_id, conference_sid)
            log.info("room %s: conference %s ended (%s), %d cleared", room_id, conference_sid[-6:],
                     form.get("ReasonConferenceEnded", ""), n)
        return
    if event == "conference-start":
        if room_sid != conference_sid:
            await update_room(svc.redis, room_id, conference_sid=conference_sid, maxlen=svc.queue.maxlen)
        return
    pid = form.get("ParticipantLabel", "")
    if not _well_formed(pid) or not event.startswith("participant-"):
        return  # no label of ours (a label Twilio made up, or none): not our participant
    async with svc.lock(f"{room_id}:{pid}"):
        if event == "participant-leave":
            if seq is not None and not await _newer(svc, room_id, conference_sid, pid, seq):
                log.debug("room %s: stale or duplicate leave #%d for %s", room_id, seq, pid)
                return
            reason = form.get("ReasonParticipantLeft", "")
            still_on_call = form.get("ParticipantCallStatus") == "in-progress"
            # A redirect (host prompt) or a * step-out: the caller comes back, keep them,
            # as outside any conference until they rejoin (its end must not take them).
            if reason == "participant_updated_via_api" or (
                    still_on_call and reason not in ("conference_ended_via_api",
                                                     "moderator_ended_conference")):
                await set_conference(svc.redis, room_id, pid, "")
                return
            ends = await _host_exit_ends_meeting(svc, room_id, pid, form)
            if await forget_participant(svc.queue, room_id, pid, reason=reason or "left"):
                log.info("room %s: %s left (%s)", room_id, pid, reason)
            if ends:
                # Outside the lock: ending makes everyone else leave, with callbacks of its own.
                task = asyncio.ensure_future(_end_after_host(svc, room_id, pid))
                _host_ends.add(task)
                task.add_done_callback(_host_ends.discard)
            return
        if event == "participant-join" and room_sid != conference_sid:
            await update_room(svc.redis, room_id, conference_sid=conference_sid, maxlen=svc.queue.maxlen)
        changes: dict[str, Any] = {}
        muted, hold = _flag(form, "Muted"), _flag(form, "Hold")
        # Trust the Muted/Hold fields on every participant event, whatever its name.
        if muted is not None:
            changes["muted"] = muted
        if hold is not None:
            changes["hold"] = hold
        if event == "participant-join" and form.get("CallSid"):
            changes["call_sid"] = form["CallSid"]
        applied = await _ordered_update(svc, room_id, conference_sid, pid, seq, changes)
        if applied == -1:
            log.debug("room %s: stale or duplicate %s #%s for %s", room_id, event, seq, pid)
        elif applied == -2:
            # Unknown (joined while Redis was away): recreated from this callback's fields.
            if await _ensure_participant(svc, room_id, pid, form):
                await set_conference(svc.redis, room_id, pid, conference_sid)
        elif event == "participant-join":
            # Which conference they are in: its end clears them, and only them.
            await set_conference(svc.redis, room_id, pid, conference_sid)


async def _host_exit_ends_meeting(svc: PhoneServices, room_id: str, pid: str,
                                  form: dict[str, str]) -> bool:
    """A host's call ended, and Twilio did not end the meeting (star rooms join the host
    without endConferenceOnExit, so that * can step out): the app must, if the room says so."""
    if _flag(form, "EndConferenceOnExit") is not False or form.get("ReasonParticipantLeft") in (
            "conference_ended_via_api", "moderator_ended_conference"):
        return False  # Twilio ends it, or it has ended
    try:
        p = await svc.queue.participant(room_id, pid)
        room = await get_room(svc.redis, room_id)
    except NotFound:
        return False
    return p.role == "host" and room.end_on_host_exit


#: Meeting ends under way after a host hung up (referenced until done).
_host_ends: set[asyncio.Task[None]] = set()


async def _end_after_host(svc: PhoneServices, room_id: str, pid: str) -> None:
    result = await svc.host.end_conference(room_id)
    log.info("room %s: host %s hung up; ending the meeting: %s", room_id, pid, result.message)


@bp.post("/conference-events")
@twilio_signed
async def post_conference_events() -> Response:
    """Conference status callback: keep participants true (idempotent, ordered)."""
    svc = _svc()
    form = await _form()
    room_id = _arg("room")
    if not _well_formed(room_id):
        log.info("conference callback for a malformed room id ignored")
        return _xml(twiml.empty())
    try:
        await _apply_callback(svc, room_id, form)
        if room_id in svc.dirty and form.get("StatusCallbackEvent") != "conference-end":
            svc.dirty.discard(room_id)
            result = await svc.host.reconcile(room_id)
            if not result.ok:
                svc.dirty.add(room_id)
    except NotFound:
        log.info("room %s: callback for an unknown room or participant ignored", room_id)
    except Exception as exc:  # answer 200 anyway; Twilio does not retry these
        if isinstance(exc, REDIS_ERRORS):
            svc.dirty.add(room_id)
            log.warning("room %s: redis unavailable for %s: %r", room_id,
                        form.get("StatusCallbackEvent"), exc)
        else:
            log.exception("room %s: conference callback failed", room_id)
    return _xml(twiml.empty())


# --- periodic reconciliation ------------------------------------------------------------------


async def periodic_rooms(svc: PhoneServices) -> list[Room]:
    """The rooms periodic work visits: those of the live index (rooms with participants),
    and those Redis missed changes of here (a caller who joined while it was away is in
    none of its sets yet)."""
    rooms = await live_rooms(svc.redis)
    known = {r.id for r in rooms}
    missed = sorted(svc.dirty - known)
    return rooms + await get_rooms(svc.redis, missed) if missed else rooms


async def reconcile_rooms(svc: PhoneServices, *, claim_s: float = 0.0,
                          rooms: list[Room] | None = None) -> int:
    """Reconcile with Twilio each open room that has callers outside its conference, or that
    Redis missed changes of; returns how many rooms were reconciled.

    A caller who hangs up in the pre-join window, the star menu or a host prompt gets no
    callback; this is what removes their hand and PIN. With ``claim_s``, one process per
    room and period does the work (a short Redis claim), not every process.
    """
    done = 0
    for room in await periodic_rooms(svc) if rooms is None else rooms:
        try:
            if room.id not in svc.dirty and not await svc.host.has_outsiders(room.id):
                continue
            if claim_s > 0 and not await svc.redis.set(key(room.id, "reconciling"), "1", nx=True,
                                                       px=max(1, int(claim_s * 1000))):
                continue
            result = await svc.host.reconcile(room.id)
        except REDIS_ERRORS:
            raise
        except Exception:  # one room's trouble must not stop the others
            log.exception("room %s: periodic reconciliation failed", room.id)
            continue
        if result.ok:
            svc.dirty.discard(room.id)
            done += 1
        else:
            log.warning("room %s: periodic reconciliation: %s", room.id, result.message)
    return done


async def resume_streams(svc: PhoneServices, *, me: str, rooms: list[Room] | None = None,
                         grace_s: float = RESUME_GRACE_S) -> int:
    """Start a new keypad stream (Twilio REST) for each in-conference caller of a ``stream``
    room whose stream is live in no process; returns how many were started.

    Twilio does not reconnect a media stream: after a restart (a deploy, a crash) this is
    what brings back in-call keypad detection for callers already in the conference. A
    short claim per caller keeps two processes from starting one caller's stream twice,
    and a failing start from being retried more than once per :data:`RESUME_RETRY_S`.
    ``me`` is this process's holder name (:func:`.streams.process_holder`).
    """
    started = 0
    for room in await periodic_rooms(svc) if rooms is None else rooms:
        if svc.stopping.is_set():
            break
        try:
            callers = await streams_to_resume(svc.redis, room, me=me, grace_s=grace_s)
            for p in callers:
                assert p.call_sid is not None
                claim = key(room.id, "resuming", p.id)
                if svc.stopping.is_set() or not await svc.redis.set(claim, me, nx=True,
                                                                    ex=RESUME_RETRY_S):
                    continue
                outcome = await svc.twilio.start_stream(
                    p.call_sid, svc.urls.media_stream(), name=twiml.KEYPAD_STREAM,
                    params=twiml.keypad_stream_params(room.id, p.id))
                if outcome.ok:
                    await svc.redis.expire(claim, RESUME_SETTLE_S)
                    started += 1
                    log.info("room %s: %s had no live keypad stream (call %s); started a new one",
                             room.id, p.id, p.call_sid[-6:])
                elif (outcome.kind == "gone"
                      or await svc.twilio.call_status(p.call_sid) in CALL_OVER):
                    # Hung up while no process listened (after a crash, its callback was
                    # lost): the room lets them go, as the reconciliation would.
                    await forget_participant(svc.queue, room.id, p.id, reason="gone")
                    log.info("room %s: %s's call %s is over; removed, no keypad stream to "
                             "resume", room.id, p.id, p.call_sid[-6:])
                else:
                    log.warning("room %s: could not resume the keypad stream of %s: %s",
                                room.id, p.id, outcome.message)
        except REDIS_ERRORS:
            raise
        except Exception:  # one room's trouble must not stop the others
            log.exception("room %s: resuming keypad streams failed", room.id)
    return started


async def _reconcile_forever(svc: PhoneServices, interval_s: float, me: str) -> None:
    first = True
    while not svc.stopping.is_set():
        if not first:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(svc.stopping.wait(), interval_s)  # the timer shutdown ends
                return
        try:
            if first:
                await backfill_live_rooms(svc.redis)
            else:
                await sweep_live_rooms(svc.redis)
            rooms = await periodic_rooms(svc)
            if not first:
                await reconcile_rooms(svc, claim_s=interval_s * 0.8, rooms=rooms)
            # At start-up too: streams that died with the previous process come back now.
            await resume_streams(svc, me=me, rooms=rooms)
        except REDIS_ERRORS as exc:
            log.warning("periodic reconciliation: redis unavailable: %r", exc)
        except Exception:
            log.exception("periodic reconciliation failed")
        first = False


# --- the floor's sweep ---------------------------------------------------------------------------


async def sweep_floor(svc: PhoneServices) -> int:
    """Claim and carry out the invitations and speaking limits that are due (every process
    runs this; each action is claimed by one). Returns how many actions this one ran."""
    timing = svc.host.timing
    actions = await floor.sweep(svc.redis, warn_s=timing.speak_warn_s, grace_s=timing.speak_grace_s,
                                maxlen=svc.queue.maxlen)
    for action in actions:
        try:
            await svc.host.on_timer(action)
        except REDIS_ERRORS:
            raise
        except Exception:  # one room's trouble must not stop the others
            log.exception("room %s: floor timer %s failed", action.room, action.kind)
    return len(actions)


async def _sweep_forever(svc: PhoneServices, interval_s: float) -> None:
    while not svc.stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(svc.stopping.wait(), interval_s)
            return
        try:
            await sweep_floor(svc)
        except REDIS_ERRORS as exc:
            log.warning("floor sweep: redis unavailable: %r", exc)
        except Exception:
            log.exception("floor sweep failed")
