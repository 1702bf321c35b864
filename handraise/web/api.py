"""The JSON API (the ``api`` blueprint): ``/api/v1/…`` for integrations, described by the
OpenAPI document at ``/api/v1/openapi.json`` (quart-schema builds it from the routes).

* **Auth.** ``Authorization: Bearer <token>`` (``handraise tokens create``), or the host's
  signed-in session cookie; cookie-authenticated writes need the session's CSRF token in
  ``X-CSRF-Token``, exactly as the pages do. A room-scoped token sees and acts on its room
  only (403 elsewhere). Each token has a rate limit: 429 with ``Retry-After``.
* **One layer.** Every host action is a :class:`~handraise.phone.control.HostControls`
  call, the same the dashboard makes. Its outcome comes back as ``200 {"ok": true,
  "message"}``; what the dashboard refuses the API refuses as ``409`` with the same
  sentence as the problem's ``detail`` (and ``"ok": false``).
* **Errors** are ``application/problem+json`` (RFC 9457) with ``type: about:blank``, the
  status phrase as ``title``, a sentence as ``detail`` and a stable ``code``. Request bodies
  are validated by the schema (422, with ``errors``); malformed JSON is 400, a non-JSON body
  415, Redis unreachable 503 with ``Retry-After``.
* **Events** have one shape (:func:`handraise.hooks.public_event`), the same the webhooks
  POST: a JSON page (``?after=<id>``) and server-sent events (``Last-Event-ID`` resumes).

quart-schema's documentation pages load their scripts from a CDN and run inline script,
which the site's Content-Security-Policy forbids; so only the JSON document is served.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    create_model,
)
from quart import Blueprint, Quart, Response, current_app, g, request, stream_with_context
from quart_auth import current_user
from quart_schema import (
    QuartSchema,
    RequestSchemaValidationError,
    validate_querystring,
    validate_request,
    validate_response,
)
from quart_schema.openapi import APIKeySecurityScheme, HttpSecurityScheme, OpenAPIProvider
from quart_schema.validation import QuerystringValidationError
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.exceptions import NotFound as RouteNotFound
from werkzeug.routing import BaseConverter, Rule

from ..app import Services, services
from ..errors import Conflict, HandraiseError
from ..events import (
    REDIS_ERRORS,
    RESET,
    SubscriptionLagged,
    is_valid_id,
    parse_id,
    read_events,
    sse,
    sse_comment,
)
from ..hooks import describe_event, rfc3339
from ..phone.control import (
    PARTICIPANT_ACTIONS,
    ROOM_ACTIONS,
    ActionResult,
    ParticipantAction,
    RoomAction,
)
from ..queue import Participant, RoomState
from ..rooms import (
    ROOM_SETTINGS,
    Room,
    RoomSetting,
    close_room,
    create_room,
    get_room,
    list_rooms,
    update_room,
)
from ..store import key
from ..tokens import authenticate, take
from .security import SAFE_METHODS, csrf_valid

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
OPENAPI_PATH = PREFIX + "/openapi.json"
#: Room and participant ids as the routes accept them; anything else is a 404 before any lookup.
ID_PATTERN = "^[A-Za-z0-9_-]{1,64}$"
EVENT_ID_PATTERN = "^[0-9]{1,19}-[0-9]{1,19}$"
KEEPALIVE_S = 15.0
RETRY_MS = 2000
REDIS_RETRY_S = 5

bp = Blueprint("api", __name__, url_prefix=PREFIX)


class IdConverter(BaseConverter):
    regex = ID_PATTERN.strip("^$")


# --- problems (RFC 9457) ------------------------------------------------------------------


class ApiProblem(Exception):
    """Answer with a problem document: ``raise ApiProblem(404, "There is no room…")``."""

    def __init__(self, status: int, detail: str, *, code: str, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.detail, self.code = status, detail, code
        self.headers = headers or {}
        self.extra = extra


def problem(status: int, detail: str, *, code: str, headers: dict[str, str] | None = None,
            **extra: Any) -> Response:
    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status,
            "detail": detail, "code": code, **extra}
    return Response(json.dumps(body), status=status, headers=headers or {},
                    content_type="application/problem+json")


def _api_path() -> bool:
    return request.path == PREFIX or request.path.startswith(PREFIX + "/")


@bp.errorhandler(ApiProblem)
async def _on_problem(exc: ApiProblem) -> Response:
    return problem(exc.status, exc.detail, code=exc.code, headers=exc.headers, **exc.extra)


@bp.errorhandler(HandraiseError)
async def _on_domain_error(exc: HandraiseError) -> Response:
    code = {404: "not_found", 409: "conflict", 422: "invalid"}.get(exc.status, "bad_request")
    return problem(exc.status, exc.message, code=code)


@bp.errorhandler(RequestSchemaValidationError)
async def _on_invalid_request(exc: RequestSchemaValidationError) -> Response:
    errors = _errors(exc.validation_error)
    if isinstance(exc, QuerystringValidationError):
        return problem(400, "The query string does not match the API's schema.", code="invalid_query",
                       errors=errors)
    if not request.is_json:
        return problem(415, "Send a JSON body, with Content-Type: application/json.",
                       code="unsupported_media_type")
    return problem(422, "The request body does not match the API's schema.", code="invalid_body",
                   errors=errors)


def _errors(error: Exception) -> list[dict[str, str]]:
    if isinstance(error, ValidationError):
        return [{"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"]}
                for e in error.errors()]
    return [{"field": "(body)", "message": str(error)}]


@bp.errorhandler(UnicodeDecodeError)
async def _on_undecodable(exc: UnicodeDecodeError) -> Response:
    return problem(400, "The body is not UTF-8 text.", code="bad_request")


@bp.errorhandler(HTTPException)
async def _on_http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    detail = {400: "The request is malformed (is the body valid JSON?)."}.get(
        status, exc.description or HTTPStatus(status).phrase)
    return problem(status, detail, code=HTTPStatus(status).name.lower())


@bp.errorhandler(Exception)
async def _on_bug(exc: Exception) -> Response:
    log.exception("api %s %s failed", request.method, request.path, exc_info=exc)
    return problem(500, "Something went wrong on the server; nothing may have changed. "
                        "It is logged.", code="internal")


async def _on_redis_down(exc: BaseException) -> Response:
    log.warning("api %s %s: redis unavailable: %r", request.method, request.path, exc)
    return problem(503, "The hand queue is briefly unavailable (its database cannot be reached); "
                        "nothing was changed. Try again in a moment.", code="unavailable",
                   headers={"Retry-After": str(REDIS_RETRY_S)})


for _error in REDIS_ERRORS:
    bp.register_error_handler(cast(type[Exception], _error), _on_redis_down)


@bp.app_errorhandler(RouteNotFound)
async def _api_route_not_found(exc: RouteNotFound) -> Any:
    """Unknown paths under /api/v1 answer a problem too (routing fails before the blueprint)."""
    if not _api_path():
        return exc
    return problem(404, "There is no such API path.", code="not_found")


@bp.app_errorhandler(MethodNotAllowed)
async def _api_method_not_allowed(exc: MethodNotAllowed) -> Any:
    """A known API path with the wrong method: 405 naming the allowed ones."""
    if not _api_path():
        return exc
    allowed = ", ".join(sorted(exc.valid_methods or ()))
    return problem(405, f"{request.method} is not allowed here; use {allowed}.",
                   code="method_not_allowed", headers={"Allow": allowed})


# --- who is asking ------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """An authenticated API client: a token (maybe scoped to one room) or the host session."""

    kind: Literal["token", "host"]
    name: str
    room: str | None = None


def _unauthenticated(detail: str, error: str | None = None) -> ApiProblem:
    challenge = 'Bearer realm="handraise"' + (f', error="{error}"' if error else "")
    return ApiProblem(401, detail, code="unauthenticated", headers={"WWW-Authenticate": challenge})


@bp.before_request
async def authenticate_caller() -> None:
    """A bearer token (rate-limited) or the host session (CSRF token on writes), else 401."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, secret = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise _unauthenticated("Send the token as: Authorization: Bearer <token>.", "invalid_request")
        redis = _svc().redis
        token = await authenticate(redis, secret.strip())
        if token is None:
            raise _unauthenticated("This token is unknown or was revoked.", "invalid_token")
        wait = await take(redis, token)
        if wait:
            raise ApiProblem(429, f"Too many requests with this token (its limit is "
                                  f"{token.rate_per_min} a minute); try again in {wait} s.",
                             code="rate_limited", headers={"Retry-After": str(wait)})
        g.api_caller = Caller("token", token.name, token.room)
        return
    if await current_user.is_authenticated:
        if request.method not in SAFE_METHODS and not await csrf_valid():
            raise ApiProblem(403, "A signed-in host's writes need the session's CSRF token in "
                                  "X-CSRF-Token (and no foreign Origin).", code="csrf")
        g.api_caller = Caller("host", "host session")
        return
    raise _unauthenticated("Sign in first: send Authorization: Bearer <token> "
                           "(handraise tokens create), or use the host's signed-in session.")


def _caller() -> Caller:
    caller: Caller = g.api_caller
    return caller


def _svc() -> Services:
    return services(current_app)


async def _room(room_id: str) -> Room:
    """The room, if this caller may see it: 403 for another room's token, 404 if unknown."""
    scope = _caller().room
    if scope is not None and scope != room_id:
        raise ApiProblem(403, "This token is for another room.", code="forbidden")
    return await get_room(_svc().redis, room_id)


async def _participant(room_id: str, pid: str) -> Participant:
    await _room(room_id)
    return await _svc().queue.participant(room_id, pid)


# --- schemas ----------------------------------------------------------------------------------


#: Times are RFC 3339 strings in UTC (``2024-05-01T09:30:00.123Z``), as in the events.
Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]


def _whole(value: Any) -> Any:
    """JSON has one number type: 30.0 is the integer 30 (30.5 and "30" stay refused)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _setting_type(s: RoomSetting) -> Any:
    if s.kind == "choice":
        return Literal[s.choices]
    if s.kind == "bool":
        return bool
    if s.kind == "seconds":
        return Annotated[int, Field(ge=0, le=s.maximum), BeforeValidator(_whole)]
    return Annotated[str, Field(pattern=r"^[*#]?[0-9A-D]$")]


def _settings_fields(optional: bool) -> dict[str, Any]:
    """The room settings as pydantic fields, made from :data:`ROOM_SETTINGS`."""
    return {s.name: ((_setting_type(s) | None), Field(None, description=s.help)) if optional
            else (_setting_type(s), Field(description=s.help)) for s in ROOM_SETTINGS}


if TYPE_CHECKING:
    class RoomSettingsOut(BaseModel): ...

    class RoomSettingsIn(BaseModel): ...
else:
    RoomSettingsOut = create_model("RoomSettingsOut", **_settings_fields(optional=False))
    RoomSettingsIn = create_model("RoomSettingsIn", __config__=ConfigDict(extra="forbid", strict=True),
                                  **_settings_fields(optional=True))


class RoomOut(RoomSettingsOut):
    """A room, with every setting (see ``handraise rooms settings``)."""

    id: str
    name: str
    access_code: str = Field(description="The 6-digit code participants dial.")
    status: Literal["open", "closed"]
    created_at: Timestamp
    conference_active: bool
    participants: int
    hands: int


class RoomList(BaseModel):
    """The rooms this caller may see (open ones unless ``all``)."""

    rooms: list[RoomOut]


class CreatedRoomOut(RoomOut):
    """A new room, with its host code: shown only in this answer."""

    host_code: str


class RoomIn(RoomSettingsIn):
    """A new room: its name, and any settings (the others keep their defaults)."""

    # Strict: 0 is not false, "1" is not true; what the schema says is what is accepted.
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=80,
                      description="Shown to the host; control characters are refused (422).")


class RoomPatch(RoomSettingsIn):
    """What to change: the name and any settings; a field left out stays as it is."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str | None = Field(None, min_length=1, max_length=80)


def _given_settings(data: BaseModel) -> dict[str, Any]:
    return {s.name: getattr(data, s.name) for s in ROOM_SETTINGS if getattr(data, s.name) is not None}


class RoomsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown parameter is a mistake: 400

    all: bool = Field(False, description="Include closed rooms.")


class ParticipantOut(BaseModel):
    id: str
    role: Literal["host", "participant"]
    display_name: str
    name: str | None
    label: str | None
    number_masked: str
    muted: bool
    hold: bool
    channels: list[Literal["phone", "web"]]
    joined_at: Timestamp
    in_conference: bool
    speaking: bool
    hand_position: int | None
    topic: str | None


class ParticipantList(BaseModel):
    """Everyone in the room, in the order they joined."""

    room: str
    participants: list[ParticipantOut]
    last_event_id: str = Field(description="Resume the room's events after this id.")


class HandOut(BaseModel):
    participant: str
    display_name: str
    position: int
    raised_at: Timestamp
    wait_s: float
    source: str | None = Field(description="keypad, web, prompt, host or api")
    topic: str | None
    kind: Literal["point", "reply"] = Field(
        description="point: a new point; reply: a reply to the current speaker (replies go first "
                    "while that turn lasts, then become points in place)")
    reply_to: str | None = Field(description="The participant a reply answers (null for a point).")


class SpeakerOut(BaseModel):
    participant: str
    display_name: str
    since: Timestamp | None
    speaking_s: float | None


class QueueOut(BaseModel):
    """The raised hands in queue order (replies first, then points: first raised first, or in
    a fair room those not yet called on first), and who speaks now."""

    room: str
    hands: list[HandOut]
    speaker: SpeakerOut | None
    last_event_id: str


class InvitationOut(BaseModel):
    """The room's latest invitation to speak (consent rooms), kept after its answer."""

    participant: str
    display_name: str
    status: Literal["pending", "accepted", "declined", "no_answer", "left"]
    invited_at: Timestamp
    deadline: Timestamp
    answered_at: Timestamp | None
    next: bool = Field(description="Made by call-next: a decline invites the next hand.")


class SpeakerState(BaseModel):
    """Who speaks now (null: nobody), whether they are over the speaking limit, and the
    latest invitation to speak (null: none, or not a consent room)."""

    room: str
    speaker: SpeakerOut | None
    over_time: bool = Field(description="The speaker is past the room's speak_limit_s.")
    invitation: InvitationOut | None
    last_event_id: str


class Outcome(BaseModel):
    """What the action did: the sentence the dashboard shows."""

    ok: Literal[True]
    message: str
    participant: str | None


class HandOutcome(Outcome):
    """The hand is up (``newly_raised`` false: it already was, and keeps its place)."""

    position: int
    newly_raised: bool
    kind: Literal["point", "reply"] = "point"


class RenameIn(BaseModel):
    # Strict: 0 is not false, "1" is not true; what the schema says is what is accepted.
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(max_length=60, pattern=r"^[^\x00-\x1f]*$",
                      description='The name shown for them; "" goes back to "Caller 4821".')


class EventsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown parameter is a mistake: 400

    after: str | None = Field(None, pattern=EVENT_ID_PATTERN,
                              description="Events after this id (default: from the oldest kept).")
    limit: int = Field(100, ge=1, le=1000)


class StreamQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown parameter is a mistake: 400

    after: str | None = Field(None, pattern=EVENT_ID_PATTERN,
                              description="Events after this id, if no Last-Event-ID is sent "
                                          "(default: from now on).")


class ParticipantRef(BaseModel):
    id: str
    display_name: str
    number_masked: str


class EventOut(BaseModel):
    """One room event; fields beyond these depend on ``type`` (see the README)."""

    model_config = ConfigDict(extra="allow")

    type: str
    id: str
    room: str
    participant: ParticipantRef | None
    at: Timestamp


class EventPage(BaseModel):
    """Events after ``after``, oldest first; ask again with ``after=last_id``."""

    room: str
    events: list[EventOut]
    last_id: str
    more: bool = Field(description="The page is full: more events may follow at once.")
    reset: bool = Field(description="Events after ``after`` were trimmed: reload the state.")


# --- the OpenAPI document ----------------------------------------------------------------------

PROBLEMS_ATTR = "_handraise_problems"
RESPONSES_ATTR = "_handraise_responses"
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details.",
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "errors": {"type": "array", "items": {
            "type": "object", "properties": {"field": {"type": "string"}, "message": {"type": "string"}}}},
        "ok": {"type": "boolean"},
        "message": {"type": "string"},
        "participant": {"type": ["string", "null"]},
    },
    "additionalProperties": True,
}
PROBLEM_TEXT = {
    400: "The query string or the JSON is malformed.",
    401: "No token or session, or an unknown or revoked token.",
    403: "A token for another room, or a session write without its CSRF token.",
    404: "No such room or participant.",
    409: "Refused: the dashboard would refuse it too; `detail` says why, nothing was changed.",
    415: "The body is not JSON.",
    422: "The JSON does not match the schema (`errors` says where) or the domain refuses it.",
    429: "This token's rate limit is used up; wait `Retry-After` seconds.",
    503: "Redis cannot be reached; try again after `Retry-After` seconds.",
}
COMMON_PROBLEMS = (401, 403, 429, 503)


def problems(*statuses: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Document the problems a route can answer beyond those of every route."""

    def mark(view: Callable[..., Any]) -> Callable[..., Any]:
        setattr(view, PROBLEMS_ATTR, (*getattr(view, PROBLEMS_ATTR, ()), *statuses))
        return view

    return mark


def _problem_response(status: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": PROBLEM_TEXT[status],
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    if status in (429, 503):
        out["headers"] = {"Retry-After": {"required": True, "schema": {"type": "integer"}}}
    if status == 401:
        out["headers"] = {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}}
    return out


class ApiDocs(OpenAPIProvider):
    """Only the /api/v1 routes, with their problem responses and id patterns."""

    def generate_rules(self) -> Iterable[Rule]:
        for rule in super().generate_rules():
            if rule.rule.startswith(PREFIX + "/"):
                yield rule

    def build_path_parameter(self, name: str, converter: BaseConverter) -> dict[str, Any]:
        out = super().build_path_parameter(name, converter)
        if isinstance(converter, IdConverter):
            out["schema"] = {"type": "string", "pattern": ID_PATTERN}
        return out

    def build_request_body(self, model: Any, source: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        body, components = super().build_request_body(model, source)
        return {**body, "required": True}, components  # every body here is required

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        view = self._app.view_functions[rule.endpoint]
        statuses = sorted({*COMMON_PROBLEMS, *getattr(view, PROBLEMS_ATTR, ())})
        if rule.arguments:
            statuses = sorted({*statuses, 404})
        for operations in paths.values():
            for method, operation in list(operations.items()):
                responses = {**operation["responses"], **getattr(view, RESPONSES_ATTR, {})}
                responses.update({status: _problem_response(status) for status in statuses})
                operations[method] = {**operation, "responses": responses}
        components["Problem"] = PROBLEM_SCHEMA
        return paths, components


def _init_docs(app: Quart) -> None:
    app.url_map.converters["id"] = IdConverter
    QuartSchema(
        app,
        openapi_path=OPENAPI_PATH,
        # Their pages load scripts from a CDN and run inline script: the CSP forbids both.
        redoc_ui_path=None, scalar_ui_path=None, swagger_ui_path=None,
        info={"title": "handraise API", "version": "1",
              "description": "The hand queue of handraise rooms: rooms, participants, hands, "
                             "the host's actions and the room's events. See the README's JSON API "
                             "section."},
        security_schemes={
            # A token from `handraise tokens create`, or the host's signed-in session (whose
            # writes also need X-CSRF-Token).
            "bearer": HttpSecurityScheme(scheme="bearer"),
            "session": APIKeySecurityScheme(name="handraise_host", in_="cookie"),
        },
        security=[{"bearer": []}, {"session": []}],
        conversion_preference="pydantic",
        openapi_provider_class=ApiDocs,
    )


# Recorded before the routes: the "id" converter must exist when their rules are added.
bp.record_once(lambda state: _init_docs(cast(Quart, state.app)))


# --- rooms --------------------------------------------------------------------------------------


def _room_out(room: Room, state: RoomState) -> dict[str, Any]:
    return {**{k: v for k, v in room.to_dict().items() if k not in {"conference_name", "conference_sid"}},
            "created_at": rfc3339(room.created_at), "conference_active": room.conference_sid is not None,
            "participants": len(state.participants), "hands": len(state.queue)}


@bp.get("/rooms")
@validate_querystring(RoomsQuery)
@validate_response(RoomList)
@problems(400)
async def get_rooms(query_args: RoomsQuery) -> dict[str, Any]:
    """List the rooms (a room token sees its own room only)."""
    svc, scope = _svc(), _caller().room
    rooms = [r for r in await list_rooms(svc.redis, include_closed=query_args.all)
             if scope is None or r.id == scope]
    return {"rooms": [_room_out(r, await svc.queue.snapshot(r.id)) for r in rooms]}


@bp.post("/rooms")
@validate_request(RoomIn)
@validate_response(CreatedRoomOut, 201)
@problems(400, 415, 422)
async def post_room(data: RoomIn) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Create a room; the answer holds its host code, shown only this once."""
    if _caller().room is not None:
        raise ApiProblem(403, "A room token cannot create rooms.", code="forbidden")
    svc = _svc()
    created = await create_room(svc.redis, data.name, maxlen=svc.settings.events_maxlen,
                                **_given_settings(data))
    log.info("room %s created through the API (%s)", created.room.id, _caller().name)
    body = {**_room_out(created.room, await svc.queue.snapshot(created.room.id)),
            "host_code": created.host_code}
    return body, 201, {"Location": f"{PREFIX}/rooms/{created.room.id}"}


@bp.get("/rooms/<id:room>")
@validate_response(RoomOut)
async def get_room_details(room: str) -> dict[str, Any]:
    """One room, with its people and hand counts."""
    r = await _room(room)
    return _room_out(r, await _svc().queue.snapshot(room))


@bp.patch("/rooms/<id:room>")
@validate_request(RoomPatch)
@validate_response(RoomOut)
@problems(400, 415, 422)
async def patch_room(room: str, data: RoomPatch) -> dict[str, Any]:
    """Rename the room or change its settings (one ``room.updated`` event lists the changes)."""
    await _room(room)
    svc = _svc()
    if await update_room(svc.redis, room, name=data.name, maxlen=svc.settings.events_maxlen,
                         **_given_settings(data)):
        log.info("room %s updated through the API (%s)", room, _caller().name)
    return _room_out(await get_room(svc.redis, room), await svc.queue.snapshot(room))


@bp.post("/rooms/<id:room>/close")
@validate_response(RoomOut)
async def post_close_room(room: str) -> dict[str, Any]:
    """Close the room: its codes stop working, its live state is cleared (closing twice is fine)."""
    await _room(room)
    svc = _svc()
    if await close_room(svc.redis, room, maxlen=svc.settings.events_maxlen):
        log.info("room %s closed through the API (%s)", room, _caller().name)
    return _room_out(await get_room(svc.redis, room), await svc.queue.snapshot(room))


# --- participants, queue, speaker ----------------------------------------------------------------


def _speaker(state: RoomState) -> dict[str, Any] | None:
    if state.speaker is None:
        return None
    p = state.participant(state.speaker)
    since = state.speaker_since
    return {"participant": state.speaker, "display_name": p.display_name if p else state.speaker,
            "since": rfc3339(since) if since else None,
            "speaking_s": max(0.0, (state.now - since) / 1000) if since else None}


@bp.get("/rooms/<id:room>/participants")
@validate_response(ParticipantList)
async def get_participants(room: str) -> dict[str, Any]:
    """Everyone in the room: names, masked numbers, mute and hold, hand positions."""
    r = await _room(room)
    state = await _svc().queue.snapshot(room)
    positions = {h.participant: h.position for h in state.queue}
    people = [{
        "id": p.id, "role": p.role, "display_name": p.display_name, "name": p.name, "label": p.label,
        "number_masked": p.number_masked, "muted": p.muted, "hold": p.hold,
        "channels": list(p.channels), "joined_at": rfc3339(p.joined_at),
        "in_conference": bool(p.conference_sid) and p.conference_sid == r.conference_sid,
        "speaking": state.speaker == p.id, "hand_position": positions.get(p.id), "topic": p.topic,
    } for p in state.participants]
    return {"room": room, "participants": people, "last_event_id": state.last_event_id}


@bp.get("/rooms/<id:room>/queue")
@validate_response(QueueOut)
async def get_queue(room: str) -> dict[str, Any]:
    """The hand queue in order (positions, waits, sources, topics) and the speaker."""
    await _room(room)
    state = await _svc().queue.snapshot(room)
    hands = []
    for h in state.queue:
        p = state.participant(h.participant)
        hands.append({"participant": h.participant, "display_name": p.display_name if p else h.participant,
                      "position": h.position, "raised_at": rfc3339(h.raised_at), "wait_s": h.wait_s,
                      "source": h.source, "topic": p.topic if p else None, "kind": h.kind,
                      "reply_to": h.reply_to})
    return {"room": room, "hands": hands, "speaker": _speaker(state), "last_event_id": state.last_event_id}


@bp.get("/rooms/<id:room>/speaker")
@validate_response(SpeakerState)
async def get_speaker(room: str) -> dict[str, Any]:
    """Who speaks now, since when, over time or not, and the latest invitation to speak."""
    r = await _room(room)
    state = await _svc().queue.snapshot(room)
    since, limit = state.speaker_since, r.speak_limit_s
    inv = r.invitation
    invitation = None
    if inv is not None:
        p = state.participant(inv.participant)
        invitation = {"participant": inv.participant,
                      "display_name": p.display_name if p else inv.participant,
                      "status": inv.status, "invited_at": rfc3339(inv.invited_at),
                      "deadline": rfc3339(inv.deadline), "next": inv.next,
                      "answered_at": rfc3339(inv.answered_at) if inv.answered_at else None}
    return {"room": room, "speaker": _speaker(state), "invitation": invitation,
            "over_time": bool(limit and since and state.now >= since + limit * 1000),
            "last_event_id": state.last_event_id}


# --- the host's actions ------------------------------------------------------------------------


async def _outcome(result: ActionResult) -> dict[str, Any]:
    """200 for what happened; 409 with the dashboard's sentence for what it refused."""
    if result.ok:
        return {"ok": True, "message": result.message, "participant": result.participant}
    # HostControls says "Redis cannot be reached" as a refusal; the API says it as a 503.
    await _svc().redis.ping()
    raise ApiProblem(409, result.message, code="refused", ok=False, message=result.message,
                     participant=result.participant)


#: What each action does, for the OpenAPI document: (operation id, summary) by URL segment.
ROOM_ACTION_DOCS: dict[str, tuple[str, str]] = {
    "call-next": ("call_next", "Call on the first raised hand: unmute them, make them the speaker."),
    "done": ("done", "End the speaker's turn: mute them again."),
    "lower-all": ("lower_all_hands", "Lower every raised hand (undoable for 15 s)."),
    "undo-lower-all": ("undo_lower_all", "Bring back the hands the last lower-all took down, in "
                                         "the same order; 409 \"Nothing to undo\" after 15 s or "
                                         "once used."),
    "mute-all": ("mute_all", "Mute every caller except hosts; the speaker's turn ends."),
    "end": ("end_conference", "End the conference for everyone (the room stays open)."),
}
PARTICIPANT_ACTION_DOCS: dict[str, tuple[str, str]] = {
    "call-on": ("call_on", "Call on this participant (hand raised or not)."),
    "lower": ("lower_hand", "Lower their hand, as the host (they hear that it was lowered)."),
    "mute": ("mute", "Mute them."),
    "unmute": ("unmute", "Unmute them (without making them the speaker)."),
    "prompt": ("prompt", 'Ask them on the phone to "press star 1" to raise their hand.'),
    "remove": ("remove", "Take them out of the call (their call ends)."),
}


def _room_action_view(name: str, summary: str, act: RoomAction) -> Callable[[str], Awaitable[Any]]:
    async def view(room: str) -> dict[str, Any]:
        await _room(room)
        return await _outcome(await act(_svc().host, room))

    view.__name__ = f"post_{name}"
    view.__doc__ = summary
    return view


def _participant_action_view(name: str, summary: str,
                             act: ParticipantAction) -> Callable[[str, str], Awaitable[Any]]:
    async def view(room: str, pid: str) -> dict[str, Any]:
        await _participant(room, pid)
        return await _outcome(await act(_svc().host, room, pid))

    view.__name__ = f"post_{name}"
    view.__doc__ = summary
    return view


for _segment, (_name, _summary) in ROOM_ACTION_DOCS.items():
    _act = ROOM_ACTIONS[_segment]
    bp.add_url_rule(f"/rooms/<id:room>/{_segment}", f"post_{_name}", problems(409)(
        validate_response(Outcome)(_room_action_view(_name, _summary, _act))), methods=["POST"])
for _segment, (_name, _summary) in PARTICIPANT_ACTION_DOCS.items():
    _pact = PARTICIPANT_ACTIONS[_segment]
    bp.add_url_rule(f"/rooms/<id:room>/participants/<id:pid>/{_segment}", f"post_{_name}", problems(409)(
        validate_response(Outcome)(_participant_action_view(_name, _summary, _pact))), methods=["POST"])


@bp.post("/rooms/<id:room>/participants/<id:pid>/rename")
@validate_request(RenameIn)
@validate_response(Outcome)
@problems(400, 409, 415, 422)
async def post_rename(room: str, pid: str, data: RenameIn) -> dict[str, Any]:
    """Set the name the host and the queue show for them."""
    await _participant(room, pid)
    return await _outcome(await _svc().host.rename(room, pid, data.name))


@bp.put("/rooms/<id:room>/participants/<id:pid>/hand")
@validate_response(HandOutcome)
async def put_hand(room: str, pid: str) -> dict[str, Any]:
    """Raise their hand on their behalf (source "api"); raising again keeps their place."""
    await _participant(room, pid)
    svc = _svc()
    position, new = await svc.queue.raise_hand(room, pid, source="api")
    if new:
        await svc.host.announce(room, pid, "raised", position)  # they hear their place, as with *1
        log.info("room %s: hand of %s raised through the API (%s)", room, pid, _caller().name)
    message = f"Hand raised; they are number {position}." if new else \
        f"Their hand was already up; they are number {position}."
    return {"ok": True, "message": message, "participant": pid, "position": position, "newly_raised": new}


@bp.put("/rooms/<id:room>/participants/<id:pid>/reply")
@validate_response(HandOutcome)
@problems(409)
async def put_reply(room: str, pid: str) -> dict[str, Any]:
    """Raise their hand as a reply to the current speaker (their raised point becomes a reply);
    409 if nobody speaks or they are the speaker."""
    await _participant(room, pid)
    svc = _svc()
    try:
        position, new = await svc.queue.reply(room, pid, source="api")
    except Conflict as exc:
        return await _outcome(ActionResult(False, exc.message, pid))
    if new:
        await svc.host.announce(room, pid, "reply_raised", position)
        log.info("room %s: reply of %s raised through the API (%s)", room, pid, _caller().name)
    message = f"Reply raised; they are number {position}." if new else \
        f"Their reply was already up; they are number {position}."
    return {"ok": True, "message": message, "participant": pid, "position": position,
            "newly_raised": new, "kind": "reply"}


@bp.delete("/rooms/<id:room>/participants/<id:pid>/hand")
@validate_response(Outcome)
@problems(409)
async def delete_hand(room: str, pid: str) -> dict[str, Any]:
    """Lower their hand on their behalf (by "api")."""
    await _participant(room, pid)
    svc = _svc()
    if not await svc.queue.lower_hand(room, pid, by="api"):
        return await _outcome(ActionResult(False, "Their hand was not raised.", pid))
    await svc.host.announce(room, pid, "lowered")
    return {"ok": True, "message": "Hand lowered.", "participant": pid}


# --- events -------------------------------------------------------------------------------------


@bp.get("/rooms/<id:room>/events")
@validate_querystring(EventsQuery)
@validate_response(EventPage)
@problems(400)
async def get_events(room: str, query_args: EventsQuery) -> dict[str, Any]:
    """A page of the room's events after ``after`` (for clients that cannot hold a stream)."""
    await _room(room)
    redis = _svc().redis
    after = query_args.after or "0-0"
    events = await read_events(redis, room, after, count=query_args.limit)
    reset = False
    if after != "0-0":
        # Older than the oldest event kept: some after it may have been trimmed away.
        first = await redis.xrange(key(room, "events"), min="-", max="+", count=1)
        reset = bool(first) and parse_id(first[0][0]) > parse_id(after)
    seen: dict[str, dict[str, Any]] = {}  # names of who joined earlier in the page, if they left
    return {"room": room, "events": [await describe_event(redis, e, seen=seen) for e in events],
            "last_id": events[-1].id if events else after, "more": len(events) == query_args.limit,
            "reset": reset}


def _stream_doc(view: Callable[..., Any]) -> Callable[..., Any]:
    setattr(view, RESPONSES_ATTR, {200: {
        "description": "Server-sent events: `event:` is the type, `id:` the event id, `data:` the "
                       "event as JSON (as in the JSON page); `stream_reset` means reload the state.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }})
    return view


@bp.get("/rooms/<id:room>/events/stream")
@_stream_doc
@validate_querystring(StreamQuery)
@problems(400)
async def get_event_stream(room: str, query_args: StreamQuery) -> Response:
    """The room's events as server-sent events; ``Last-Event-ID`` (or ``after``) resumes."""
    await _room(room)
    last = request.headers.get("Last-Event-ID") or query_args.after
    if last is not None and not is_valid_id(last):
        last = None
    body = stream_with_context(_event_stream)(_svc(), room, last)
    response = Response(body, content_type="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    response.timeout = None  # a live stream, not a slow response
    return response


async def _event_stream(svc: Services, room: str, after: str | None) -> AsyncIterator[str]:
    yield sse_comment("events") + f"retry: {RETRY_MS}\n\n"
    seen: dict[str, dict[str, Any]] = {}  # who was described already, for those who leave
    try:
        async with svc.hub.subscribe(room, after=after) as sub:
            while True:
                try:
                    event = await asyncio.wait_for(sub.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield sse_comment()
                    continue
                if event.type == RESET:
                    yield sse(json.dumps({"type": "stream_reset", "room": room, "after": event.id}),
                              event="stream_reset")
                    continue
                payload = await describe_event(svc.redis, event, seen=seen)
                yield sse(json.dumps(payload, separators=(",", ":")), event=payload["type"], id=event.id)
    except SubscriptionLagged:
        log.info("room %s: an API event stream fell behind; it will reconnect", room)
    except REDIS_ERRORS as exc:
        log.warning("room %s: API event stream stopped (%s)", room, exc)
        yield sse(json.dumps({"type": "unavailable", "room": room}), event="unavailable")

