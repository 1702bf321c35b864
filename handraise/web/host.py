"""The host's pages (the ``host`` blueprint): rooms, the live room dashboard, its actions,
the dashboard's event stream and the hand log.

Thin by design: every action is a :class:`~handraise.phone.control.HostControls` call (the
same layer the JSON API and the keypad use) whose outcome sentence is shown in the page's
status region; the live partials are rendered by :func:`render_dashboard` and sent over SSE
by :mod:`.live`.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup
from quart import (
    Blueprint,
    Response,
    abort,
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
from ..handlog import load_hand_log, to_csv
from ..phone.control import PARTICIPANT_ACTIONS, ROOM_ACTIONS, ActionResult, prompting_key
from ..phone.streams import keypad_checks
from ..queue import Participant, RoomState
from ..rooms import (
    KEYPAD_MODES,
    ROOM_SETTINGS,
    SETTINGS_BY_NAME,
    Room,
    close_room,
    create_room,
    get_room,
    list_rooms,
    update_room,
)
from .live import FragmentCache, Fragments, Live, fragment_cache, live_response
from .security import host_required

log = logging.getLogger(__name__)

bp = Blueprint("host", __name__, url_prefix="/host")

#: The dashboard's live partials, in page order: SSE event name = partial name.
PARTIALS = ("speaker", "queue", "participants")

SOURCE_NAMES = {"keypad": "keypad", "web": "web page", "prompt": "pre-join prompt",
                "host": "host", "api": "API"}



def _svc() -> Services:
    return services(current_app)


def _cache(svc: Services) -> FragmentCache:
    return fragment_cache(current_app, svc.queue)


def _htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


async def _room_or_404(room_id: str) -> Room:
    try:
        return await get_room(_svc().redis, room_id)
    except NotFound:
        abort(404)


@bp.errorhandler(RedisConnectionError)
@bp.errorhandler(RedisTimeoutError)
@bp.errorhandler(OSError)
async def _unavailable(_exc: BaseException | None = None) -> Response:
    """Redis is away: a page that says so (htmx: a sentence for the status region)."""
    log.warning("host page %s: redis unavailable: %r", request.path, _exc)
    if _htmx():
        return Response("The hand queue is briefly unavailable; nothing was changed. Try again in a "
                        "moment.", status=503, headers={"Retry-After": "5"})
    body = await render_template("host/unavailable.html")
    return Response(body, status=503, headers={"Retry-After": "5"})


# --- what the dashboard shows ------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One participant as the roster shows them."""

    p: Participant
    where: str
    keypad_check: str | None
    hand_position: int | None


@dataclass(frozen=True)
class Dashboard:
    room: Room
    state: RoomState
    rows: list[Row]
    names: dict[str, Participant]

    @property
    def speaker(self) -> Participant | None:
        return self.names.get(self.state.speaker) if self.state.speaker else None


async def load_dashboard(svc: Services, room: Room, state: RoomState) -> Dashboard:
    """Join the snapshot with what only the host sees: prompts, keypad self-tests."""
    redis = svc.redis
    checks = {c.participant: c.verdict for c in await keypad_checks(redis, room.id)} \
        if room.keypad_mode == "stream" else {}
    prompting: list[Any] = []
    if state.participants:
        async with redis.pipeline(transaction=False) as pipe:
            for p in state.participants:
                pipe.exists(prompting_key(room.id, p.id))
            prompting = await pipe.execute()
    positions = {h.participant: h.position for h in state.queue}
    rows = []
    for p, asked in zip(state.participants, prompting, strict=True):
        if p.hold:
            where = "On hold"
        elif asked:
            where = "At a host prompt"
        elif p.conference_sid and p.conference_sid == room.conference_sid:
            where = "In the call"
        else:
            where = "Joining (pre-join)"
        rows.append(Row(p, where, checks.get(p.id), positions.get(p.id)))
    return Dashboard(room, state, rows, {p.id: p for p in state.participants})


#: Roster rows kept per app (their rendered HTML), past which the least recent go.
ROW_CACHE_SIZE = 4096


def _row_key(view: Dashboard, row: Row) -> tuple[Any, ...]:
    """Everything ``_participant_row.html`` shows: the same key, the same HTML."""
    return (view.room.id, view.room.keypad_mode, row, view.state.speaker == row.p.id)


async def render_rows(view: Dashboard) -> list[Markup]:
    """The roster's rows for the live partial, each rendered only when what it shows changed.

    A room change alters a few rows of a 250-caller roster (a hand's place, a mute), and
    rendering all of them again was most of a busy room's rendering (bench/meeting.py).
    Without the CSRF field: the live partials are shared by every dashboard.
    """
    cache: OrderedDict[tuple[Any, ...], Markup] = current_app.extensions.setdefault(
        "handraise_roster_rows", OrderedDict())
    template = current_app.jinja_env.get_template("partials/_participant_row.html")
    out = []
    for row in view.rows:
        k = _row_key(view, row)
        html = cache.get(k)
        if html is None:
            html = cache[k] = Markup(await template.render_async(row=row, d=view, csrf_token=""))
            if len(cache) > ROW_CACHE_SIZE:
                cache.popitem(last=False)
        else:
            cache.move_to_end(k)
        out.append(html)
    return out


async def render_partials(svc: Services, live: Live) -> Fragments:
    """The live partials of one room state. Their forms rely on htmx's ``hx-headers`` for
    the CSRF token, so one rendering serves every signed-in dashboard."""
    view = await load_dashboard(svc, live.room, live.state)
    rows_html = await render_rows(view)
    return [(name, await render_template(f"partials/_{name}.html", d=view, sources=SOURCE_NAMES,
                                         csrf_token="", rows_html=rows_html))
            for name in PARTIALS]


# --- rooms ---------------------------------------------------------------------------------


async def _rooms_page(created: Any = None, error: str | None = None, status: int = 200) -> Response:
    svc = _svc()
    rooms = await list_rooms(svc.redis)
    counts = {r.id: await svc.queue.snapshot(r.id) for r in rooms}
    template = "partials/_rooms.html" if _htmx() and created is None and error is None \
        else "host/rooms.html"
    body = await render_template(template, rooms=rooms, counts=counts, created=created, error=error,
                                 keypad_modes=KEYPAD_MODES)
    return Response(body, status=status, headers={"Vary": "HX-Request"})


@bp.get("")
@host_required("page")
async def get_rooms() -> Response:
    """The rooms with their people and hands, and the form to create one."""
    return await _rooms_page()


@bp.post("/rooms")
@host_required("action")
async def post_room() -> Response:
    """Create a room; its codes are shown once."""
    form = await request.form
    try:
        created = await create_room(_svc().redis, form.get("name", ""),
                                    keypad_mode=form.get("keypad_mode", "stream"))
    except HandraiseError as exc:
        return await _rooms_page(error=exc.message, status=422)
    log.info("room %s created from the dashboard", created.room.id)
    return await _rooms_page(created=created, status=201)


@bp.route("/rooms/<room>/close", methods=["GET", "POST"])
@host_required("page")
async def post_close_room(room: str) -> Any:
    """Ask, then close the room: its codes stop working."""
    r = await _room_or_404(room)
    form = await request.form
    if request.method == "GET" or form.get("confirm") != "yes":
        return await render_template("host/confirm.html", room=r, title=f"Close {r.name}?",
                                     what="Close room", action=url_for("host.post_close_room", room=room),
                                     detail="Its codes stop working. Callers still on the line stay "
                                            "connected, but the room forgets them.")
    await close_room(_svc().redis, room, maxlen=_svc().settings.events_maxlen)
    log.info("room %s closed from the dashboard", room)
    return redirect(url_for("host.get_rooms"), 303)


# --- the room dashboard --------------------------------------------------------------------


@bp.get("/rooms/<room>")
@host_required("page")
async def get_dashboard(room: str) -> Response:
    """The live dashboard; with ``HX-Request`` only its live sections (the 5-second poll)."""
    r = await _room_or_404(room)
    svc = _svc()
    view = await load_dashboard(svc, r, await svc.queue.snapshot(room))
    if _htmx():
        body = await render_template("partials/_live.html", d=view, sources=SOURCE_NAMES, csrf_token="")
    else:
        body = await render_template("host/room.html", d=view, sources=SOURCE_NAMES,
                                     settings=ROOM_SETTINGS)
    return Response(body, headers={"Vary": "HX-Request"})


@bp.get("/rooms/<room>/events")
@host_required("stream")
async def get_dashboard_events(room: str) -> Any:
    """The dashboard's partials as server-sent events (``Last-Event-ID`` resumes)."""
    await _room_or_404(room)
    svc = _svc()

    async def render(live: Live) -> Fragments:
        return await render_partials(svc, live)

    return live_response(svc.hub, _cache(svc), room, "host", render)


async def _outcome(room: str, result: ActionResult) -> Any:
    """The outcome sentence: a status fragment for htmx, else the whole dashboard again."""
    if _htmx():
        return await render_template("partials/_status.html", result=result)
    r = await _room_or_404(room)
    svc = _svc()
    view = await load_dashboard(svc, r, await svc.queue.snapshot(room))
    return await render_template("host/room.html", d=view, sources=SOURCE_NAMES, result=result)


@bp.post("/rooms/<room>/settings")
@host_required("action")
async def post_room_settings(room: str) -> Any:
    """Save the room settings form (every field of :data:`ROOM_SETTINGS` it sends)."""
    await _room_or_404(room)
    svc = _svc()
    form = await request.form
    # A checkbox sends its hidden "no" and, when ticked, "yes" after it: the last one counts.
    values = {name: form.getlist(name)[-1] for name in SETTINGS_BY_NAME if name in form}
    error = message = None
    status = 200
    try:
        changed = await update_room(svc.redis, room, maxlen=svc.settings.events_maxlen, **values)
        message = "Settings saved." if changed else "Nothing changed."
        values = {}
        log.info("room %s settings changed from the dashboard", room)
    except HandraiseError as exc:
        error, status = exc.message, 422
    r = await _room_or_404(room)
    if not _htmx():
        view = await load_dashboard(svc, r, await svc.queue.snapshot(room))
        result = ActionResult(ok=error is None, message=error or message or "")
        return await render_template("host/room.html", d=view, sources=SOURCE_NAMES, result=result,
                                     settings=ROOM_SETTINGS), status
    body = await render_template("partials/_settings.html", room=r, settings=ROOM_SETTINGS, values=values,
                                 error=error, message=message)
    # htmx swaps only 2xx answers by default: a refused value comes back as 200 with its sentence.
    return body, 200


@bp.post("/rooms/<room>/<action>")
@host_required("action")
async def post_room_action(room: str, action: str) -> Any:
    """Call on next, done, lower all hands, mute all, end meeting (after a confirmation)."""
    act = ROOM_ACTIONS.get(action)
    if act is None:
        abort(404)
    r = await _room_or_404(room)
    if action == "end" and (await request.form).get("confirm") != "yes":
        return await render_template("host/confirm.html", room=r, title="End the meeting for everyone?",
                                     what="End meeting", action=url_for("host.post_room_action",
                                                                        room=room, action="end"),
                                     detail="Every caller is disconnected. The room stays open for "
                                            "the next meeting.")
    return await _outcome(room, await act(_svc().host, room))


@bp.post("/rooms/<room>/participants/<pid>/<action>")
@host_required("action")
async def post_participant_action(room: str, pid: str, action: str) -> Any:
    """Call on, lower hand, mute, unmute, prompt, remove or rename one participant."""
    await _room_or_404(room)
    host = _svc().host
    if action == "rename":
        result = await host.rename(room, pid, (await request.form).get("name", ""))
    elif (act := PARTICIPANT_ACTIONS.get(action)) is not None:
        result = await act(host, room, pid)
    else:
        abort(404)
    return await _outcome(room, result)


@bp.get("/rooms/<room>/log.csv")
@host_required("page")
async def get_hand_log(room: str) -> Response:
    """Every hand of the meeting so far, as CSV."""
    r = await _room_or_404(room)
    log_ = await load_hand_log(_svc().redis, room)
    filename = f"hands-{r.id}.csv"
    return Response(to_csv(log_), content_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="{filename}"',
        "X-Handraise-Log-Complete": "yes" if log_.complete else "no",
    })
