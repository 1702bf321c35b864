"""The demo's "Phones" page (the ``phones`` blueprint): virtual phones on the Twilio emulator.

A newcomer runs a whole meeting without a phone: dial in (the page can type the room's
access or host code after the code prompt), press keys, talk, hang up, and read what each
caller heard. Mounted only by ``handraise demo`` (:func:`mount_phones`), never by
``create_app`` or ``handraise serve``: it drives the in-process
:class:`~handraise.sim.Simulator`, which a real deployment does not have. Behind the host
sign-in, like the dashboard it sits beside.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass, replace
from typing import Any

from quart import Blueprint, Quart, Response, abort, current_app, redirect, render_template, request, url_for

from ..app import services
from ..pins import pin_of
from ..rooms import Room
from ..sim import Simulator
from ..store import key
from ..web.security import host_required

log = logging.getLogger(__name__)

bp = Blueprint("phones", __name__, url_prefix="/demo/phones")

SIM_KEY = "handraise_demo_sim"
ROOM_KEY = "handraise_demo_room"
#: The demo's Twilio number: what every virtual phone dials.
DIALLED = "+15550109999"
#: The keypad, in the order its buttons are laid out.
KEYPAD = "123456789*0#"
KEY_NAMES = {"*": "star", "#": "pound"}
#: Numbers the page never hands out: the simulated host and caller, the dialled number.
RESERVED = frozenset({"0000", "4821", "9999"})
HEARD_LINES = 8
#: How a transcript entry's kind reads on a card; plain speech ("say") has no label.
KIND_LABELS = {"say": "", "announcement": "private", "wait": "waiting", "hold": "on hold",
               "wait-music": "waiting", "hold-music": "on hold"}
TALK_MS = 2000.0
MAX_PHONES = 20
#: How long a virtual phone waits for the code prompt before it stops meaning to type the code.
PROMPT_TIMEOUT_S = 60.0
NUMBER_RE = re.compile(r"\+?[0-9]{6,15}")
VARY = {"Vary": "HX-Request"}


@dataclass(frozen=True)
class DemoRoom:
    """The room the page dials into, with both codes (the demo created it, so it knows them)."""

    id: str
    name: str
    access_code: str
    host_code: str


@dataclass(frozen=True)
class Heard:
    """One line of what a caller heard: ``kind`` is empty for plain speech."""

    kind: str
    text: str


@dataclass(frozen=True)
class Phone:
    """One virtual call as its card shows it."""

    sid: str
    number: str
    status: str
    live: bool
    verb: str | None
    in_conference: bool
    muted: bool
    hold: bool
    heard: list[Heard]
    #: The web PIN the caller was told (so a newcomer can link the companion page to it).
    pin: str | None = None


def mount_phones(app: Quart, sim: Simulator) -> None:
    """Add the Phones page to ``app`` (before it serves), driving the emulator ``sim``."""
    app.extensions[SIM_KEY] = sim
    app.register_blueprint(bp)


def set_phones_room(app: Quart, room: Room, host_code: str) -> None:
    """Name the room the page dials into (created once the app serves, so after mounting)."""
    app.extensions[ROOM_KEY] = DemoRoom(room.id, room.name, room.access_code, host_code)


# --- what the page shows (pure) ------------------------------------------------------------


def heard_line(entry: dict[str, Any]) -> Heard:
    """A transcript entry of the emulator as one readable line."""
    kind = str(entry.get("kind", ""))
    label = KIND_LABELS.get(kind, kind)
    if entry.get("text"):
        return Heard(label, str(entry["text"]))
    if entry.get("digits"):
        return Heard("tones", str(entry["digits"]))
    if kind == "beep":
        return Heard("beep", "someone joined" if entry.get("reason") == "enter" else "someone left")
    if kind in ("wait-music", "hold-music"):
        return Heard(label, "music")
    return Heard(label, "audio")


def phone_of(state: dict[str, Any]) -> Phone:
    """A card from the emulator's ``call_state`` of one call."""
    conference = state.get("conference")
    transcript = state.get("transcript") or []
    return Phone(
        sid=str(state["sid"]), number=str(state["from"]), status=str(state["status"]),
        live=state["status"] in ("queued", "ringing", "in-progress"),
        verb=state.get("current_verb"), in_conference=conference is not None,
        muted=bool(conference and conference.get("muted")),
        hold=bool(conference and conference.get("hold")),
        heard=[heard_line(e) for e in transcript[-HEARD_LINES:]],
    )


def fresh_number(taken: set[str]) -> str:
    """A +1555010xxxx number no virtual phone has used yet (random, so the demo looks real)."""
    for _ in range(100):
        last = f"{secrets.randbelow(10_000):04d}"
        if last not in RESERVED and f"+1555010{last}" not in taken:
            return f"+1555010{last}"
    free = (f"+1555010{n:04d}" for n in range(10_000) if f"{n:04d}" not in RESERVED)
    return next((number for number in free if number not in taken), "+15550100001")


# --- the blueprint -----------------------------------------------------------------------


def _sim() -> Simulator:
    sim: Simulator = current_app.extensions[SIM_KEY]
    return sim


def _room() -> DemoRoom | None:
    room: DemoRoom | None = current_app.extensions.get(ROOM_KEY)
    return room


def _htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def _version(sim: Simulator) -> int:
    """The emulator's latest event: every change a card shows comes with one."""
    return sim.events[-1].seq if sim.events else 0


def _phones(sim: Simulator) -> list[Phone]:
    sids = list(sim.engine.calls)[::-1][:MAX_PHONES]  # newest first
    return [phone_of(sim.state(sid)) for sid in sids]


def _taken(sim: Simulator) -> set[str]:
    return {call.from_ for call in sim.engine.calls.values()}


async def _with_pins(phones: list[Phone]) -> list[Phone]:
    """Each live call's web PIN, as the app issued it (read from Redis like the app does)."""
    room = _room()
    if room is None:
        return phones
    redis = services(current_app).redis
    out = []
    for ph in phones:
        pid = await redis.get(key(room.id, "call", ph.sid)) if ph.live else None
        out.append(replace(ph, pin=await pin_of(redis, room.id, pid)) if pid else ph)
    return out


async def _calls_partial(*, status: str | None = None, next_number: str | None = None) -> str:
    sim = _sim()
    return await render_template("demo/_calls.html", phones=await _with_pins(_phones(sim)),
                                 version=_version(sim),
                                 keypad=KEYPAD, key_names=KEY_NAMES, status=status,
                                 next_number=next_number)


async def _page(*, error: str | None = None, number: str | None = None, status: int = 200) -> Response:
    sim = _sim()
    body = await render_template("demo/phones.html", room=_room(), number=number or fresh_number(_taken(sim)),
                                 phones=await _with_pins(_phones(sim)), version=_version(sim), keypad=KEYPAD,
                                 key_names=KEY_NAMES, error=error)
    return Response(body, status=status, headers=VARY)


async def _done(status: str, *, next_number: str | None = None) -> Any:
    """After an action: the fresh calls list (htmx) with the outcome, else back to the page."""
    if _htmx():
        return Response(await _calls_partial(status=status, next_number=next_number), headers=VARY)
    return redirect(url_for("phones.get_phones"), 303)


def _live_call(sid: str) -> Phone:
    """The call a button acts on: 404 if unknown, 409 if it has ended."""
    sim = _sim()
    if sid not in sim.engine.calls:
        abort(404)
    phone = phone_of(sim.state(sid))
    if not phone.live:
        abort(Response("This call has ended.\n", status=409, content_type="text/plain; charset=utf-8"))
    return phone


async def _type_code(sim: Simulator, sid: str, code: str) -> None:
    """Wait for the code prompt, then type ``code``, as the caller would."""
    try:
        await sim.wait_event("gather-start", call_sid=sid, num_digits=6, timeout=PROMPT_TIMEOUT_S)
    except TimeoutError:
        log.warning("demo phone %s: no code prompt within %.0f s; the code was not typed",
                    sid, PROMPT_TIMEOUT_S)
        return
    if phone_of(sim.state(sid)).live:
        sim.press(sid, code)


@bp.get("")
@host_required("page")
async def get_phones() -> Response:
    """The virtual phones; with ``HX-Request`` only the calls list (the 1-second poll)."""
    if _htmx():
        since = request.args.get("since")
        if since is not None and since == str(_version(_sim())):
            return Response(status=204, headers=VARY)  # nothing changed: htmx keeps the list
        return Response(await _calls_partial(), headers=VARY)
    return await _page()


@bp.post("/calls")
@host_required("action")
async def post_call() -> Any:
    """Place a virtual call; optionally type the access or host code after the code prompt."""
    form = await request.form
    number = form.get("number", "").strip()
    how = form.get("as", "participant")
    error = None
    if not NUMBER_RE.fullmatch(number):
        error = "Type a phone number of 6 to 15 digits, like +15550100001."
    elif how not in ("participant", "host", "dial"):
        error = "Choose what the phone types at the code prompt: participant, host or nothing."
    if error is not None:
        if _htmx():
            return Response(error, status=422, content_type="text/plain; charset=utf-8")
        return await _page(error=error, number=number, status=422)
    room = _room()
    if how != "dial" and room is None:
        return Response("The demo room is not ready yet; try again in a moment.\n", status=503,
                        content_type="text/plain; charset=utf-8", headers={"Retry-After": "2"})
    sim = _sim()
    sid = sim.place_call(number, DIALLED)
    outcome = f"Phone {number} is calling."
    if room is not None and how != "dial":
        code = room.access_code if how == "participant" else room.host_code
        sim.engine.spawn(_type_code(sim, sid, code))  # the emulator cancels it when it stops
        outcome = f"Phone {number} is calling; it types the {'access' if how == 'participant' else 'host'} " \
                  "code at the prompt."
    log.info("demo phone %s dialled in (%s)", sid, how)
    return await _done(outcome, next_number=fresh_number(_taken(sim)))


@bp.post("/calls/<sid>/keys")
@host_required("action")
async def post_keys(sid: str) -> Any:
    """Press keypad keys on one virtual call (tones in its stream, digits to a Gather)."""
    phone = _live_call(sid)
    digits = (await request.form).get("digits", "")
    if not digits or len(digits) > 12 or any(d not in KEYPAD for d in digits):
        return Response("Keys are 0-9, * and #, at most 12 at once.\n", status=422,
                        content_type="text/plain; charset=utf-8")
    _sim().press(sid, digits)
    return await _done(f"Phone {phone.number} pressed {digits}.")


@bp.post("/calls/<sid>/talk")
@host_required("action")
async def post_talk(sid: str) -> Any:
    """The caller talks for 2 seconds (speech-like audio in the call's stream)."""
    phone = _live_call(sid)
    _sim().speak(sid, TALK_MS)
    return await _done(f"Phone {phone.number} talks for {TALK_MS / 1000:.0f} seconds.")


@bp.post("/calls/<sid>/hangup")
@host_required("action")
async def post_hangup(sid: str) -> Any:
    """Hang up one virtual call."""
    phone = _live_call(sid)
    await _sim().hang_up(sid)
    return await _done(f"Phone {phone.number} hung up.")
