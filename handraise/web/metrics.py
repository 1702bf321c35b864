"""``GET /metrics`` (Prometheus text format) and the request timing behind it.

Who may read it is the setting ``HANDRAISE_METRICS``: ``local`` (default) answers only
requests from this machine that did not come through a proxy (no ``X-Forwarded-For`` or
``Forwarded`` header), ``host`` a signed-in host or any API bearer token, ``off`` nobody
(404). Counters and histograms are the sums of every process (:mod:`handraise.metrics`);
gauges are read from Redis when scraped. Like ``/healthz`` it stays cheap: one hash read
and one pipeline over the open rooms.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import Any

from quart import Blueprint, Response, abort, current_app, g, request
from quart_auth import current_user

from ..app import services
from ..events import REDIS_ERRORS
from ..metrics import FLUSH_S, app_metrics, render
from ..rooms import list_rooms
from ..store import global_key, key
from ..tokens import authenticate

log = logging.getLogger(__name__)

bp = Blueprint("metrics", __name__)

#: A process's stream count older than this is not counted (the process is gone).
STREAMS_FRESH_S = 3 * FLUSH_S
_ME = f"{socket.gethostname()}:{os.getpid()}"


def _group() -> str:
    endpoint = request.endpoint or ""
    if endpoint.startswith("voice."):
        return "voice"
    blueprint = endpoint.split(".", 1)[0] if "." in endpoint else endpoint
    return {"host": "host", "auth": "host", "participant": "participant", "api": "api",
            "static": "static"}.get(blueprint, "other")


@bp.before_app_request
async def _started() -> None:
    g.handraise_started = time.perf_counter()


@bp.after_app_request
async def _answered(response: Response) -> Response:
    started = g.get("handraise_started")
    if started is not None:
        group = _group()
        metrics = app_metrics(current_app)
        metrics.observe("handraise_http_request_seconds", time.perf_counter() - started, group=group)
        metrics.count("handraise_http_requests_total", group=group, status=f"{response.status_code // 100}xx")
    return response


def _streams_here() -> int:
    hub = current_app.extensions.get("handraise_media")
    bank = getattr(hub, "bank", None)
    return int(getattr(bank, "streams", 0))


async def _flush() -> None:
    redis = services(current_app).redis
    await app_metrics(current_app).flush(redis)
    await redis.hset(global_key("metrics", "streams"), _ME, f"{_streams_here()} {time.time():.0f}")


class _RedisErrorCounter(logging.Handler):
    """Counts the log lines that report a Redis error (every degraded path logs one), by
    the module that logged it: the count needs no hook in each of those paths."""

    def __init__(self, app: Any) -> None:
        super().__init__(logging.DEBUG)
        self.app = app

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if any(isinstance(a, REDIS_ERRORS) for a in args) or (
                record.exc_info and isinstance(record.exc_info[1], REDIS_ERRORS)):
            where = record.name.removeprefix("handraise.")
            app_metrics(self.app).count("handraise_redis_errors_total", where=where)


@bp.before_app_serving
async def _start_flushing() -> None:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    counter = _RedisErrorCounter(app)
    logging.getLogger("handraise").addHandler(counter)
    app.extensions["handraise_metrics_log"] = counter

    async def loop() -> None:
        while "handraise" in app.extensions:
            await asyncio.sleep(FLUSH_S)
            if "handraise" not in app.extensions:
                return  # the app is stopping: its own shutdown flushes the last counts
            try:
                async with app.app_context():
                    await _flush()
            except REDIS_ERRORS as exc:
                log.debug("metrics: flush postponed, redis unavailable: %r", exc)

    app.extensions["handraise_metrics_task"] = asyncio.ensure_future(loop())


@bp.after_app_serving
async def _stop_flushing() -> None:
    counter = current_app.extensions.pop("handraise_metrics_log", None)
    if counter is not None:
        logging.getLogger("handraise").removeHandler(counter)
    task = current_app.extensions.pop("handraise_metrics_task", None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, RuntimeError):
            await task
    # The app's own shutdown (handraise.app) flushes the last counts before Redis closes.


async def _allowed(mode: str) -> bool:
    if mode == "local":
        forwarded = "X-Forwarded-For" in request.headers or "Forwarded" in request.headers
        return not forwarded and (request.remote_addr or "") in {"127.0.0.1", "::1", "localhost"}
    if await current_user.is_authenticated and (current_user.auth_id or "").startswith("host:"):
        return True
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return await authenticate(services(current_app).redis, auth[7:].strip()) is not None
    return False


@bp.get("/metrics")
async def get_metrics() -> Any:
    """Counters, histograms and gauges in Prometheus' text format."""
    svc = services(current_app)
    mode = svc.settings.metrics_access
    if mode == "off":
        abort(404)
    if not await _allowed(mode):
        return Response("Metrics are readable from this machine only (HANDRAISE_METRICS=local), "
                        "or by a signed-in host or an API token (HANDRAISE_METRICS=host).\n",
                        status=403, content_type="text/plain; charset=utf-8")
    redis = svc.redis
    try:
        await _flush()
        totals = await redis.hgetall(global_key("metrics"))
        rooms = await list_rooms(redis)
        async with redis.pipeline(transaction=False) as pipe:
            for room in rooms:
                pipe.scard(key(room.id, "participants"))
                pipe.zcard(key(room.id, "hands"))
                pipe.xinfo_stream(key(room.id, "events"))
            counts: list[Any] = await pipe.execute(raise_on_error=False) if rooms else []
        per_process = await redis.hgetall(global_key("metrics", "streams"))
    except REDIS_ERRORS as exc:
        log.warning("metrics: redis unavailable: %r", exc)
        return Response("Redis is unavailable: no metrics until it is back.\n", status=503,
                        content_type="text/plain; charset=utf-8", headers={"Retry-After": "5"})
    participants = sum(c for c in counts[0::3] if isinstance(c, int))
    hands = sum(c for c in counts[1::3] if isinstance(c, int))
    events = 0
    for info in counts[2::3]:
        if isinstance(info, dict):  # entries-added: every entry ever written (Redis 7)
            events += int(info.get("entries-added") or info.get("length") or 0)
    now, streams = time.time(), 0
    for field, value in per_process.items():
        count, _, at = str(value).partition(" ")
        if now - float(at or 0) <= STREAMS_FRESH_S:
            streams += int(count)
        else:
            await redis.hdel(global_key("metrics", "streams"), field)
    body = render(totals, [
        ("handraise_rooms_open", "gauge", "Open rooms.", len(rooms)),
        ("handraise_participants", "gauge", "Participants in open rooms.", participants),
        ("handraise_hands_raised", "gauge", "Hands up in open rooms.", hands),
        ("handraise_media_streams", "gauge", "Media streams open in all processes.", streams),
        ("handraise_room_events_total", "counter", "Events written by the open rooms "
         "(rate() gives events per second).", events),
    ])
    return Response(body, content_type="text/plain; version=0.0.4; charset=utf-8")
