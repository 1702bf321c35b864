"""'You're next.': when a hand becomes first in line, its caller hears it privately.

One place decides, from the room's events, whatever moved the queue: the head was called
on, lowered, left, every hand was lowered, or a hand was put ahead (another feature's
event). After a batch of such events the watcher reads the head of the queue and the id of
the last event (:meth:`~handraise.queue.Queue.head`: one script, not the whole room) and
offers the head to one Redis script (:data:`_CLAIM`), which keeps the room's last head with
the id of the read it came from. Exactly one caller of the script sees a given change of
head, so with any number of processes watching the same room one of them announces, once
per time a hand becomes first; a stale read (older than the one recorded) changes nothing.

Not announced: a hand raised into an empty queue (its ``hand.raised`` event comes after the
read that found the queue empty; raise times are not used, as an ordering feature may
change them). Its caller was just told "Hand raised. You are number 1 in line." on the
phone (or sees "You're next." on the page), so a second sentence would only repeat it.
Hands put back into an empty queue otherwise (an undo) are announced. Nor is what a process
finds when it first looks at a room (start-up, a new room): recorded, not said. Rooms
with ``announce_next`` off keep the marker up to date and stay silent.

Every process runs one :class:`NextWatcher`: one blocking XREAD over all open rooms,
however many, and one ZRANGE a second to notice new rooms; a room leaves it with its
``room.closed`` event.
"""

from __future__ import annotations

import asyncio
import logging

from ..errors import NotFound
from ..events import REDIS_ERRORS, Event, parse_id, read_events, unless_stopped
from ..queue import Queue
from ..rooms import get_room
from ..store import eval_script, global_key, key
from .control import HostControls

log = logging.getLogger(__name__)


#: Events that cannot change who is first in line (anything else may, including the
#: event types of features added later).
QUIET_EVENTS = frozenset({"participant.joined", "participant.updated", "room.created",
                          "room.updated", "room.closed"})
MARKER_TTL_S = 7 * 24 * 3600

_CLAIM = """
-- KEYS 1: marker hash ; ARGV 1: head ('' = no hand), 2/3: the last event id of the read
-- (ms, seq), 4: ttl. Returns {outcome, previous ms, previous seq}: outcome -1 stale
-- read, 0 same head, 1 a head after an empty queue, 2 a different head, 3 the first look.
local ms, seq = tonumber(ARGV[2]), tonumber(ARGV[3])
local at_ms = tonumber(redis.call('HGET', KEYS[1], 'ms') or '-1')
local at_seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '-1')
if ms < at_ms or (ms == at_ms and seq < at_seq) then return {-1, at_ms, at_seq} end
local head = redis.call('HGET', KEYS[1], 'head')
redis.call('HSET', KEYS[1], 'head', ARGV[1], 'ms', ms, 'seq', seq)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
local outcome = 2
if head == false then outcome = 3
elseif head == ARGV[1] then outcome = 0
elseif head == '' then outcome = 1 end
return {outcome, at_ms, at_seq}
"""


def marker_key(room: str) -> str:
    """The room's last announced head of the queue and the event it was read at."""
    return key(room, "next-up")


async def _raised_since(queue: Queue, room: str, pid: str, after: str, until: str) -> bool:
    """Whether ``pid``'s hand was raised by an event after ``after`` up to ``until`` straight
    into first place (a raise into an empty queue, or a reply or a fair-order newcomer put
    ahead): its caller was told "number 1" then."""
    for event in await read_events(queue.redis, room, after, count=10_000):
        if parse_id(event.id) > parse_id(until):
            break
        if event.type in ("hand.raised", "hand.updated") and event.participant == pid \
                and event.data.get("position", 1) == 1:
            return True
    return False


async def check_room(queue: Queue, host: HostControls, room: str, *,
                     quiet: bool = False) -> str | None:
    """Announce "You're next." to the head of ``room``'s queue if it just became first.

    Returns the participant told (or who would have been, with ``announce_next`` off or
    ``quiet``: only record the head), else None. Safe to call from any number of processes
    at once: one of them gets the change.
    """
    first, last_event_id = await queue.head(room)
    head = first or ""
    ms, seq = parse_id(last_event_id)
    outcome, at_ms, at_seq = await eval_script(queue.redis, _CLAIM, 1, marker_key(room), head,
                                               ms, seq, MARKER_TTL_S)
    if not head or int(outcome) in (-1, 0, 3):
        return None
    if int(outcome) in (1, 2) and await _raised_since(queue, room, head, f"{at_ms}-{at_seq}",
                                                      last_event_id):
        return None  # raised as number 1: "you are number 1" was said (or shown)
    settings = await get_room(queue.redis, room)
    if quiet or not settings.announce_next:
        return head
    result = await host.announce(room, head, "next")
    log.info("room %s: %s is next in line; %s", room, head,
             "told privately" if result.ok else f"could not tell them: {result.message}")
    return head


class NextWatcher:
    """Follows every open room's events (one XREAD) and runs :func:`check_room` after each
    batch that may have moved its queue. One per process."""

    def __init__(self, queue: Queue, host: HostControls, *, block_ms: int = 1000,
                 rescan_s: float = 1.0) -> None:
        self.queue = queue
        self.host = host
        self.block_ms = block_ms
        self.rescan_s = rescan_s
        #: Open rooms followed -> the id of the last event read (and decided on).
        self.cursors: dict[str, str] = {}
        self.closed: set[str] = set()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="next-up")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=self.block_ms / 1000 + 5)
            self._task = None

    async def _rescan(self) -> None:
        """Follow rooms created since the last look (one ZRANGE when nothing is new)."""
        redis = self.queue.redis
        ids = set(await redis.zrange(global_key("rooms"), 0, -1))
        for room in set(self.cursors) - ids:
            del self.cursors[room]
        for room in ids - set(self.cursors) - self.closed:
            if await redis.hget(key(room, "room"), "status") != "open":
                self.closed.add(room)  # a closed room stays closed
                continue
            entries = await redis.xrevrange(key(room, "events"), count=1)
            self.cursors[room] = str(entries[0][0]) if entries else "0-0"
            # What happened before this process looked is not news: recorded, not said.
            await self._check(room, quiet=True)

    async def _check(self, room: str, *, quiet: bool = False) -> None:
        try:
            await check_room(self.queue, self.host, room, quiet=quiet)
        except NotFound:
            self.cursors.pop(room, None)
        except REDIS_ERRORS:
            raise
        except Exception:  # one room's trouble must not stop the others
            log.exception("room %s: next-in-line check failed", room)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        rescan_at = 0.0
        delay = 0.5
        while not self._stop.is_set():
            try:
                if loop.time() >= rescan_at:
                    await self._rescan()
                    rescan_at = loop.time() + self.rescan_s
                if not self.cursors:
                    await unless_stopped(self._stop, asyncio.sleep(self.rescan_s))  # a timer
                    continue
                streams = {key(room, "events"): room for room in self.cursors}
                reply = await unless_stopped(self._stop, self.queue.redis.xread(
                    {stream: self.cursors[room] for stream, room in streams.items()},
                    count=500, block=self.block_ms))
                delay = 0.5
                for stream, entries in reply or []:
                    room = streams[stream]
                    if not entries or room not in self.cursors:
                        continue
                    types = {_type(i, fields) for i, fields in entries}
                    if "room.closed" in types:
                        del self.cursors[room]
                        self.closed.add(room)
                        continue
                    if types - QUIET_EVENTS:
                        await self._check(room)
                    if room in self.cursors:  # moved after the check: read up to here, decided
                        self.cursors[room] = str(entries[-1][0])
            except REDIS_ERRORS as exc:
                log.warning("next-in-line watcher: redis unavailable (%r); retrying", exc)
                await unless_stopped(self._stop, asyncio.sleep(delay))  # back-off, not synchronisation
                delay = min(delay * 2, 10.0)
            except Exception:  # pragma: no cover - a bug must not end the watcher
                log.exception("next-in-line watcher failed")
                await unless_stopped(self._stop, asyncio.sleep(delay))


def _type(event_id: str, fields: dict[str, str]) -> str:
    try:
        return Event.from_entry(event_id, fields).type
    except (KeyError, ValueError):
        return ""  # malformed: checking costs one read, missing a change costs more
