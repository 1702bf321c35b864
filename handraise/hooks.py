"""Outbound events (webhooks): each room event POSTed, signed, to the receivers that asked.

A receiver is registered with ``handraise hooks add URL [--room R] [--events ...]`` and
gets one JSON object per event (:func:`public_event`), signed with HMAC-SHA256 over
``"<unix seconds>.<body>"`` in ``Handraise-Signature: t=<seconds>,v1=<hex>``.

How delivery works (all state in Redis, so it survives a restart):

* **Fan-out.** Each room is worked by one process at a time (a lease renewed every few
  seconds, ``hr:{room}:hooks:lease``). The process follows the event streams of all its
  rooms from their cursors with one blocking XREAD (one connection, however many rooms;
  on a Redis Cluster one per slot, since one command's keys must share a slot)
  and appends every event a hook wants to that hook's *lane* in the room
  (``hr:{room}:hooks:lane:<hook>``). One script appends to the lanes and moves the cursor
  only if it has not moved past the event yet, so a second process that still believes it
  holds the lease cannot enqueue an event twice.
* **Lanes.** Each lane is delivered in order by its own task: the head is POSTed until a
  2xx answer, then popped (only if it is still the head). A failure or timeout schedules
  the head again with exponential backoff; the next event waits behind it (order per
  room). After :attr:`HookSettings.retry_window_s` (15 minutes by default) of failing, the
  head is dropped and counted, and the lane moves on. Every receiver has its own HTTP
  connection pool and every lane its own task, so a slow or dead receiver delays nobody
  else, and nothing here runs in a request's path: the meeting never waits for a receiver.
* **At least once.** A delivery is popped after its 2xx, so a crash between the two sends
  it again; so does a lease taken over from a stalled process. Receivers drop duplicates
  by the event ``id``.

This module talks to Redis and to receivers over HTTP; it knows nothing of Quart.
:class:`HookWorker` is started with the app (``app.py``) and stopped with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import random
import re
import secrets
import ssl
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from .errors import Invalid, NotFound
from .events import REDIS_ERRORS, Event, last_event_id, parse_id, unless_stopped
from .queue import caller_name, mask_number
from .rooms import get_room, new_id
from .store import Redis, eval_script, global_key, is_cluster, key, slot_of

log = logging.getLogger(__name__)


SIGNATURE_HEADER = "Handraise-Signature"
#: Event types a hook can ask for (``--events``); the stream's ``hand.raised`` is ``hand_raised``.
EVENT_TYPES: tuple[str, ...] = (
    "room_created", "room_updated", "room_closed",
    "participant_joined", "participant_left", "participant_updated",
    "hand_raised", "hand_lowered", "hands_cleared", "hand_updated", "hands_restored",
    "speaker_called", "speaker_done",
    "speaker_invited", "speaker_accepted", "speaker_declined", "speaker_over_time",
)
USER_AGENT = "handraise-hooks/1"
PEOPLE_TTL_S = 2 * 24 * 3600


# --- the event as receivers see it ---------------------------------------------------------


def public_type(stream_type: str) -> str:
    """``hand.raised`` -> ``hand_raised``."""
    return stream_type.replace(".", "_")


def rfc3339(ms: int) -> str:
    """Milliseconds since the epoch as ``2024-05-01T09:30:00.123Z``."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def participant_ref(pid: str, name: str | None, number: str | None = None,
                    number_masked: str | None = None) -> dict[str, Any]:
    """``{"id", "display_name", "number_masked"}``; from the number, or from its masked form."""
    if number is not None or not number_masked:
        return {"id": pid, "display_name": name or caller_name(number),
                "number_masked": mask_number(number)}
    return {"id": pid, "display_name": name or _caller_from_masked(number_masked),
            "number_masked": number_masked}


def _caller_from_masked(masked: str | None) -> str:
    found = re.search(r"(\d{4})$", masked or "")
    return f"Caller {found.group(1)}" if found else "Caller"


def _people_key(room: str) -> str:
    return key(room, "hooks", "people")


async def describe_participant(redis: Redis, room: str, pid: str, event_type: str, data: dict[str, Any],
                               *, remember: bool = False, seen: dict[str, dict[str, Any]] | None = None,
                               event_id: str | None = None) -> dict[str, Any]:
    """``{"id", "display_name", "number_masked"}`` of ``pid``.

    From the live participant while they are in the room; once they have left (events are
    often described after that), from what was seen of them: in earlier events of the same
    batch (``seen``), in the room's remembered names (kept with ``remember``), in the
    room's events before ``event_id`` (their ``participant.joined``), or in the event itself.
    """
    h = await redis.hgetall(key(room, "p", pid))
    if h:
        ref = participant_ref(pid, h.get("name") or None, h.get("number") or None)
    else:
        found = seen.get(pid) if seen is not None else None
        if found is None:
            known = await redis.hget(_people_key(room), pid)
            found = dict(json.loads(known)) if known else None
        if found is None and event_type != "participant.joined" and event_id is not None:
            found = await _recall(redis, room, pid, event_id)
        if found is None or event_type == "participant.joined":
            masked = data.get("number_masked") or (found or {}).get("number_masked")
            ref = participant_ref(pid, data.get("name") or None, None, masked)
        elif "name" in data:
            ref = {**found, "display_name": data["name"] or _caller_from_masked(found["number_masked"])}
        else:
            ref = found
    if seen is not None:
        seen[pid] = ref
    if remember:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hset(_people_key(room), pid, json.dumps(ref))
            pipe.expire(_people_key(room), PEOPLE_TTL_S)
            await pipe.execute()
    return ref


async def _recall(redis: Redis, room: str, pid: str, before: str) -> dict[str, Any] | None:
    """``pid`` as the room's events before ``before`` last named them (None if never seen)."""
    name: str | None = None
    named = False
    cursor = f"({before}"
    while True:
        batch = await redis.xrevrange(key(room, "events"), max=cursor, min="-", count=500)
        for _id, fields in batch:
            raw = json.loads(fields.get("e", "{}"))
            if raw.get("participant") != pid:
                continue
            if not named and "name" in raw:
                name, named = raw["name"] or None, True
            if raw.get("type") == "participant.joined":
                return participant_ref(pid, name, None, raw.get("number_masked"))
        if len(batch) < 500:
            return None
        cursor = f"({batch[-1][0]}"


#: Left out of what receivers see: ``raised_at`` repeats ``at``; numbers and call ids stay here.
_PRIVATE_FIELDS = frozenset({"raised_at", "number", "call_sid"})


def public_event(event: Event, participant: dict[str, Any] | None) -> dict[str, Any]:
    """One event as the API and the receivers see it: the stream's fields, the type in
    snake_case, ``at`` in RFC 3339, the participant described (or None)."""
    out: dict[str, Any] = {k: v for k, v in event.data.items() if k not in _PRIVATE_FIELDS}
    out.update(type=public_type(event.type), id=event.id, room=event.room,
               participant=participant, at=rfc3339(event.at))
    return out


async def describe_event(redis: Redis, event: Event, *, remember: bool = False,
                         seen: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """:func:`public_event` with the participant described (see :func:`describe_participant`)."""
    ref = None
    if event.participant:
        ref = await describe_participant(redis, event.room, event.participant, event.type,
                                         event.data, remember=remember, seen=seen, event_id=event.id)
    return public_event(event, ref)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Handraise-Signature`` value of ``body`` sent at ``timestamp`` (unix seconds)."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, body: bytes, header: str, *, now: float | None = None,
           tolerance_s: float = 300) -> bool:
    """True if ``header`` signs ``body`` with ``secret`` within ``tolerance_s`` of ``now``."""
    try:
        parts = dict(p.strip().split("=", 1) for p in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), f"t={timestamp},v1={parts.get('v1', '')}")


# --- hooks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hook:
    """A receiver; ``status`` holds its last delivery (see :func:`describe_status`)."""

    id: str
    url: str
    secret: str = field(repr=False)
    room: str | None
    events: tuple[str, ...]  # empty: every event
    created_at: int  # ms, Redis clock
    status: dict[str, str] = field(default_factory=dict)

    def wants(self, room: str, stream_type: str, event_ms: int) -> bool:
        return ((self.room is None or self.room == room)
                and (not self.events or public_type(stream_type) in self.events)
                and event_ms >= self.created_at)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url, "room": self.room, "events": list(self.events),
                "created_at": self.created_at, "status": describe_status(self.status)}


# The registry is hash-tagged like a room ("hr:{hooks}:..."), so its multi-key steps stay in
# one Redis Cluster slot.
def _hook_key(hook_id: str) -> str:
    return key("hooks", "hook", hook_id)


def _hooks_index() -> str:
    return key("hooks", "index")


def _hooks_version() -> str:
    return key("hooks", "version")


def _hook_rooms(hook_id: str) -> str:
    return key("hooks", "rooms", hook_id)


def lane_key(room: str, hook_id: str) -> str:
    return key(room, "hooks", "lane", hook_id)


def _try_key(room: str, hook_id: str) -> str:
    return key(room, "hooks", "try", hook_id)


def _lanes_key(room: str) -> str:
    return key(room, "hooks", "lanes")


def _cursor_key(room: str) -> str:
    return key(room, "hooks", "cursor")


def _lease_key(room: str) -> str:
    return key(room, "hooks", "lease")


def _done_key(room: str) -> str:
    return key(room, "hooks", "done")


def check_events(names: list[str]) -> tuple[str, ...]:
    """``--events`` values (comma- or space-separated, dots or underscores) as known types."""
    wanted: list[str] = []
    for item in names:
        for name in re.split(r"[,\s]+", item.strip()):
            if not name:
                continue
            name = public_type(name)
            if name not in EVENT_TYPES:
                raise Invalid(f"Unknown event type {name!r}; choose from {', '.join(EVENT_TYPES)}.")
            if name not in wanted:
                wanted.append(name)
    return tuple(wanted)


def check_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise Invalid(f"A hook URL must be an http:// or https:// URL (got {url!r}).")
    return url.strip()


_ADD = """
-- KEYS 1 hook, 2 index, 3 version ; ARGV 1 id, 2 url, 3 secret, 4 room, 5 events
local t = redis.call('TIME')
local at = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'url', ARGV[2], 'secret', ARGV[3], 'room', ARGV[4], 'events', ARGV[5],
  'created_at', at)
redis.call('ZADD', KEYS[2], at, ARGV[1])
redis.call('INCR', KEYS[3])
return at
"""


async def add_hook(redis: Redis, url: str, *, room: str | None = None,
                   events: tuple[str, ...] = ()) -> Hook:
    """Register a receiver; its secret is in the result (show it once: receivers need it).

    It gets events from now on (one script stamps its start and publishes it, so the first
    event after it cannot be missed).
    """
    url = check_url(url)
    if room is not None:
        await get_room(redis, room)
    hook_id, secret = new_id("h", 8), "whsec_" + secrets.token_urlsafe(24)
    at = await eval_script(redis, _ADD, 3, _hook_key(hook_id), _hooks_index(), _hooks_version(),
                           hook_id, url, secret, room or "", ",".join(events))
    return Hook(hook_id, url, secret, room, tuple(events), int(at))


def _hook(hook_id: str, h: dict[str, str]) -> Hook:
    return Hook(id=hook_id, url=h["url"], secret=h["secret"], room=h.get("room") or None,
                events=tuple(e for e in h.get("events", "").split(",") if e),
                created_at=int(h.get("created_at", "0")),
                status={k: v for k, v in h.items() if k.startswith("last_") or k in STATUS_COUNTERS})


async def get_hook(redis: Redis, hook_id: str) -> Hook | None:
    h = await redis.hgetall(_hook_key(hook_id))
    return _hook(hook_id, h) if h and "url" in h else None


async def list_hooks(redis: Redis) -> list[Hook]:
    """Every hook, oldest first."""
    hooks = []
    for hook_id in await redis.zrange(_hooks_index(), 0, -1):
        found = await get_hook(redis, hook_id)
        if found is not None:
            hooks.append(found)
    return hooks


async def remove_hook(redis: Redis, hook_id: str) -> Hook:
    """Stop sending to a receiver; its pending deliveries are dropped."""
    found = await get_hook(redis, hook_id)
    if found is None:
        raise NotFound(f"There is no hook {hook_id!r} (see: handraise hooks list).")
    rooms = await redis.smembers(_hook_rooms(hook_id))
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(_hook_key(hook_id), _hook_rooms(hook_id))
        pipe.zrem(_hooks_index(), hook_id)
        pipe.incr(_hooks_version())
        await pipe.execute()
    for room in rooms:  # one room (one slot) per call
        await _drop_lane(redis, room, hook_id)
    return found


async def _drop_lane(redis: Redis, room: str, hook_id: str) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(lane_key(room, hook_id), _try_key(room, hook_id))
        pipe.srem(_lanes_key(room), hook_id)
        await pipe.execute()


async def pending(redis: Redis, hook_id: str) -> int:
    """Deliveries of ``hook_id`` not yet made, over all rooms."""
    total = 0
    for room in await redis.smembers(_hook_rooms(hook_id)):
        total += int(await redis.llen(lane_key(room, hook_id)))
    return total


STATUS_COUNTERS = ("delivered", "dropped", "failures")


def describe_status(status: dict[str, str]) -> str:
    """A hook's last delivery in one line: ``never``, ``ok (HTTP 200) at …``, ``failing …``."""
    if not status.get("last_at"):
        return "no delivery yet"
    at = rfc3339(int(status["last_at"]))
    result = status.get("last_result", "?")
    if status.get("last_ok") == "1":
        return f"ok ({result}) at {at}"
    failures = status.get("failures", "1")
    line = f"failing ({result}) at {at}, {failures} failed tries in a row"
    if status.get("last_retry_at"):
        line += f", next try at {rfc3339(int(status['last_retry_at']))}"
    return line


# --- delivery -------------------------------------------------------------------------------


class Clock:
    """Wall time and timers; tests pass a faster one instead of sleeping through backoff."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))  # a retry timer, not synchronisation


@dataclass(frozen=True)
class HookSettings:
    """How deliveries are paced; the defaults are production's, tests shorten the waits."""

    #: Seconds one POST may take (connect, send, answer) before it counts as failed.
    timeout_s: float = 10.0
    #: Backoff after the n-th failure: ``base * 2**(n-1)``, at most ``max``, with jitter.
    backoff_base_s: float = 2.0
    backoff_max_s: float = 120.0
    #: How long a delivery is retried before it is dropped (at least 10 minutes in production).
    retry_window_s: float = 900.0
    #: How often hooks and rooms are looked for; how long a room's lease lasts unrenewed.
    scan_s: float = 1.0
    lease_s: float = 15.0
    #: How long one XREAD waits for new events (rooms claimed meanwhile join the next one).
    read_block_s: float = 1.0
    #: Most events kept waiting per hook and room; the oldest go first beyond it.
    lane_max: int = 10_000
    #: Use the environment's proxy settings for receivers (HTTPS_PROXY, NO_PROXY).
    trust_env: bool = True
    #: How long stopping may wait for a task to notice.
    stop_s: float = 5.0

    def backoff(self, failures: int) -> float:
        delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** max(0, failures - 1))
        return delay * random.uniform(0.8, 1.0)  # jitter: receivers coming back are not stampeded


_FAN_OUT = """
-- KEYS 1 cursor, 2 lanes set, 3.. lanes ; ARGV 1 event ms, 2 event seq, 3 item, 4 lane max,
-- 5.. hook ids (one per lane). Appends only if the cursor is before the event.
local cur = redis.call('GET', KEYS[1])
if cur then
  local ms, seq = string.match(cur, '^(%d+)-(%d+)$')
  ms, seq = tonumber(ms), tonumber(seq)
  local ems, eseq = tonumber(ARGV[1]), tonumber(ARGV[2])
  if ems < ms or (ems == ms and eseq <= seq) then return 0 end
end
for i = 3, #KEYS do
  redis.call('RPUSH', KEYS[i], ARGV[3])
  redis.call('LTRIM', KEYS[i], -tonumber(ARGV[4]), -1)
  redis.call('SADD', KEYS[2], ARGV[i + 2])
end
redis.call('SET', KEYS[1], ARGV[1] .. '-' .. ARGV[2])
return 1
"""

_POP = """
-- KEYS 1 lane, 2 try state, 3 lanes set ; ARGV 1 the head as read, 2 hook id.
-- The lanes set lists exactly the non-empty lanes: the fan-out adds in the push's step.
if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[1] then return 0 end
redis.call('LPOP', KEYS[1])
redis.call('DEL', KEYS[2])
if redis.call('LLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[3], ARGV[2]) end
return 1
"""

_STATUS = """
-- KEYS 1 hook ; ARGV 1 counter to add one to ('' for none), 2.. field, value pairs.
-- A hook removed meanwhile stays removed (no half hash left behind).
if redis.call('HEXISTS', KEYS[1], 'url') == 0 then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if ARGV[1] ~= '' then redis.call('HINCRBY', KEYS[1], ARGV[1], 1) end
return 1
"""

_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Attempt:
    ok: bool
    result: str  # "HTTP 200", "timeout", "connection failed"


class HookWorker:
    """Delivers every hook's events while the app runs (one per process; they share the work)."""

    def __init__(self, redis: Redis, *, settings: HookSettings | None = None,
                 clock: Clock | None = None) -> None:
        self.redis = redis
        self.settings = settings or HookSettings()
        self.clock = clock or Clock()
        #: Identifies this worker's leases.
        self.token = secrets.token_hex(8)
        self._task: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._rooms: dict[str, _RoomRunner] = {}
        self._finished: set[str] = set()
        self._hooks: list[Hook] = []
        self._version: str | None = None
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._tls: ssl.SSLContext | None = None
        self._redis_down = False
        self._scripts = {name: redis.register_script(src) for name, src in
                         {"fan_out": _FAN_OUT, "pop": _POP, "renew": _RENEW,
                          "release": _RELEASE, "status": _STATUS}.items()}

    # --- lifecycle ---

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="hooks")
            self._reader = asyncio.create_task(self._read(), name="hooks-reader")

    async def stop(self) -> None:
        """Stop delivering; what is in flight is sent again by whoever runs next."""
        self._stop.set()
        tasks = {t for t in (self._task, self._reader) if t is not None}
        if tasks:
            await asyncio.wait(tasks, timeout=self.settings.stop_s)
        self._task = self._reader = None
        runners = list(self._rooms.values())
        self._rooms.clear()
        await asyncio.gather(*(r.stop() for r in runners), return_exceptions=True)
        clients = list(self._clients.values())
        self._clients.clear()
        for client in clients:
            await client.aclose()

    @property
    def rooms(self) -> set[str]:
        """Rooms this worker holds the lease of right now."""
        return set(self._rooms)

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.scan()
                if self._redis_down:
                    log.info("hooks: redis is back")
                    self._redis_down = False
            except REDIS_ERRORS as exc:
                if not self._redis_down:
                    log.warning("hooks: redis unavailable (%r); deliveries wait", exc)
                    self._redis_down = True
            except Exception:
                log.exception("hooks: scan failed")
            # A polling timer, not synchronisation.
            await unless_stopped(self._stop, asyncio.sleep(self.settings.scan_s))

    async def _read(self) -> None:
        """Follow the event streams of every room this worker holds, with blocking XREADs.

        On one Redis, one XREAD covers every room: one connection for all of them (a
        subscription per room would hold one each, and rooms stay open for weeks). On a Redis
        Cluster the keys of one command must share a slot, so there is one XREAD per slot
        in use (rooms spread over slots by their hash tag: in practice one per room); each
        hands its events over as soon as it returns, without waiting for the others.
        Either way each room's events reach its runner in order.
        """
        reads: dict[int, tuple[asyncio.Future[Any], dict[str, _RoomRunner]]] = {}
        delay = 0.5
        try:
            while not self._stop.is_set():
                rooms = {key(r, "events"): run for r, run in self._rooms.items()
                         if not run.stopping.is_set()}
                for group, streams in self._read_groups(rooms).items():
                    if group not in reads:  # rooms claimed meanwhile join their group's next read
                        reads[group] = (asyncio.ensure_future(self.redis.xread(
                            {stream: run.read_from for stream, run in streams.items()},
                            count=500, block=int(self.settings.read_block_s * 1000))), streams)
                if not reads:
                    await unless_stopped(self._stop, asyncio.sleep(self.settings.scan_s))  # a timer
                    continue
                stopping = asyncio.ensure_future(self._stop.wait())
                try:
                    await asyncio.wait({task for task, _ in reads.values()} | {stopping},
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stopping.cancel()
                lost: BaseException | None = None
                for group, (task, streams) in list(reads.items()):
                    if not task.done():
                        continue
                    del reads[group]
                    try:
                        reply = task.result()
                    except REDIS_ERRORS as exc:
                        lost = exc
                        continue
                    self._hand_over(reply, streams)
                if lost is None:
                    delay = 0.5
                    continue
                log.warning("hooks: reading events: redis unavailable (%r); retrying", lost)
                await unless_stopped(self._stop, asyncio.sleep(delay))  # back-off, not synchronisation
                delay = min(delay * 2, 10.0)
        finally:
            for task, _ in reads.values():
                task.cancel()
            for task, _ in reads.values():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _read_groups(self, rooms: dict[str, _RoomRunner]) -> dict[int, dict[str, _RoomRunner]]:
        """The rooms' streams in groups one XREAD may read: all of them, or one per cluster slot."""
        if not rooms:
            return {}
        if not is_cluster(self.redis):
            return {-1: rooms}
        groups: dict[int, dict[str, _RoomRunner]] = {}
        for stream, run in rooms.items():
            groups.setdefault(slot_of(stream), {})[stream] = run
        return groups

    @staticmethod
    def _hand_over(reply: Any, streams: dict[str, _RoomRunner]) -> None:
        for stream, entries in reply or []:
            run = streams[stream]
            for event_id, fields in entries:
                run.read_from = event_id
                try:
                    run.inbox.put_nowait(Event.from_entry(event_id, fields))
                except (KeyError, ValueError) as exc:
                    log.error("hooks: room %s: skipping malformed event %s (%s)", run.room, event_id, exc)

    # --- hooks and rooms ---

    async def hooks(self) -> list[Hook]:
        """The hooks, reloaded whenever one was added or removed (one GET otherwise)."""
        version = await self.redis.get(_hooks_version())
        if version != self._version:
            self._hooks = await list_hooks(self.redis)
            self._version = version
        return self._hooks

    async def scan(self) -> None:
        """Claim and start the rooms that have work and no worker; forget finished ones."""
        for room_id, runner in list(self._rooms.items()):
            if runner.stopping.is_set():
                del self._rooms[room_id]
                await runner.stop()  # releases the lease if it is still ours
        hooks = await self.hooks()
        if not hooks:
            for room_id in list(self._rooms):  # the last hook was removed: nothing to deliver
                await self._rooms.pop(room_id).stop()
            return
        if self._tls is None:
            # Loading the CA bundle takes tens of milliseconds: in a thread, not on the event
            # loop where it would stall the meeting; once, shared by every hook's pool.
            self._tls = await asyncio.to_thread(httpx.create_ssl_context, trust_env=self.settings.trust_env)
        if any(h.room is None for h in hooks):
            candidates = list(await self.redis.zrange(global_key("rooms"), 0, -1))
        else:
            candidates = sorted({h.room for h in hooks if h.room})
        oldest = min(h.created_at for h in hooks)
        for room_id in candidates:
            if self._stop.is_set():
                break
            if room_id in self._rooms or room_id in self._finished:
                continue
            if await self.redis.exists(_done_key(room_id)):
                self._finished.add(room_id)
                continue
            if await self._nothing_to_do(room_id, oldest):
                continue
            if await self.redis.set(_lease_key(room_id), self.token, nx=True,
                                    px=int(self.settings.lease_s * 1000)):
                cursor = await self.redis.get(_cursor_key(room_id)) or "0-0"
                await self._warn_if_trimmed(room_id, cursor)
                runner = _RoomRunner(self, room_id)
                self._rooms[room_id] = runner
                runner.start(cursor)

    async def _warn_if_trimmed(self, room_id: str, cursor: str) -> None:
        if cursor == "0-0":
            return
        first = await self.redis.xrange(key(room_id, "events"), min="-", max="+", count=1)
        if first and parse_id(first[0][0]) > parse_id(cursor):
            log.warning("hooks: room %s: events after %s were trimmed from the room's stream before "
                        "they could be sent", room_id, cursor)

    async def _nothing_to_do(self, room_id: str, oldest_hook_ms: int) -> bool:
        """A closed room whose events are all fanned out (or older than every hook) and sent."""
        try:
            room = await get_room(self.redis, room_id)
        except NotFound:
            return True
        if room.status == "open":
            return False
        if await self.redis.scard(_lanes_key(room_id)):
            return False
        last = await self.redis.xrevrange(key(room_id, "events"), "+", "-", count=1)
        cursor = await self.redis.get(_cursor_key(room_id))
        if last and (cursor is None or parse_id(cursor) < parse_id(last[0][0])) \
                and parse_id(last[0][0])[0] >= oldest_hook_ms:
            return False
        await self.redis.set(_done_key(room_id), "1")
        self._finished.add(room_id)
        return True

    def client(self, hook: Hook) -> httpx.AsyncClient:
        """The hook's own connection pool: a receiver that hangs holds only its own connections."""
        client = self._clients.get(hook.id)
        if client is None:
            client = self._clients[hook.id] = httpx.AsyncClient(
                timeout=httpx.Timeout(self.settings.timeout_s), verify=self._tls or True,
                limits=httpx.Limits(max_connections=20, max_keepalive_connections=5),
                trust_env=self.settings.trust_env, follow_redirects=False,
                headers={"User-Agent": USER_AGENT},
            )
        return client

    async def post(self, hook: Hook, event_id: str, event_type: str, body: str, attempt: int) -> Attempt:
        """One delivery attempt; never raises for the receiver's trouble."""
        raw = body.encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(hook.secret, int(self.clock.now()), raw),
            "Handraise-Event-Id": event_id,
            "Handraise-Event-Type": event_type,
            "Handraise-Hook-Id": hook.id,
            "Handraise-Attempt": str(attempt),
        }
        try:
            response = await self.client(hook).post(hook.url, content=raw, headers=headers)
        except httpx.TimeoutException:
            return Attempt(False, "timeout")
        except httpx.HTTPError as exc:
            return Attempt(False, f"connection failed ({type(exc).__name__})")
        return Attempt(200 <= response.status_code < 300, f"HTTP {response.status_code}")


class _RoomRunner:
    """One room's fan-out and lanes, while this worker holds the room's lease."""

    def __init__(self, worker: HookWorker, room: str) -> None:
        self.w = worker
        self.redis = worker.redis
        self.room = room
        self.tasks: set[asyncio.Task[None]] = set()
        self.lanes: dict[str, asyncio.Task[None]] = {}
        self.wake: dict[str, asyncio.Event] = {}
        #: Set when the room's work ends here: the lease is gone, the room is done, or a task broke.
        self.stopping = asyncio.Event()
        self.closed_seen = False
        #: Events read for this room (by the worker's reader), and where reading goes on from.
        self.inbox: asyncio.Queue[Event] = asyncio.Queue()
        self.read_from = "0-0"

    def _spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("hooks: room %s: %s failed", self.room, task.get_name(), exc_info=task.exception())
            self.stopping.set()

    def start(self, cursor: str) -> None:
        log.info("hooks: room %s: delivering (worker %s)", self.room, self.w.token)
        self.read_from = cursor
        self._spawn(self._keep_lease(), f"hooks-lease:{self.room}")
        self._spawn(self._fan_out(), f"hooks-fan-out:{self.room}")

    async def stop(self) -> None:
        self.stopping.set()
        tasks = list(self.tasks)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.w.settings.stop_s)
            for task in late:  # stuck in a Redis call past its timeouts: last resort
                task.cancel()
        with contextlib.suppress(*REDIS_ERRORS):
            await self._drop_orphan_lanes()
            await self.w._scripts["release"](keys=[_lease_key(self.room)], args=[self.w.token])

    async def _drop_orphan_lanes(self) -> None:
        """Drop the lanes of hooks removed meanwhile. A fan-out in flight can re-add a lane
        just after :func:`remove_hook` dropped it; a running lane drops it again, but once
        this runner stops (the last hook went) nobody would."""
        for hook_id in await self.redis.smembers(_lanes_key(self.room)):
            if await get_hook(self.redis, hook_id) is None:
                await _drop_lane(self.redis, self.room, hook_id)

    async def _pause(self, seconds: float) -> None:
        """A retry timer (on the worker's clock) that ends early when the room stops here."""
        await unless_stopped(self.stopping, self.w.clock.sleep(seconds))

    async def _pause_wall(self, seconds: float) -> None:
        """A back-off or renewal timer in wall time that ends early when the room stops here."""
        await unless_stopped(self.stopping, asyncio.sleep(seconds))

    # --- lease ---

    async def _keep_lease(self) -> None:
        every = self.w.settings.lease_s / 3
        while not self.stopping.is_set():
            await self._pause_wall(every)
            if self.stopping.is_set():
                return
            try:
                held = await self.w._scripts["renew"](
                    keys=[_lease_key(self.room)],
                    args=[self.w.token, int(self.w.settings.lease_s * 1000)])
            except REDIS_ERRORS:
                continue  # keep working; the lease may still hold when Redis is back
            if not held:
                log.warning("hooks: room %s: lost the lease; another process delivers now", self.room)
                self.stopping.set()

    async def _leased(self) -> bool:
        return await self.redis.get(_lease_key(self.room)) == self.w.token

    # --- fan-out ---

    async def _fan_out(self) -> None:
        """Put each event the worker's reader hands over into the lanes of the hooks that want it."""
        for hook_id in await self.redis.smembers(_lanes_key(self.room)):
            self._lane(hook_id)
        while not self.stopping.is_set():
            event = await unless_stopped(self.stopping, self.inbox.get())
            if event is None:
                return
            while not self.stopping.is_set():
                try:
                    await self._one(event)
                    break
                except REDIS_ERRORS as exc:
                    log.warning("hooks: room %s: redis unavailable (%r); retrying", self.room, exc)
                    await self._pause_wall(1.0)

    async def _one(self, event: Event) -> None:
        ms, seq = parse_id(event.id)
        hooks = [h for h in await self.w.hooks() if h.wants(self.room, event.type, ms)]
        item = ""
        if hooks:
            body = json.dumps(await describe_event(self.redis, event, remember=True),
                              separators=(",", ":"), sort_keys=True)
            item = json.dumps({"id": event.id, "type": public_type(event.type), "body": body,
                               "queued_at": self.w.clock.now()})
        lanes = [lane_key(self.room, h.id) for h in hooks]
        added = await self.w._scripts["fan_out"](
            keys=[_cursor_key(self.room), _lanes_key(self.room), *lanes],
            args=[ms, seq, item, self.w.settings.lane_max, *(h.id for h in hooks)])
        if added:
            for h in hooks:
                if h.id not in self.lanes:
                    await self.redis.sadd(_hook_rooms(h.id), self.room)
                    self._lane(h.id)
                self.wake[h.id].set()
        if event.type == "room.closed":
            self.closed_seen = True
            for wake in self.wake.values():  # lanes end once they are empty
                wake.set()
            await self._maybe_done()

    async def _maybe_done(self) -> None:
        """A closed room whose every event is fanned out and delivered needs no runner again."""
        if not self.closed_seen or self.lanes or await self.redis.scard(_lanes_key(self.room)):
            return
        cursor = await self.redis.get(_cursor_key(self.room))
        last = await last_event_id(self.redis, self.room)
        if cursor is None or parse_id(cursor) < parse_id(last):
            return
        await self.redis.set(_done_key(self.room), "1")
        log.info("hooks: room %s: closed, and every event sent", self.room)
        self.w._finished.add(self.room)
        self.stopping.set()

    # --- lanes ---

    def _lane(self, hook_id: str) -> None:
        if hook_id in self.lanes:
            return
        self.wake[hook_id] = asyncio.Event()
        self.lanes[hook_id] = self._spawn(self._deliver(hook_id), f"hooks-lane:{self.room}:{hook_id}")

    async def _deliver(self, hook_id: str) -> None:
        """Send the lane's events in order, each until it succeeds or its window is over."""
        lane, tries = lane_key(self.room, hook_id), _try_key(self.room, hook_id)
        wake = self.wake[hook_id]
        clock = self.w.clock
        delay = 0.5
        while not self.stopping.is_set():
            try:
                head = await self.redis.lindex(lane, 0)
                if head is None:
                    wake.clear()
                    if await self.redis.llen(lane) == 0:
                        if self.closed_seen:
                            break
                        try:
                            await unless_stopped(self.stopping, asyncio.wait_for(wake.wait(), 5.0))
                        except TimeoutError:  # nothing for a while: is the hook still there?
                            if await get_hook(self.redis, hook_id) is None:
                                await _drop_lane(self.redis, self.room, hook_id)  # a late re-add
                                break
                    continue
                hook = await get_hook(self.redis, hook_id)
                if hook is None:
                    await _drop_lane(self.redis, self.room, hook_id)
                    break
                item = json.loads(head)
                state = await self.redis.hgetall(tries)
                failures = int(state["failures"]) if state.get("id") == item["id"] else 0
                next_at = float(state["next_at"]) if failures else 0.0
                if next_at > clock.now():
                    await self._pause(next_at - clock.now())
                    continue
                if not await self._leased():
                    self.stopping.set()
                    return
                attempt = await unless_stopped(self.stopping, self.w.post(
                    hook, item["id"], item["type"], item["body"], failures + 1))
                if attempt is None:
                    return  # stopped mid-request: the next runner sends it again
                await self._settle(hook, head, item, attempt, failures)
                delay = 0.5
            except REDIS_ERRORS as exc:
                log.warning("hooks: room %s: lane %s: redis unavailable (%r)", self.room, hook_id, exc)
                await self._pause_wall(delay)
                delay = min(delay * 2, 10.0)
        self.lanes.pop(hook_id, None)
        if not self.stopping.is_set():  # emptied, not interrupted: maybe the room is done
            with contextlib.suppress(*REDIS_ERRORS):  # if not now, the next runner decides
                await self._maybe_done()

    async def _settle(self, hook: Hook, head: str, item: dict[str, Any], attempt: Attempt,
                      failures: int) -> None:
        lane, tries = lane_key(self.room, hook.id), _try_key(self.room, hook.id)
        now = self.w.clock.now()
        status: dict[str, Any] = {"last_at": int(now * 1000), "last_result": attempt.result,
                                  "last_event": item["id"], "last_ok": "1" if attempt.ok else "0",
                                  "failures": 0 if attempt.ok else failures + 1, "last_retry_at": ""}
        if attempt.ok:
            await self.w._scripts["pop"](keys=[lane, tries, _lanes_key(self.room)], args=[head, hook.id])
            await self._record(hook, "delivered", status)
            return
        failures += 1
        if now - float(item["queued_at"]) >= self.w.settings.retry_window_s:
            log.warning("hooks: room %s: gave up on event %s for hook %s after %d tries (%s)",
                        self.room, item["id"], hook.id, failures, attempt.result)
            await self.w._scripts["pop"](keys=[lane, tries, _lanes_key(self.room)], args=[head, hook.id])
            await self._record(hook, "dropped", status)
            return
        next_at = now + self.w.settings.backoff(failures)
        log.info("hooks: room %s: event %s to hook %s failed (%s), try %d; again in %.1fs",
                 self.room, item["id"], hook.id, attempt.result, failures, next_at - now)
        await self.redis.hset(tries, mapping={"id": item["id"], "failures": failures, "next_at": next_at})
        await self._record(hook, "", {**status, "last_retry_at": int(next_at * 1000)})

    async def _record(self, hook: Hook, counter: str, status: dict[str, Any]) -> None:
        """The hook's last delivery (what ``hooks list`` shows)."""
        pairs = [str(x) for item in status.items() for x in item]
        await self.w._scripts["status"](keys=[_hook_key(hook.id)], args=[counter, *pairs])
