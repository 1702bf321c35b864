"""Live pages over server-sent events: room events in, rendered fragments out.

A page opens one stream (``sse-connect``). The stream sends fragments, one SSE event name
per partial (the name equals the partial's), each carrying the whole partial rendered from
a fresh snapshot of the room, with the id of the last event it reflects. So a page never
applies deltas: after any drop it reconnects with ``Last-Event-ID`` and, if anything changed
meanwhile, gets the current partials once; if nothing changed, nothing is re-sent.

Pages of one kind look the same to everyone who may see them, so a process renders each
room state once and shares the text among its open streams (:class:`FragmentCache`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from ..events import REDIS_ERRORS, RESET, EventHub, SubscriptionLagged, parse_id, sse, sse_comment
from ..queue import Queue, RoomState

log = logging.getLogger(__name__)

#: Render a snapshot into (event name, HTML) pairs.
Fragments = list[tuple[str, str]]
Renderer = Callable[[RoomState], Awaitable[Fragments]]

KEEPALIVE_S = 15.0
RETRY_MS = 1000


class FragmentCache:
    """The fragments of each room's latest state, rendered once per process.

    Keyed by room and page kind; a newer event id replaces the entry. Concurrent streams
    asking for the same state share one snapshot and one render.
    """

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self._entries: dict[tuple[str, str], tuple[str, asyncio.Future[tuple[str, Fragments]]]] = {}

    async def get(self, room: str, kind: str, render: Renderer,
                  at_least: str | None = None) -> tuple[str, Fragments]:
        """(last event id, fragments) of a state no older than event ``at_least``."""
        entry = self._entries.get((room, kind))
        if entry is not None and (at_least is None or parse_id(entry[0]) >= parse_id(at_least)):
            try:
                return await asyncio.shield(entry[1])
            except Exception:  # the shared render failed: try afresh below
                pass
        future: asyncio.Future[tuple[str, Fragments]] = asyncio.ensure_future(
            self._render(room, render))
        self._entries[(room, kind)] = (at_least or "0-0", future)
        try:
            result = await asyncio.shield(future)
        except Exception:
            self._entries.pop((room, kind), None)
            raise
        self._entries[(room, kind)] = (result[0], future)
        return result

    async def _render(self, room: str, render: Renderer) -> tuple[str, Fragments]:
        state = await self.queue.snapshot(room)
        return state.last_event_id, await render(state)

    def forget(self, room: str) -> None:
        for k in [k for k in self._entries if k[0] == room]:
            del self._entries[k]


def encode(event_id: str, fragments: list[tuple[str, str]]) -> str:
    return "".join(sse(html, event=name, id=event_id) for name, html in fragments)


async def fragment_stream(hub: EventHub, cache: FragmentCache, room: str, kind: str,
                          render: Renderer, last_event_id: str | None) -> AsyncIterator[str]:
    """The SSE body of one live page: current fragments, then new ones after each change."""
    yield sse_comment("live") + f"retry: {RETRY_MS}\n\n"
    try:
        async with hub.subscribe(room, after=last_event_id) as sub:
            seen, fragments = await cache.get(room, kind, render)
            if last_event_id is None or parse_id(seen) > parse_id(last_event_id):
                yield encode(seen, fragments)
            while True:
                try:
                    event = await asyncio.wait_for(sub.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield sse_comment()
                    continue
                if event.type != RESET and parse_id(event.id) <= parse_id(seen):
                    continue  # already in what the page shows
                at_least = None if event.type == RESET else event.id
                seen, fragments = await cache.get(room, kind, render, at_least)
                yield encode(seen, fragments)
    except SubscriptionLagged:
        # Too far behind: end the stream; the browser reconnects with its Last-Event-ID.
        log.info("room %s: a %s page fell behind; it will reconnect", room, kind)
    except REDIS_ERRORS as exc:
        log.warning("room %s: live updates stopped (%s)", room, exc)
        with contextlib.suppress(Exception):
            yield sse("Live updates stopped: the server lost its database.", event="unavailable")
