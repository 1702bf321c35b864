"""HTTP face of the emulator: the Twilio REST subset and the ``/sim`` control API.

REST shapes follow TWILIO.md §4: HTTP Basic auth, form-encoded params, snake_case JSON
bodies, the legacy error body ``{code, message, more_info, status}``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from quart import Blueprint, Quart, Response, request
from werkzeug.datastructures import MultiDict

from handraise.sim.engine import (
    API_VERSION,
    Call,
    Conference,
    Engine,
    Participant,
    Transfer,
    rfc2822,
)

CONFERENCE_SID = re.compile(r"^CF[0-9a-fA-F]{32}$")
ERROR_MESSAGES = {20001: "Invalid parameter", 20003: "Authenticate", 20404: "Not Found"}

Handler = Callable[..., Awaitable[Any]]


class RestError(Exception):
    def __init__(self, status: int, code: int, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.detail = status, code, message, detail


def error_response(exc: RestError) -> Response:
    body: dict[str, Any] = {"code": exc.code, "message": exc.message,
                            "more_info": f"https://www.twilio.com/docs/errors/{exc.code}",
                            "status": exc.status}
    if exc.detail is not None:
        body["detail"] = exc.detail
    return Response(json.dumps(body), status=exc.status, content_type="application/json")


def json_response(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def not_found() -> RestError:
    return RestError(404, 20404, f"The requested resource {request.path} was not found")


def _bool(value: str | None) -> bool:
    # §4.1: anything other than "true" counts as false.
    return (value or "").strip().lower() == "true"


def rest_blueprint(engine: Engine) -> Blueprint:
    """``/2010-04-01/Accounts/{AccountSid}/…`` routes backed by ``engine``."""
    bp = Blueprint("twilio_rest", __name__, url_prefix="/2010-04-01/Accounts/<account_sid>")
    account = engine.config.account_sid
    base = f"/{API_VERSION}/Accounts/{account}"

    pending: set[asyncio.Task[Any]] = set()  # slow requests being applied

    def authed(handler: Handler) -> Handler:
        @wraps(handler)
        async def wrapper(account_sid: str, **kwargs: Any) -> Any:
            delay = engine.config.rest_delay_s
            if delay <= 0:
                return await handle(account_sid, **kwargs)
            engine.emit("rest-delayed", None, method=request.method, path=request.path,
                        delay_s=delay)
            if math.isinf(delay):
                await asyncio.Event().wait()  # hung: only the client giving up ends it
            await request.form  # read now: the client may be gone when it is applied

            async def later() -> Any:
                await asyncio.sleep(delay)
                return await handle(account_sid, **kwargs)

            # Slow, as Twilio can be: the request is applied, late, even if the client
            # gave up waiting (the shield keeps the client's disconnect from cancelling it).
            task = asyncio.ensure_future(later())
            pending.add(task)
            task.add_done_callback(pending.discard)
            return await asyncio.shield(task)

        async def handle(account_sid: str, **kwargs: Any) -> Any:
            try:
                _check_auth()
                if account_sid != account:
                    raise not_found()
                response = await handler(**kwargs)
            except RestError as exc:
                response = error_response(exc)
            engine.emit("rest", None, method=request.method, path=request.path,
                        params=dict((await request.form).items()),
                        status=response.status_code)
            return response

        return wrapper

    def _check_auth() -> None:
        header = request.headers.get("Authorization", "")
        ok = False
        if header.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                ok = user == account and password == engine.config.auth_token
            except (ValueError, UnicodeDecodeError):
                ok = False
        if not ok:
            raise RestError(401, 20003, "Authenticate",
                            detail="Your AccountSid or AuthToken was incorrect.")

    # ---------------------------------------------------------------- JSON shapes
    def call_json(call: Call) -> dict[str, Any]:
        duration = None
        if call.start_time and call.end_time:
            duration = str(int((call.end_time - call.start_time).total_seconds()))
        uri = f"{base}/Calls/{call.sid}.json"
        return {
            "sid": call.sid, "date_created": rfc2822(call.date_created),
            "date_updated": rfc2822(call.date_updated), "parent_call_sid": None,
            "account_sid": account, "to": call.to, "to_formatted": call.to,
            "from": call.from_, "from_formatted": call.from_, "phone_number_sid": None,
            "status": call.status,
            "start_time": rfc2822(call.start_time) if call.start_time else None,
            "end_time": rfc2822(call.end_time) if call.end_time else None,
            "duration": duration, "price": None, "price_unit": "USD",
            "direction": call.direction, "answered_by": None, "api_version": API_VERSION,
            "forwarded_from": None, "group_sid": None, "caller_name": None,
            "queue_time": "0", "trunk_sid": None, "uri": uri,
            "subresource_uris": {"streams": f"{base}/Calls/{call.sid}/Streams.json"},
        }

    def conference_json(conf: Conference) -> dict[str, Any]:
        uri = f"{base}/Conferences/{conf.sid}.json"
        return {
            "account_sid": account, "date_created": rfc2822(conf.date_created),
            "date_updated": rfc2822(conf.date_updated), "api_version": API_VERSION,
            "friendly_name": conf.friendly_name, "region": "us1", "sid": conf.sid,
            "status": conf.status, "uri": uri,
            "subresource_uris": {
                "participants": f"{base}/Conferences/{conf.sid}/Participants.json",
                "recordings": f"{base}/Conferences/{conf.sid}/Recordings.json"},
            "reason_conference_ended": conf.reason_ended,
            "call_sid_ending_conference": conf.call_sid_ending,
        }

    def participant_json(p: Participant) -> dict[str, Any]:
        conf = p.conference
        return {
            "account_sid": account, "call_sid": p.call.sid, "label": p.label,
            "conference_sid": conf.sid, "date_created": rfc2822(p.date_created),
            "date_updated": rfc2822(p.date_updated),
            "end_conference_on_exit": p.end_conference_on_exit, "muted": p.muted,
            "hold": p.hold, "status": p.status,
            "start_conference_on_enter": p.start_conference_on_enter, "coaching": False,
            "call_sid_to_coach": None, "queue_time": None,
            "uri": f"{base}/Conferences/{conf.sid}/Participants/{p.call.sid}.json",
        }

    def page(items: list[dict[str, Any]], key: str, uri: str) -> dict[str, Any]:
        page_size = min(int(request.args.get("PageSize", "50") or 50), 1000)
        number = int(request.args.get("Page", "0") or 0)
        start = number * page_size
        chunk = items[start:start + page_size]
        query = [(k, v) for k, v in request.args.items(multi=True)
                 if k not in ("Page", "PageSize", "PageToken")]

        def link(n: int) -> str:
            return uri + "?" + urlencode([*query, ("PageSize", page_size), ("Page", n)])

        return {
            key: chunk, "first_page_uri": link(0),
            "next_page_uri": link(number + 1) if start + page_size < len(items) else None,
            "previous_page_uri": link(number - 1) if number > 0 else None,
            "page": number, "page_size": page_size, "start": start,
            "end": start + max(len(chunk) - 1, 0), "uri": link(number),
        }

    # ---------------------------------------------------------------- lookups
    def find_call(sid: str) -> Call:
        call = engine.calls.get(sid)
        if call is None:
            raise not_found()
        return call

    def find_conference(sid: str) -> Conference:
        conf = engine.conferences.get(sid) if CONFERENCE_SID.match(sid) else None
        if conf is None:
            raise not_found()
        return conf

    def find_participant(conf: Conference, sid_or_label: str) -> Participant:
        # §4.1: the path takes the CallSid or the participant's label.
        p = conf.participants.get(sid_or_label)
        if p is None:
            p = next((q for q in conf.participants.values() if q.label == sid_or_label), None)
        if p is None:
            raise not_found()
        return p

    async def form() -> MultiDict[str, str]:
        return await request.form

    # ---------------------------------------------------------------- Calls
    @bp.get("/Calls.json")
    @authed
    async def get_calls() -> Response:
        calls = [c for c in engine.calls.values()
                 if request.args.get("Status") in (None, c.status)]
        return json_response(page([call_json(c) for c in calls], "calls", f"{base}/Calls.json"))

    @bp.get("/Calls/<sid>.json")
    @authed
    async def get_call(sid: str) -> Response:
        return json_response(call_json(find_call(sid)))

    @bp.post("/Calls/<sid>.json")
    @authed
    async def post_call(sid: str) -> Response:
        call = find_call(sid)
        params = await form()
        status = params.get("Status")
        url, twiml = params.get("Url"), params.get("Twiml")
        if url and twiml:
            raise RestError(400, 20001, "Url and Twiml are mutually exclusive")
        if status in ("completed", "canceled"):
            if engine.is_live(call):
                await engine.hang_up(call.sid, status="completed" if call.status ==
                                     "in-progress" else status)
        elif status:
            raise RestError(400, 20001, f"Invalid Status {status!r}")
        elif url or twiml:
            if not engine.is_live(call):
                # Twilio: a completed call cannot be redirected (21220).
                raise RestError(400, 21220, "Call is not in-progress. Cannot redirect.")
            await engine.redirect(call, Transfer(url or "", params.get("Method", "POST"),
                                                 twiml=twiml, purpose="rest-redirect"))
        call.date_updated = datetime.now(UTC)
        return json_response(call_json(call))

    @bp.post("/Calls/<sid>/Streams.json")
    @authed
    async def post_stream(sid: str) -> Response:
        from handraise.sim.media import start_stream

        call = find_call(sid)
        params = await form()
        url = params.get("Url")
        if not url:
            raise RestError(400, 20001, "Missing required parameter Url in the post body")
        if not engine.is_live(call):
            # 21220 "a realtime operation on a Call that was not in-progress" [the code for
            # Streams specifically is UNCONFIRMED]: no stream for a call that has ended.
            raise RestError(400, 21220, "Call is not in-progress. Cannot create a stream.")
        custom = {}
        for i in range(1, 100):
            name = params.get(f"Parameter{i}.Name")
            if name:
                custom[name] = params.get(f"Parameter{i}.Value", "")
        stream = await start_stream(
            engine, call, url=url, name=params.get("Name"),
            track=params.get("Track", "inbound_track"), params=custom,
            status_callback=params.get("StatusCallback"),
            status_callback_method=params.get("StatusCallbackMethod", "POST"))
        return json_response(stream.resource(account), status=201)

    @bp.post("/Calls/<sid>/Streams/<stream>.json")
    @authed
    async def post_stream_stop(sid: str, stream: str) -> Response:
        from handraise.sim.media import find_stream

        call = find_call(sid)
        params = await form()
        if params.get("Status") != "stopped":
            raise RestError(400, 20001, "Status must be 'stopped'")
        found = find_stream(call, stream)
        if found is None:
            raise not_found()
        await found.stop()
        return json_response(found.resource(account))

    # ---------------------------------------------------------------- Conferences
    @bp.get("/Conferences.json")
    @authed
    async def get_conferences() -> Response:
        name, status = request.args.get("FriendlyName"), request.args.get("Status")
        items = [conference_json(c) for c in sorted(engine.conferences.values(),
                                                     key=lambda c: c.date_created,
                                                     reverse=True)
                 if name in (None, c.friendly_name) and status in (None, c.status)]
        return json_response(page(items, "conferences", f"{base}/Conferences.json"))

    @bp.get("/Conferences/<sid>.json")
    @authed
    async def get_conference(sid: str) -> Response:
        return json_response(conference_json(find_conference(sid)))

    @bp.post("/Conferences/<sid>.json")
    @authed
    async def post_conference(sid: str) -> Response:
        conf = find_conference(sid)
        params = await form()
        status = params.get("Status")
        if status is not None and status != "completed":
            raise RestError(400, 20001, f"Invalid Status {status!r}")
        if params.get("AnnounceUrl") and conf.status != "completed":
            engine.announce(conf, params["AnnounceUrl"], params.get("AnnounceMethod", "POST"))
        if status == "completed":
            engine.end_conference(conf, "conference-ended-via-api")
        return json_response(conference_json(conf))

    @bp.get("/Conferences/<sid>/Participants.json")
    @authed
    async def get_participants(sid: str) -> Response:
        conf = find_conference(sid)
        items = [participant_json(p) for p in conf.participants.values()
                 if all(request.args.get(k) in (None, str(v).lower()) for k, v in
                        (("Muted", p.muted), ("Hold", p.hold), ("Coaching", False)))]
        return json_response(page(items, "participants",
                                  f"{base}/Conferences/{conf.sid}/Participants.json"))

    @bp.get("/Conferences/<sid>/Participants/<call_sid>.json")
    @authed
    async def get_participant(sid: str, call_sid: str) -> Response:
        conf = find_conference(sid)
        return json_response(participant_json(find_participant(conf, call_sid)))

    @bp.post("/Conferences/<sid>/Participants/<call_sid>.json")
    @authed
    async def post_participant(sid: str, call_sid: str) -> Response:
        conf = find_conference(sid)
        p = find_participant(conf, call_sid)
        params = await form()
        if "Muted" in params:
            engine.set_muted(p, _bool(params["Muted"]))
        if "Hold" in params:
            engine.set_hold(p, _bool(params["Hold"]), params.get("HoldUrl"),
                            params.get("HoldMethod", "GET"))
        modified = False
        if "EndConferenceOnExit" in params:
            p.end_conference_on_exit = _bool(params["EndConferenceOnExit"])
            modified = True
        if "BeepOnExit" in params:
            p.beep = "true" if _bool(params["BeepOnExit"]) else "false"
            modified = True
        if "WaitUrl" in params:
            p.wait_url = params["WaitUrl"]
            modified = True
        if modified:
            engine.conference_event(conf, "participant-modify", p)
        if params.get("AnnounceUrl"):
            engine.announce(conf, params["AnnounceUrl"], params.get("AnnounceMethod", "POST"),
                            participant=p)
        return json_response(participant_json(p))

    @bp.delete("/Conferences/<sid>/Participants/<call_sid>.json")
    @authed
    async def delete_participant(sid: str, call_sid: str) -> Response:
        conf = find_conference(sid)
        p = find_participant(conf, call_sid)
        # Kick: the call leaves and goes on with the verb after <Dial> [UNCONFIRMED reason
        # value; §3.3 lists no "kicked" ReasonParticipantLeft].
        engine.leave(p, "participant_updated_via_api", kicked=True)
        return Response("", status=204)

    return bp


def control_blueprint(engine: Engine) -> Blueprint:
    """``/sim/…``: place calls, press keys, speak, hang up, read state and events."""
    bp = Blueprint("sim_control", __name__, url_prefix="/sim")

    async def body() -> dict[str, Any]:
        data = await request.get_json(silent=True)
        if isinstance(data, dict):
            return data
        return dict((await request.form).items())

    def call_or_404(sid: str) -> Call | Response:
        call = engine.calls.get(sid)
        if call is None:
            return json_response({"error": f"no call {sid}"}, 404)
        return call

    @bp.get("/health")
    async def get_health() -> Response:
        return json_response({"ok": True, "account_sid": engine.config.account_sid})

    @bp.post("/calls")
    async def post_calls() -> Response:
        data = await body()
        call = engine.place_call(str(data.get("from", "+15550100001")),
                                 str(data.get("to", "+15550109999")),
                                 voice_url=data.get("voice_url"))
        return json_response({"sid": call.sid, "call": engine.call_state(call)}, 201)

    @bp.get("/calls")
    async def get_calls() -> Response:
        return json_response([engine.call_state(c) for c in engine.calls.values()])

    @bp.get("/calls/<sid>")
    async def get_call(sid: str) -> Response:
        call = call_or_404(sid)
        return call if isinstance(call, Response) else json_response(engine.call_state(call))

    @bp.post("/calls/<sid>/digits")
    async def post_digits(sid: str) -> Response:
        call = call_or_404(sid)
        if isinstance(call, Response):
            return call
        try:
            engine.press(call, str((await body()).get("digits", "")))
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)
        return json_response(engine.call_state(call))

    @bp.post("/calls/<sid>/speech")
    async def post_speech(sid: str) -> Response:
        call = call_or_404(sid)
        if isinstance(call, Response):
            return call
        engine.speak(call, float((await body()).get("duration_ms", 1500)))
        return json_response(engine.call_state(call))

    @bp.post("/calls/<sid>/hangup")
    async def post_hangup(sid: str) -> Response:
        call = call_or_404(sid)
        if isinstance(call, Response):
            return call
        await engine.hang_up(call.sid)
        return json_response(engine.call_state(call))

    @bp.get("/conferences")
    async def get_conferences() -> Response:
        return json_response([
            {"sid": c.sid, "friendly_name": c.friendly_name, "status": c.status,
             "reason_ended": c.reason_ended,
             "participants": [{"call_sid": p.call.sid, "label": p.label, "muted": p.muted,
                               "hold": p.hold} for p in c.participants.values()]}
            for c in engine.conferences.values()])

    @bp.get("/events")
    async def get_events() -> Response:
        after = int(request.args.get("after", "0") or 0)
        return json_response([e.as_dict() for e in engine.events if e.seq > after])

    @bp.get("/events/stream")
    async def get_event_stream() -> Response:
        after = int(request.headers.get("Last-Event-ID", request.args.get("after", "0")) or 0)

        async def feed() -> AsyncIterator[bytes]:
            queue = engine.subscribe()
            try:
                for event in [e for e in engine.events if e.seq > after]:
                    yield _sse(event.seq, event.kind, event.as_dict())
                while True:
                    try:
                        event = await asyncio.wait_for(queue.get(), 15.0)
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    if event.seq > after:
                        yield _sse(event.seq, event.kind, event.as_dict())
            finally:
                engine.unsubscribe(queue)

        response = Response(feed(), content_type="text/event-stream")
        response.headers["Cache-Control"] = "no-cache"
        response.timeout = None
        return response

    return bp


def _sse(seq: int, kind: str, data: dict[str, Any]) -> bytes:
    return f"id: {seq}\nevent: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def create_sim_app(engine: Engine) -> Quart:
    app = Quart("handraise.sim")
    app.register_blueprint(rest_blueprint(engine))
    app.register_blueprint(control_blueprint(engine))
    return app
