"""Who is told "You're next.": the decision over a real Redis, once per new head, by one of
any number of processes."""

from __future__ import annotations

import asyncio

from handraise.config import Settings
from handraise.events import read_events
from handraise.phone.control import HostControls, TwilioControl
from handraise.phone.nextup import check_room, may_move_head
from handraise.phone.twiml import PhoneUrls
from handraise.queue import Queue
from handraise.rooms import create_room
from handraise.store import Redis, client_from_url


def controls(queue: Queue) -> HostControls:
    # No Twilio here: announcing fails (and is logged); check_room still says whom it chose.
    return HostControls(queue, TwilioControl(Settings()), PhoneUrls("http://hr.test"))


async def test_the_head_is_chosen_once_each_time_a_hand_becomes_first(redis: Redis) -> None:
    queue = Queue(redis)
    host = controls(queue)
    room = (await create_room(redis, "Next")).room.id
    a, b, c = [await queue.join(room) for _ in range(3)]
    assert await check_room(queue, host, room) is None  # the first look records, says nothing

    await queue.raise_hand(room, a, source="keypad")
    assert await check_room(queue, host, room) is None  # raised into an empty queue: told "number 1"
    await queue.raise_hand(room, b, source="web")
    await queue.raise_hand(room, c, source="web")
    assert await check_room(queue, host, room) is None  # a is still first

    await queue.call_on(room)  # a speaks: b is first now
    assert await check_room(queue, host, room) == b
    assert await check_room(queue, host, room) is None  # once, not on every look
    await queue.update(room, b, muted=False)
    assert await check_room(queue, host, room) is None

    await queue.lower_hand(room, b, by="host")
    assert await check_room(queue, host, room) == c
    await queue.leave(room, c)
    assert await check_room(queue, host, room) is None  # nobody left in line

    # Two hands raised into the empty queue before anyone looked: the first was told its place.
    await queue.raise_hand(room, a, source="keypad")
    await queue.raise_hand(room, b, source="keypad")
    assert await check_room(queue, host, room) is None
    # The head leaves the call: the next one is told.
    await queue.leave(room, a)
    assert await check_room(queue, host, room) == b

    # A reply to the speaker goes ahead of b: its caller was told "number 1" as they raised it.
    d, e = await queue.join(room), await queue.join(room)
    await queue.call_on(room)  # b speaks; nobody in line
    await queue.raise_hand(room, e, source="web")
    assert await check_room(queue, host, room) is None
    await queue.reply(room, d, source="keypad")
    assert await check_room(queue, host, room) is None  # d is first, and was told so
    await queue.lower_hand(room, d, by="host")
    assert await check_room(queue, host, room) == e  # e is first again: told now


async def test_of_many_processes_looking_at_once_exactly_one_gets_the_change(
        redis: Redis, redis_server: str) -> None:
    clients = [client_from_url(redis_server) for _ in range(6)]
    try:
        queues = [Queue(c) for c in clients]
        room = (await create_room(redis, "Racing")).room.id
        queue = Queue(redis)
        people = [await queue.join(room) for _ in range(4)]
        for pid in people:
            await queue.raise_hand(room, pid, source="web")
        await check_room(queue, controls(queue), room)
        for expected in people[1:]:
            await queue.call_on(room)
            chosen = await asyncio.gather(*(check_room(q, controls(q), room) for q in queues))
            assert [c for c in chosen if c is not None] == [expected]
    finally:
        for c in clients:
            await c.aclose()


async def test_only_events_that_can_change_the_first_hand_make_the_watcher_look(redis: Redis) -> None:
    queue = Queue(redis)
    room = (await create_room(redis, "Moves")).room.id
    a, b, c, d = [await queue.join(room) for _ in range(4)]
    await queue.raise_hand(room, a, source="keypad")  # into the empty queue: a is first
    await queue.raise_hand(room, b, source="web")  # behind a
    await queue.raise_hand(room, c, source="keypad")  # behind b
    await queue.call_on(room)  # a speaks: b is first
    await queue.reply(room, d, source="keypad")  # a reply to a goes ahead of b
    await queue.lower_hand(room, c, by="host")  # not first, but lowering is not a raise
    moves = [(e.type, e.participant, may_move_head(e))
             for e in await read_events(redis, room, "0-0", count=100)
             if e.type.startswith(("hand.", "floor.", "speaker."))]
    raised = [(p, moved) for kind, p, moved in moves if kind == "hand.raised"]
    assert raised == [(a, True), (b, False), (c, False), (d, True)]
    assert all(moved for kind, _, moved in moves if kind != "hand.raised")
    assert any(kind == "hand.lowered" for kind, _, _ in moves)
    assert may_move_head(None)  # a malformed entry: look rather than miss a change
