"""Schemathesis over the served JSON API: every operation of the OpenAPI document, called
over HTTP with a token against a real Redis; no 5xx, no answer outside its documented
statuses, content types, headers and schemas."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import hypothesis.strategies as st
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import HttpBearerAuthConfig
from webkit import settings as app_settings

from handraise.app import create_app
from handraise.errors import HandraiseError
from handraise.queue import Queue
from handraise.rooms import ROOM_SETTINGS, clean_name, create_room
from handraise.sim import ServedApp
from handraise.store import client_from_url
from handraise.tokens import create_token
from handraise.web.api import ID_PATTERN

#: Examples per operation and phase: enough to cross every status an operation documents,
#: few enough that the whole run stays well under a minute on two cores.
MAX_EXAMPLES = 30


@dataclass
class Target:
    base_url: str
    token: str


@pytest.fixture(scope="module")
def target(redis_server: str) -> Iterator[Target]:
    """The app served by hypercorn in a thread of its own (schemathesis calls it synchronously)."""
    loop = asyncio.new_event_loop()
    ready: Future[Target] = Future()
    stop = asyncio.Event()

    async def serve() -> None:
        redis = client_from_url(redis_server)
        try:
            await redis.flushall()
            app = create_app(app_settings(), redis=redis)
            async with ServedApp(app, health_path="/healthz") as served:
                secret, _ = await create_token(redis, "schemathesis", rate_per_min=100_000)
                queue = Queue(redis)
                for name, pool in (("Alpha", KEPT), ("Beta", KEPT), ("Gamma", SPENT), ("Delta", SPENT)):
                    room = (await create_room(redis, name)).room.id
                    for n in range(4):
                        pid = await queue.join(room, number=f"+1555010{n:04d}")
                        pool.append((room, pid))
                        if n % 2:
                            await queue.raise_hand(room, pid, source="keypad")
                # The token is the "bearer" scheme's credential: schemathesis sends it as
                # auth (and checks that the API refuses requests without it), not as data.
                schema.config.auth.openapi.schemes["bearer"] = HttpBearerAuthConfig(bearer=secret)
                ready.set_result(Target(served.base_url, secret))
                await stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise
        finally:
            await redis.aclose()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        yield ready.result(timeout=30)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        loop.close()


def _document() -> dict[str, Any]:
    """The app's OpenAPI document, built without serving (the served one is compared below)."""
    app = create_app(app_settings())
    return dict(app.extensions["QUART_SCHEMA"].openapi_provider.schema())


#: (room, participant) pairs that exist in the served app, filled in by the ``target``
#: fixture: those the run keeps, and those that closing and removing may use up.
KEPT: list[tuple[str, str]] = []
SPENT: list[tuple[str, str]] = []
DESTRUCTIVE = ("/close", "/remove")


schema = schemathesis.openapi.from_dict(_document(), config=schemathesis.Config.from_dict({
    "generation": {"max-examples": MAX_EXAMPLES},
    "request-timeout": 10,
}))


@schema.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> Any:
    # Mostly a room and participant that exist (together), so operations get past their
    # 404; sometimes the generated ids. Closing and removing get ids of their own.
    valid = re.compile(ID_PATTERN)
    if not path_parameters or not all(isinstance(v, str) and valid.match(v)
                                      for v in path_parameters.values()):
        return st.just(path_parameters)  # no ids, or a negative case: leave it as generated
    pool = SPENT if context.operation.path.endswith(DESTRUCTIVE) else KEPT
    real = [{"room": room, "pid": pid} for room, pid in pool]
    return st.sampled_from([path_parameters, *real]).map(
        lambda chosen: {name: chosen[name] for name in path_parameters})


@schema.hook
def filter_body(context: Any, body: Any) -> bool:
    # Room names: the domain also refuses control and format characters (422), which JSON
    # Schema cannot describe; leave those out of the generated bodies.
    if context.operation.path in ("/api/v1/rooms", "/api/v1/rooms/{room}") \
            and isinstance(body, dict) and isinstance(body.get("name"), str):
        try:
            clean_name(body["name"])
        except HandraiseError:
            return False
    return True


#: Keys settings -> the key their default ends in (all different: *1, *2, *3, *0, *5 ...).
KEYS_ENDING = {s.name: str(s.default)[-1] for s in ROOM_SETTINGS if s.kind == "keys"}


@schema.hook
def map_body(context: Any, body: Any) -> Any:
    # Keys: the domain refuses two commands sharing keys (422), across the body and the
    # room's present settings, which JSON Schema cannot describe. Each setting keeps the key
    # its default ends in (any prefix), so two settings can never meet.
    if isinstance(body, dict):
        for name, last in KEYS_ENDING.items():
            value = body.get(name)
            if isinstance(value, str) and re.fullmatch(r"[*#]?[0-9A-D]", value):
                body = {**body, name: value[:-1] + last}
    return body


# The event stream never ends, so schemathesis cannot call it; test_api.py reads it.
@pytest.mark.slow
@schema.exclude(path_regex=r"/events/stream$").parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_its_schema_says(case: Any, target: Target) -> None:
    case.call_and_validate(base_url=target.base_url)


def test_the_served_document_is_the_one_tested(target: Target) -> None:
    import httpx

    served = httpx.get(target.base_url + "/api/v1/openapi.json", timeout=10).json()
    assert served == json.loads(json.dumps(_document()))
    assert len(served["paths"]) >= 20
