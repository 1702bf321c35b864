"""'You're next.': when a hand becomes first in line, its caller hears it privately.

One place decides, from the room's events, whatever moved the queue: the head was called
on, lowered, left, every hand was lowered, or a hand was put ahead (another feature's
event); not a hand raised behind others (:func:`may_move_head`). After a batch of such
events the watcher makes one Redis call, :meth:`~handraise.queue.Queue.head_change`: it
reads the head of the queue and the id of the last event and compares them with the head
the room's marker recorded, and the id of the read it came from, and records the new one,
in one atomic step. Exactly one caller sees a given change of head, so with any number of
processes watching the same room one of them announces, once per time a hand becomes
first; a stale read (older than the one recorded) changes nothing.

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
from ..events import REDIS_ERRORS, Event, unless_stopped
from ..queue import Queue
from ..rooms import get_room
from ..store import global_key, key
from .control import HostControls

log = logging.getLogger(__name__)


#: Events that cannot change who is first in line (anything else may, including the
#: event types of features added later).
QUIET_EVENTS = frozenset({"participant.joined", "participant.updated", "room.created",
                          "room.updated", "room.closed"})
MARKER_TTL_S = 7 * 24 * 3600


def marker_key(room: str) -> str:
    """The room's last announced head of the queue and the event it was read at."""
    return key(room, "next-up")


async def check_room(queue: Queue, host: HostControls, room: str, *,
                     quiet: bool = False) -> str | None:
    """Announce "You're next." to the head of ``room``'s queue if it just became first.

    Returns the participant told (or who would have been, with ``announce_next`` off or
    ``quiet``: only record the head), else None. Safe to call from any number of processes
    at once: one of them gets the change.
    """
    head, change = await queue.head_change(room, marker_key(room), MARKER_TTL_S)
    if head is None or change not in ("after_empty", "different"):
        return None  # the same head, a stale read, a first look, or told "number 1" already
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
                    events = [_event(i, fields) for i, fields in entries]
                    if any(e is not None and e.type == "room.closed" for e in events):
                        del self.cursors[room]
                        self.closed.add(room)
                        continue
                    if any(may_move_head(e) for e in events):
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


def may_move_head(event: Event | None) -> bool:
    """Whether ``event`` may have changed who is first in line (None: a malformed entry,
    which may: checking costs one read, missing a change costs more).

    A hand raised behind others (the ``position`` the raise script recorded is over 1)
    leaves the head where it was: most raises in a big room, and two reads saved each.
    """
    if event is None:
        return True
    if event.type in QUIET_EVENTS:
        return False
    if event.type == "hand.raised":
        position = event.data.get("position")
        return not (isinstance(position, int) and position > 1)
    return True


def _event(event_id: str, fields: dict[str, str]) -> Event | None:
    try:
        return Event.from_entry(event_id, fields)
    except (KeyError, ValueError, TypeError, AttributeError):
        return None
