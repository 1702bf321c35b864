"""Room events: a capped Redis Stream per room, per-process fan-out, and SSE encoding.

Every state change appends exactly one event to ``hr:{room}:events`` in the same Lua
script as the change (see :data:`LUA_EMIT`, used by rooms.py and queue.py), so a screen
that resumes from its last event id misses nothing.

Each process runs one reader task per room with subscribers; it blocks on XREAD and hands
each event to every local subscriber. A browser costs a queue, not a Redis connection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis.exceptions

from .store import Redis, key

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Lua helper prepended to every mutating script. ``emit(stream, maxlen, ev)`` stamps
#: ``ev.at`` with the Redis server's clock (ms) and appends the event as JSON.
LUA_EMIT = """
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function emit(stream, maxlen, ev)
  if ev.at == nil then ev.at = math.floor(now_us() / 1000) end
  return redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'e', cjson.encode(ev))
end
-- Sets the fields of hash whose stored string differs from encoded[field]; copies
-- their typed values into ev. Returns how many changed.
local function set_changed(hash, encoded_json, typed_json, ev)
  local encoded, typed, n = cjson.decode(encoded_json), cjson.decode(typed_json), 0
  for field, value in pairs(encoded) do
    if redis.call('HGET', hash, field) ~= value then
      redis.call('HSET', hash, field, value)
      ev[field] = typed[field]
      n = n + 1
    end
  end
  return n
end
"""


def encode_changes(typed: dict[str, Any]) -> tuple[str, str]:
    """The two JSON arguments of ``set_changed``: values as stored in a hash, and as typed."""

    def stored(v: Any) -> str:
        if isinstance(v, list | tuple):
            return ",".join(v)
        if isinstance(v, bool):
            return "1" if v else "0"
        return str(v)

    typed = {k: list(v) if isinstance(v, tuple) else v for k, v in typed.items()}
    return json.dumps({k: stored(v) for k, v in typed.items()}), json.dumps(typed)

#: Event type sent to a subscriber whose resume point fell off the capped stream: the
#: consumer must reload the whole state instead of applying deltas.
RESET = "stream.reset"

#: What a lost or slow Redis raises; callers turn these into a clear answer, not a crash.
REDIS_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
    # A Redis Cluster with a slot unserved (a primary down, failover under way).
    redis.exceptions.ClusterError,
    redis.exceptions.SlotNotCoveredError,
)

_ID = re.compile(r"^(\d+)-(\d+)$")


def parse_id(event_id: str) -> tuple[int, int]:
    """Stream id ``"1700000000000-3"`` as a comparable tuple; ValueError if malformed."""
    m = _ID.match(event_id)
    if not m:
        raise ValueError(f"not a stream id: {event_id!r}")
    return int(m.group(1)), int(m.group(2))


def is_valid_id(event_id: str) -> bool:
    return _ID.match(event_id) is not None


@dataclass(frozen=True)
class Event:
    """One change in a room. ``data`` holds the fields that changed."""

    id: str
    type: str
    room: str
    participant: str | None
    at: int
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_entry(cls, event_id: str, fields: dict[str, str]) -> Event:
        raw = json.loads(fields["e"])
        return cls(
            id=event_id,
            type=raw.pop("type"),
            room=raw.pop("room"),
            participant=raw.pop("participant", None) or None,
            at=int(raw.pop("at")),
            data=raw,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "room": self.room,
            "participant": self.participant,
            "at": self.at,
            **self.data,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)


async def read_events(
    redis: Redis, room: str, after: str = "0-0", count: int | None = None
) -> list[Event]:
    """Events of ``room`` with ids greater than ``after``, oldest first."""
    entries = await redis.xrange(key(room, "events"), min=f"({after}", max="+", count=count)
    return [Event.from_entry(i, f) for i, f in entries]


async def last_event_id(redis: Redis, room: str) -> str:
    """Id of the newest event of ``room``, or ``"0-0"`` if it has none."""
    entries = await redis.xrevrange(key(room, "events"), max="+", min="-", count=1)
    return str(entries[0][0]) if entries else "0-0"


class SubscriptionLagged(Exception):
    """The subscriber fell too far behind; reconnect from its last event id."""


class Subscription:
    """Events of one room for one consumer, in order, each exactly once."""

    def __init__(self, room: str, maxsize: int) -> None:
        self.room = room
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize)
        self._backlog: collections.deque[Event] = collections.deque()
        self._last: tuple[int, int] = (0, 0)
        #: Id of the last event delivered (or the starting point): resume from here.
        self.last_id: str | None = None
        self._lagged = False

    def _offer(self, event: Event) -> None:
        if self._lagged:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._offer_lag()

    def _offer_lag(self) -> None:
        # Drop what is queued rather than skip one event: the consumer is told to
        # resume from its last delivered id, and the stream gives it all back.
        self._lagged = True
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    async def get(self) -> Event:
        """Next event; raises :class:`SubscriptionLagged` if this consumer fell behind."""
        while True:
            event = self._backlog.popleft() if self._backlog else await self._queue.get()
            if event is None:
                raise SubscriptionLagged(self.room)
            if event.type != RESET:
                order = parse_id(event.id)
                if order <= self._last:
                    continue  # seen during the backfill
                self._last = order
                self.last_id = event.id
            return event

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        return await self.get()


class _RoomReader:
    def __init__(self, hub: EventHub, room: str) -> None:
        self.hub = hub
        self.room = room
        self.subscribers: set[Subscription] = set()
        self.task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        self.stopped = False

    async def run(self) -> None:
        redis = self.hub.redis
        stream = key(self.room, "events")
        last: str | None = None
        delay = 0.1
        while not self.stopped:
            try:
                if last is None:
                    last = await last_event_id(redis, self.room)
                    self.ready.set()
                reply = await redis.xread({stream: last}, count=500, block=self.hub.block_ms)
                delay = 0.1
            except REDIS_ERRORS as exc:
                log.warning("event reader for room %s lost Redis (%s); retrying", self.room, exc)
                await asyncio.sleep(delay)  # back-off before reconnecting, not synchronisation
                delay = min(delay * 2, 5.0)
                continue
            for _stream, entries in reply or []:
                for event_id, fields in entries:
                    last = event_id
                    try:
                        event = Event.from_entry(event_id, fields)
                    except (KeyError, ValueError) as exc:
                        log.error("room %s: skipping malformed event %s (%s)", self.room, event_id, exc)
                        continue
                    for sub in list(self.subscribers):
                        sub._offer(event)




class EventHub:
    """Per-process fan-out of room events to local subscribers.

    >>> async with hub.subscribe("r1", after=last_seen) as sub:
    ...     async for event in sub: ...
    """

    def __init__(
        self, redis: Redis, *, block_ms: int = 2000, queue_size: int = 1000,
        ready_timeout: float = 5.0,
    ) -> None:
        self.redis = redis
        self.block_ms = block_ms
        self.ready_timeout = ready_timeout
        self.queue_size = queue_size
        self._readers: dict[str, _RoomReader] = {}
        self._stopping: set[_RoomReader] = set()

    @contextlib.asynccontextmanager
    async def subscribe(self, room: str, after: str | None = None) -> AsyncIterator[Subscription]:
        """Subscribe to ``room``: events after ``after`` (a stream id), or from now on.

        Raises a redis ``ConnectionError`` (one of :data:`REDIS_ERRORS`) if Redis cannot
        be reached within ``ready_timeout``.
        """
        if after is not None and not is_valid_id(after):
            raise ValueError(f"not an event id: {after!r}")
        reader = self._readers.get(room)
        if reader is None:
            reader = self._readers[room] = _RoomReader(self, room)
            reader.task = asyncio.create_task(reader.run(), name=f"events:{room}")
            reader.task.add_done_callback(functools.partial(self._reader_done, reader))
        sub = Subscription(room, self.queue_size)
        reader.subscribers.add(sub)
        try:
            await self._until_ready(reader)
            # Registered first, backfilled second: anything appended meanwhile arrives
            # twice and the subscription drops the copy by id.
            if after is None:
                after = await last_event_id(self.redis, room)
            await self._backfill(sub, room, after)
            yield sub
        finally:
            reader.subscribers.discard(sub)
            if not reader.subscribers and self._readers.get(room) is reader:
                # Not cancelled: cancelling redis-py mid-XREAD can leave the task stuck
                # (seen with redis-py 8). The reader ends after its current XREAD block.
                del self._readers[room]
                reader.stopped = True
                self._stopping.add(reader)

    async def _until_ready(self, reader: _RoomReader) -> None:
        """Wait for the room's reader to find its start; a lost Redis is an error, not a hang."""
        if reader.ready.is_set():
            return
        assert reader.task is not None
        ready = asyncio.ensure_future(reader.ready.wait())
        try:
            await asyncio.wait({ready, reader.task}, timeout=self.ready_timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if not reader.ready.is_set():
            raise redis.exceptions.ConnectionError(
                f"the event stream of room {reader.room} is unavailable (Redis unreachable)"
            )

    def _reader_done(self, reader: _RoomReader, task: asyncio.Task[None]) -> None:
        self._stopping.discard(reader)
        if not task.cancelled() and task.exception() is not None:
            log.error("event reader for room %s failed", reader.room, exc_info=task.exception())
            if self._readers.get(reader.room) is reader:
                del self._readers[reader.room]
                for sub in reader.subscribers:
                    sub._offer_lag()

    async def _backfill(self, sub: Subscription, room: str, after: str) -> None:
        stream = key(room, "events")
        if after != "0-0":
            first = await self.redis.xrange(stream, min="-", max="+", count=1)
            if first and parse_id(first[0][0]) > parse_id(after):
                # Older than anything kept: events may have been trimmed away.
                sub._backlog.append(Event(id=after, type=RESET, room=room, participant=None, at=0))
        sub._last = parse_id(after)
        sub.last_id = after
        cursor = after
        while True:
            batch = await read_events(self.redis, room, cursor, count=500)
            sub._backlog.extend(batch)
            if len(batch) < 500:
                break
            cursor = batch[-1].id

    async def close(self) -> None:
        """Stop every reader; returns once they have finished their last XREAD."""
        readers = [*self._readers.values(), *self._stopping]
        self._readers.clear()
        self._stopping.clear()
        for reader in readers:
            reader.stopped = True
        tasks = [r.task for r in readers if r.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=self.block_ms / 1000 + 5)


# --- Server-sent events -------------------------------------------------------------------

_LINES = re.compile(r"\r\n|\r|\n")


def sse(data: str, *, event: str | None = None, id: str | None = None, retry_ms: int | None = None) -> str:
    """One server-sent event. Multi-line ``data`` becomes several ``data:`` lines."""
    out: list[str] = []
    if event is not None:
        _check_field("event", event)
        out.append(f"event: {event}")
    if id is not None:
        _check_field("id", id)
        out.append(f"id: {id}")
    if retry_ms is not None:
        out.append(f"retry: {int(retry_ms)}")
    out.extend(f"data: {line}" for line in _LINES.split(data))
    return "\n".join(out) + "\n\n"


def sse_comment(text: str = "keep-alive") -> str:
    """An SSE comment line, ignored by browsers; keeps proxies from closing idle streams."""
    return "".join(f": {line}\n" for line in _LINES.split(text)) + "\n"


def _check_field(name: str, value: str) -> None:
    if _LINES.search(value) or (name == "id" and "\0" in value):
        raise ValueError(f"SSE {name} must be a single line: {value!r}")


async def unless_stopped(stop: asyncio.Event, aw: Awaitable[T]) -> T | None:
    """``aw``'s result, or None as soon as ``stop`` is set (``aw`` is then cancelled).

    A worker stops by setting events rather than by cancelling its tasks: redis-py's
    asyncio client swallows a cancellation that lands in a command often enough (seen with
    redis-py 8) that a cancelled loop would go on forever.
    """
    task = asyncio.ensure_future(aw)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    return None
