"""The companion page (the ``participant`` blueprint): a caller links this browser to their
phone call with the PIN they heard, then raises, lowers and follows their own hand.

* ``/join``: the PIN form. A live PIN links the browser (a signed cookie naming room and
  participant, nothing else, separate from the host's). Wrong PINs are limited per client
  and across all clients (:data:`GLOBAL_WRONG_PER_MINUTE` says why that number).
* ``/me``: the linked page, live over SSE (``/me/events``), showing only this caller's
  own state and place in line; its forms act on this caller only (the session names them;
  a form naming anyone else is refused with 403).

The hand is the same hand as the keypad's: both call :class:`~handraise.queue.Queue`.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from quart import (
    Blueprint,
    Response,
    current_app,
    redirect,
    render_template,
    request,
    url_for,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..app import Services, services
from ..errors import HandraiseError, NotFound
from ..pins import lookup_pin
from ..queue import Participant
from ..rooms import get_room
from .live import FragmentCache, Fragments, Live, fragment_cache, live_response
from .security import (
    client_id,
    count_failure,
    current_csrf_token,
    current_link,
    link_session,
    minutes,
    participant_required,
    retry_after,
    unlink_session,
)

log = logging.getLogger(__name__)

bp = Blueprint("participant", __name__)

#: Wrong PINs allowed per client in :data:`CLIENT_WINDOW_S` before 429.
CLIENT_WRONG_LIMIT = 5
CLIENT_WINDOW_S = 600
#: Wrong PINs allowed per minute across all clients, whoever sends them.
#:
#: A PIN is 6 random digits, so one guess finds a given live PIN with probability 1 in
#: 10^6. The per-client limit stops one device; a botnet has many addresses, so this
#: ceiling bounds everyone together: at most 20 × 60 = 1,200 wrong guesses an hour. A
#: meeting of 3 hours then allows at most 3,600 guesses: each live PIN is found with
#: probability ≤ 0.36 % (and a PIN dies with its call). What a found PIN gives is small
#: too: that caller's own hand, name and topic, never the host's controls. While the
#: ceiling is reached, every client is asked to wait for the rest of the minute — a
#: nuisance for honest callers only during an attack, and their phone keypad still works.
GLOBAL_WRONG_PER_MINUTE = 20
NAME_MAX = 40

WRONG_PIN = "That PIN is not valid. Check the six digits you heard on the call."


def _svc() -> Services:
    return services(current_app)


def _htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def _cache(svc: Services) -> FragmentCache:
    return fragment_cache(current_app, svc.queue)


async def _own(svc: Services, room: str, pid: str) -> Live:
    """This caller's part of the room, read now: their page shows nobody else's state.
    (Their live stream shares the room's snapshots with every other page instead.)"""
    return Live(await svc.queue.view(room, pid), await get_room(svc.redis, room))


@bp.errorhandler(RedisConnectionError)
@bp.errorhandler(RedisTimeoutError)
@bp.errorhandler(OSError)
async def _unavailable(exc: BaseException | None = None) -> Response:
    """Redis is away: say so, and that the phone keypad keeps working."""
    log.warning("companion page %s: redis unavailable: %r", request.path, exc)
    body = await render_template("participant/message.html", title="Briefly unavailable",
                                 message="The hand queue cannot be reached right now. Your call is "
                                         "not affected. Try again in a moment, or use the keypad.")
    return Response(body, status=503, headers={"Retry-After": "5"})


# --- linking ---------------------------------------------------------------------------------


async def _join_page(error: str | None = None, status: int = 200, **headers: str) -> Response:
    body = await render_template("participant/join.html", error=error)
    return Response(body, status=status, headers=headers)


@bp.get("/join")
async def get_join() -> Response:
    """The PIN form."""
    return await _join_page()


@bp.post("/join")
async def post_join() -> Any:
    """Link this browser to the call whose PIN was typed; limited per client and overall."""
    redis = _svc().redis
    who = client_id()
    wait = await retry_after(redis, "pin", who, limit=CLIENT_WRONG_LIMIT)
    if wait:
        return await _join_page(f"Too many tries. Try again in {minutes(wait)}.", 429,
                                **{"Retry-After": str(wait)})
    busy = await retry_after(redis, "pin", "everyone", limit=GLOBAL_WRONG_PER_MINUTE)
    if busy:
        log.warning("companion page: the global ceiling of wrong PINs is reached")
        return await _join_page(f"Too many people are trying PINs right now. Try again in {busy} "
                                "seconds; your phone keypad still works meanwhile.", 429,
                                **{"Retry-After": str(busy)})
    pin = re.sub(r"[\s\-.]", "", (await request.form).get("pin", ""))
    found = await lookup_pin(redis, pin)
    if found is None:
        count = await count_failure(redis, "pin", who, window_s=CLIENT_WINDOW_S)
        await count_failure(redis, "pin", "everyone", window_s=60)
        log.info("companion page: a wrong PIN (%d from this client in the window)", count)
        if count >= CLIENT_WRONG_LIMIT:
            wait = await retry_after(redis, "pin", who, limit=CLIENT_WRONG_LIMIT)
            return await _join_page(f"Too many tries. Try again in {minutes(wait)}.", 429,
                                    **{"Retry-After": str(wait)})
        return await _join_page(WRONG_PIN, 400)
    room, pid = found
    svc = _svc()
    participant = await svc.queue.participant(room, pid)
    if "web" not in participant.channels:
        await svc.queue.update(room, pid, channels=(*participant.channels, "web"))
    link_session(room, pid)
    log.info("room %s: %s linked a web page", room, pid)
    return redirect(url_for("participant.get_me"), 303)


# --- the linked page -------------------------------------------------------------------------


def hand_sentence(live: Live, p: Participant | None) -> str:
    """The status line: what this caller's hand (and turn) is now."""
    state, room = live.state, live.room
    if p is None:
        return "Your call has ended."
    if invited(live, p.id):
        return "The host invites you to speak: go live, or stay muted?"
    if state.speaker == p.id:
        return "You are live — the host called on you."
    hand = state.hand(p.id)
    position = hand.position if hand is not None else None
    if hand is not None and hand.kind == "reply":
        return "Your reply is raised. " + (
            "You're next." if position == 1 else f"You are number {position} in line.")
    if position == 1:
        return "Your hand is raised. You're next."
    if position is not None:
        return f"Your hand is raised. You are number {position} in line."
    if p.hold:
        return "On hold."
    if not p.conference_sid or p.conference_sid != room.conference_sid:
        return f"Still joining: press {spoken(room.raise_keys)} on the keypad or wait."
    return "Your hand is down."


def invited(live: Live, pid: str) -> bool:
    """An invitation to speak waits for this caller's answer (consent rooms)."""
    inv = live.room.invitation
    return inv is not None and inv.pending and inv.participant == pid and live.state.now < inv.deadline


def over_time(live: Live, pid: str) -> bool:
    """This caller speaks past the room's speaking limit."""
    state, limit = live.state, live.room.speak_limit_s
    return bool(limit) and state.speaker == pid and state.speaker_since is not None \
        and state.now >= state.speaker_since + limit * 1000


def spoken(keys: str) -> str:
    return " ".join({"*": "star", "#": "pound"}.get(k, k) for k in keys)


async def render_me(live: Live, pid: str, *, csrf: str = "", error: str | None = None) -> Fragments:
    """This caller's own partials: the status line and the controls (nobody else's data)."""
    p = live.state.participant(pid)
    hand = live.state.hand(pid)
    raised = hand is not None
    speaker = live.state.speaker
    # Reply: while someone else speaks, unless this hand already is a reply.
    can_reply = p is not None and speaker is not None and speaker != pid and (
        hand is None or hand.kind != "reply")
    context = {"live": live, "p": p, "raised": raised, "room": live.room, "error": error,
               "can_reply": can_reply,
               "speaking": live.state.speaker == pid, "csrf_token": csrf,
               "sentence": hand_sentence(live, p), "invited": invited(live, pid),
               "over_time": over_time(live, pid)}
    return [(name, await render_template(f"participant/_{name}.html", **context))
            for name in ("hand", "controls")]


def _link() -> tuple[str, str]:
    link = current_link()
    assert link is not None  # participant_required saw to it
    return link


async def _forged(pid: str) -> Response | None:
    """A form naming another participant than the session's: refuse and log it."""
    named = (await request.form).get("participant")
    if named is not None and named != pid:
        log.warning("companion page: a session of %s sent a form for %s; refused", pid, named)
        return Response("Refused: this page can act only on your own call.\n", status=403,
                        content_type="text/plain; charset=utf-8")
    return None


@bp.get("/me")
@participant_required("page")
async def get_me() -> Any:
    """The linked page."""
    room, pid = _link()
    svc = _svc()
    live = await _own(svc, room, pid)
    if live.state.participant(pid) is None:
        unlink_session()  # the call is over: so is the link
    parts = dict(await render_me(live, pid, csrf=await current_csrf_token()))
    p = live.state.participant(pid)
    return await render_template("participant/me.html", live=live, room=live.room, p=p,
                                 hand=parts["hand"], controls=parts["controls"])


@bp.get("/me/events")
@participant_required("stream")
async def get_me_events() -> Any:
    """This caller's partials as server-sent events (``Last-Event-ID`` resumes)."""
    room, pid = _link()
    svc = _svc()
    cache = _cache(svc)
    if (await _own(svc, room, pid)).state.participant(pid) is None:
        unlink_session()
        return Response(status=204)  # the call has ended: EventSource stops reconnecting

    async def render(live: Live) -> Fragments:
        fragments = await render_me(live, pid)
        if live.state.participant(pid) is None:
            fragments.append(("ended", "ended"))  # sse-close: the page stops listening
        return fragments

    return live_response(svc.hub, cache, room, f"me:{pid}", render)


async def _after(pid: str, room: str, error: str | None = None) -> Any:
    """htmx: the fresh partials (status line, controls out of band); else back to the page."""
    if not _htmx():
        if error:
            live = await _own(_svc(), room, pid)
            parts = dict(await render_me(live, pid, csrf=await current_csrf_token(), error=error))
            body = await render_template("participant/me.html", live=live, room=live.room,
                                         p=live.state.participant(pid), hand=parts["hand"],
                                         controls=parts["controls"])
            return Response(body, status=422)
        return redirect(url_for("participant.get_me"), 303)
    live = await _own(_svc(), room, pid)
    parts = dict(await render_me(live, pid, error=error))
    return Response(parts["hand"] + f'<div id="controls" hx-swap-oob="innerHTML">{parts["controls"]}</div>')


@bp.post("/me/<action>")
@participant_required("action")
async def post_me(action: str) -> Any:
    """Raise, reply or lower this caller's hand, answer an invitation to speak, save topic or name."""
    room, pid = _link()
    if (refused := await _forged(pid)) is not None:
        return refused
    svc = _svc()
    form = await request.form
    try:
        if action == "raise":
            position, new = await svc.queue.raise_hand(room, pid, source="web")
            if new and (await get_room(svc.redis, room)).announce_web:
                await svc.host.announce(room, pid, "raised", n=position)
        elif action == "reply":
            position, new = await svc.queue.reply(room, pid, source="web")
            if new and (await get_room(svc.redis, room)).announce_web:
                await svc.host.announce(room, pid, "reply_raised", n=position)
        elif action == "lower":
            await svc.queue.lower_hand(room, pid, by="web")
        elif action in ("accept", "decline"):
            result = await svc.host.answer(room, pid, accept=action == "accept", source="web")
            if not result.ok:
                return await _after(pid, room, result.message)
        elif action == "topic":
            await svc.queue.set_topic(room, pid, form.get("topic", ""))
        elif action == "name":
            await svc.queue.update(room, pid, name=form.get("name", ""), name_max=NAME_MAX)
        else:
            return Response("No such action.\n", status=404, content_type="text/plain")
    except NotFound:
        unlink_session()
        return await _after(pid, room)
    except HandraiseError as exc:
        return await _after(pid, room, exc.message)
    return await _after(pid, room)


@bp.post("/me/unlink")
@participant_required("action")
async def post_unlink() -> Any:
    """Forget the link in this browser (the call goes on)."""
    unlink_session()
    return redirect(url_for("participant.get_join"), 303)
