"""Live pages over server-sent events: room events in, rendered fragments out.

A page opens one stream (``sse-connect``). The stream sends fragments, one SSE event name
per partial (the name equals the partial's), each carrying the whole partial rendered from
a fresh snapshot of the room, with the id of the last event it reflects. So a page never
applies deltas: after any drop it reconnects with ``Last-Event-ID`` and, if anything changed
meanwhile, gets the current partials once; if nothing changed, nothing is re-sent. A stream
sends only the partials whose HTML changed since it last sent them.

A process reads each room state once per change and shares it among its open streams, and
renders each kind of page once per state (:class:`FragmentCache`): every host dashboard of a
room shares one rendering, and its SSE messages, encoded once (:class:`Rendering`); each
linked caller's page is its own kind. A stream renders at most every :data:`MIN_GAP_S`: in a
busy room, changes that come closer together go out as one update, the state after the last
of them (bench/meeting.py, 250 callers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from quart import Quart, Response, request, stream_with_context

from ..events import (
    REDIS_ERRORS,
    RESET,
    EventHub,
    SubscriptionLagged,
    is_valid_id,
    parse_id,
    sse,
    sse_comment,
)
from ..queue import Queue, RoomState
from ..rooms import Room, get_room

log = logging.getLogger(__name__)

Fragments = list[tuple[str, str]]


@dataclass(frozen=True)
class Live:
    """One consistent look at a room: its live state and its settings."""

    state: RoomState
    room: Room

    @property
    def event_id(self) -> str:
        return self.state.last_event_id


#: Render a room's state into (event name, HTML) pairs.
Renderer = Callable[[Live], Awaitable[Fragments]]

KEEPALIVE_S = 15.0
#: A stream renders a room at most this often: changes closer together (a busy 250-caller
#: room makes several a second) are sent together, as the state after the last of them.
MIN_GAP_S = 0.25
RETRY_MS = 1000

V = TypeVar("V")


class _Latest(Generic[V]):
    """The newest value per key, computed once however many ask at the same time.

    Bounded: past ``size`` keys the least recently stored goes (a page whose entry went
    simply computes it again), so rooms and callers long gone do not pile up.
    """

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[str, ...], tuple[str, asyncio.Future[tuple[str, V]]]] = \
            OrderedDict()

    def _store(self, k: tuple[str, ...], value: tuple[str, asyncio.Future[tuple[str, V]]]) -> None:
        self._entries[k] = value
        self._entries.move_to_end(k)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    async def get(self, k: tuple[str, ...], at_least: str | None,
                  compute: Callable[[], Awaitable[tuple[str, V]]]) -> tuple[str, V]:
        """The cached value if it reflects event ``at_least`` or later; ``None``: always afresh."""
        entry = self._entries.get(k)
        if entry is not None and at_least is not None and parse_id(entry[0]) >= parse_id(at_least):
            with contextlib.suppress(Exception):  # a shared failure: compute afresh below
                return await asyncio.shield(entry[1])
        future = asyncio.ensure_future(compute())
        self._store(k, (at_least or "0-0", future))
        try:
            result = await asyncio.shield(future)
        except Exception:
            if self._entries.get(k, (None, None))[1] is future:
                del self._entries[k]
            raise
        if self._entries.get(k, (None, None))[1] is future:
            self._store(k, (result[0], future))
        return result

    def forget(self, prefix: str) -> None:
        for k in [k for k in self._entries if k[0] == prefix]:
            del self._entries[k]


@dataclass(frozen=True)
class Rendering:
    """One page kind's fragments for one room state, with each fragment's SSE message.

    The messages are encoded once, for every stream that sends them: an update of a
    250-caller dashboard is some 500 kB of HTML, and splitting it into ``data:`` lines for
    each of 20 dashboards took more of the process than rendering it (bench/meeting.py).
    """

    event_id: str
    fragments: Fragments
    messages: tuple[bytes, ...]

    @classmethod
    def of(cls, event_id: str, fragments: Fragments) -> Rendering:
        return cls(event_id, fragments,
                   tuple(sse(html, event=name, id=event_id).encode() for name, html in fragments))


class FragmentCache:
    """Room snapshots and rendered fragments, shared by a process's open streams."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self._looks: _Latest[Live] = _Latest()
        self._renders: _Latest[Rendering] = _Latest()

    async def look(self, room: str, at_least: str | None = None) -> Live:
        """A snapshot of ``room`` no older than event ``at_least`` (None: read it now)."""

        async def load() -> tuple[str, Live]:
            state = await self.queue.snapshot(room)
            live = Live(state, await get_room(self.queue.redis, room))
            return live.event_id, live

        return (await self._looks.get((room,), at_least, load))[1]

    async def get(self, room: str, kind: str, render: Renderer,
                  at_least: str | None = None) -> tuple[str, Fragments]:
        """(last event id, fragments) of page ``kind`` for a state no older than ``at_least``
        (None: rendered from a snapshot read now)."""
        rendering = await self.rendering(room, kind, render, at_least)
        return rendering.event_id, rendering.fragments

    async def rendering(self, room: str, kind: str, render: Renderer,
                        at_least: str | None = None) -> Rendering:
        """:meth:`get` with the fragments' SSE messages."""

        async def draw() -> tuple[str, Rendering]:
            live = await self.look(room, at_least)
            rendering = Rendering.of(live.event_id, await render(live))
            return rendering.event_id, rendering

        return (await self._renders.get((room, kind), at_least, draw))[1]

    def forget(self, room: str) -> None:
        self._looks.forget(room)
        self._renders.forget(room)


def fragment_cache(app: Quart, queue: Queue) -> FragmentCache:
    """The app's one cache: host and caller pages of a room share its snapshots."""
    cache: FragmentCache | None = app.extensions.get("handraise_fragments")
    if cache is None:
        cache = app.extensions["handraise_fragments"] = FragmentCache(queue)
    return cache


def live_response(hub: EventHub, cache: FragmentCache, room: str, kind: str,
                  render: Renderer) -> Response:
    """The ``text/event-stream`` response of a live page, resuming at ``Last-Event-ID``."""
    last = request.headers.get("Last-Event-ID") or None
    if last is not None and not is_valid_id(last):
        last = None  # a forged or foreign id: start from the current state
    body = stream_with_context(fragment_stream)(hub, cache, room, kind, render, last)
    response = Response(body, content_type="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    response.timeout = None  # a live stream, not a slow response
    return response


async def fragment_stream(hub: EventHub, cache: FragmentCache, room: str, kind: str,
                          render: Renderer, last_event_id: str | None) -> AsyncIterator[str | bytes]:
    """The SSE body of one live page: current fragments, then the changed ones after each change."""
    yield sse_comment("live") + f"retry: {RETRY_MS}\n\n"
    sent: dict[str, str] = {}
    loop = asyncio.get_running_loop()
    last_render = loop.time()

    def fresh(rendering: Rendering) -> bytes:
        """The messages of the fragments whose HTML this page does not show yet."""
        out = []
        for (name, html), message in zip(rendering.fragments, rendering.messages, strict=True):
            if sent.get(name) != html:
                sent[name] = html
                out.append(message)
        return b"".join(out)

    try:
        async with hub.subscribe(room, after=last_event_id) as sub:
            rendering = await cache.rendering(room, kind, render)
            seen = rendering.event_id
            if last_event_id is None or parse_id(seen) > parse_id(last_event_id):
                yield fresh(rendering)
            else:
                sent.update(rendering.fragments)  # the page already shows this state
            while True:
                try:
                    event = await asyncio.wait_for(sub.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield sse_comment()
                    continue
                if event.type != RESET and parse_id(event.id) <= parse_id(seen):
                    continue  # already in what the page shows
                # After a reset the stream cannot say how new: read afresh.
                at_least = None if event.type == RESET else event.id
                wait = last_render + MIN_GAP_S - loop.time()
                if wait > 0:
                    # The read below then takes in every change made meanwhile, at once.
                    await asyncio.sleep(wait)
                rendering = await cache.rendering(room, kind, render, at_least)
                seen = rendering.event_id
                last_render = loop.time()
                changed = fresh(rendering)
                if changed:
                    yield changed
    except SubscriptionLagged:
        # Too far behind: end the stream; the browser reconnects with its Last-Event-ID.
        log.info("room %s: a %s page fell behind; it will reconnect", room, kind)
    except REDIS_ERRORS as exc:
        log.warning("room %s: live updates stopped (%s)", room, exc)
        with contextlib.suppress(Exception):
            yield sse("Live updates stopped: the server lost its database.", event="unavailable")
