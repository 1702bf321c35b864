"""The floor's timers (invitations to speak, the speaking limit), on a real Redis.

Durations are tiny (the app's settings make them so in tests); waits poll with a deadline.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from handraise import floor
from handraise.events import read_events
from handraise.queue import Queue
from handraise.rooms import create_room, get_room
from handraise.store import Redis, client_from_url


@pytest.fixture
async def room(redis: Redis) -> str:
    return (await create_room(redis, "Floor", unmute="consent")).room.id


async def _types(redis: Redis, room: str) -> list[str]:
    return [e.type for e in await read_events(redis, room)]


async def _until(check, timeout: float = 10.0):  # type: ignore[no-untyped-def]  # noqa: ASYNC109
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)  # polling with a deadline, not synchronisation


async def test_an_invitation_is_answered_once_and_the_room_shows_it(redis: Redis, room: str) -> None:
    queue = Queue(redis)
    a = await queue.join(room)
    await queue.raise_hand(room, a, source="keypad")
    got = await floor.invite(redis, room, a, timeout_s=30, next_hand=True)
    assert got.outcome == "invited" and got.deadline
    invitation = (await get_room(redis, room)).invitation
    assert invitation is not None and invitation.pending and invitation.participant == a
    assert invitation.next is True

    first, second = await asyncio.gather(
        floor.answer(redis, room, a, accept=True, source="keypad"),
        floor.answer(redis, room, a, accept=False, source="web"))
    assert sorted([first.outcome, second.outcome]) == ["accepted", "none"]
    assert (await get_room(redis, room)).invitation.status == "accepted"  # type: ignore[union-attr]
    types = await _types(redis, room)
    assert types.count("speaker.invited") == 1 and types.count("speaker.accepted") == 1
    assert "speaker.declined" not in types
    assert [h.participant for h in await queue.queue(room)] == [a]  # call_on takes it down


async def test_one_invitation_at_a_time_and_a_decline_lowers_the_hand(redis: Redis, room: str) -> None:
    queue = Queue(redis)
    a, b = await queue.join(room), await queue.join(room)
    for p in (a, b):
        await queue.raise_hand(room, p, source="keypad")
    assert (await floor.invite(redis, room, a, timeout_s=30, next_hand=True)).outcome == "invited"
    busy = await floor.invite(redis, room, b, timeout_s=30, next_hand=False)
    assert busy.outcome == "busy" and busy.participant == a
    declined = await floor.answer(redis, room, a, accept=False, source="web")
    assert declined.outcome == "declined" and declined.next is True
    assert [h.participant for h in await queue.queue(room)] == [b]
    events = [e for e in await read_events(redis, room) if e.type == "speaker.declined"]
    assert [(e.participant, e.data["reason"]) for e in events] == [(a, "declined")]
    assert (await floor.answer(redis, room, a, accept=True, source="web")).outcome == "none"


async def test_an_unanswered_invitation_expires_once_across_two_app_instances(
        redis_url: str, redis: Redis, room: str) -> None:
    queue = Queue(redis)
    a = await queue.join(room)
    await queue.raise_hand(room, a, source="keypad")
    await floor.invite(redis, room, a, timeout_s=0.3, next_hand=True)
    other = client_from_url(redis_url)  # a second process on the same Redis
    try:
        claimed: list[floor.TimerAction] = []

        async def expired() -> bool:
            for actions in await asyncio.gather(
                    floor.sweep(redis, warn_s=15, grace_s=10),
                    floor.sweep(other, warn_s=15, grace_s=10)):
                claimed.extend(actions)
            return (await get_room(redis, room)).invitation.status == "no_answer"  # type: ignore[union-attr]

        await _until(expired)
        for _ in range(5):  # later sweeps find nothing more to do
            claimed += await floor.sweep(other, warn_s=15, grace_s=10)
        assert [(c.kind, c.participant, c.next) for c in claimed] == [("no_answer", a, True)]
        events = [e for e in await read_events(redis, room) if e.type == "speaker.declined"]
        assert [e.data["reason"] for e in events] == ["no answer"]
        assert await queue.queue(room) == []  # their hand went down with it
        assert await redis.zscore(floor.TIMERS_KEY, room) is None  # nothing left to look at
        # Too late to accept now.
        assert (await floor.answer(redis, room, a, accept=True, source="keypad")).outcome == "none"
    finally:
        await other.aclose()


async def test_an_answer_after_the_deadline_counts_as_no_answer_even_before_a_sweep(
        redis: Redis, room: str) -> None:
    queue = Queue(redis)
    a = await queue.join(room)
    got = await floor.invite(redis, room, a, timeout_s=0.05, next_hand=False)

    async def past_deadline() -> bool:
        seconds, micros = await redis.time()
        return seconds * 1000 + micros // 1000 >= (got.deadline or 0)

    await _until(past_deadline)
    assert (await floor.answer(redis, room, a, accept=True, source="keypad")).outcome == "expired"
    assert await queue.speaker(room) is None
    assert (await get_room(redis, room)).invitation.status == "no_answer"  # type: ignore[union-attr]


async def test_the_speaking_limit_cues_marks_and_mutes_once_per_turn_across_two_instances(
        redis_url: str, redis: Redis) -> None:
    room = (await create_room(redis, "Limited", speak_limit_s=1, auto_mute=True)).room.id
    queue = Queue(redis)
    a = await queue.join(room)
    await queue.call_on(room, a)
    await floor.schedule(redis, room)
    other = client_from_url(redis_url)
    try:
        claimed: Counter[str] = Counter()

        async def muted() -> bool:
            for actions in await asyncio.gather(
                    floor.sweep(redis, warn_s=0.5, grace_s=0.3),
                    floor.sweep(other, warn_s=0.5, grace_s=0.3)):
                claimed.update(f"{x.kind}:{x.participant}" for x in actions)
            return claimed[f"mute:{a}"] > 0

        await _until(muted)
        for _ in range(5):
            claimed.update(f"{x.kind}:{x.participant}"
                           for x in await floor.sweep(other, warn_s=0.5, grace_s=0.3))
        assert claimed == Counter({f"cue:{a}": 1, f"over:{a}": 1, f"mute:{a}": 1})
        assert (await _types(redis, room)).count("speaker.over_time") == 1

        # A new turn of the same caller starts the timers again.
        await queue.done_speaking(room, a)
        await queue.call_on(room, a)
        await floor.schedule(redis, room)
        claimed.clear()
        await _until(muted)
        assert claimed[f"cue:{a}"] == 1 and claimed[f"over:{a}"] == 1
    finally:
        await other.aclose()


async def test_rooms_without_a_limit_or_invitation_leave_the_index(redis: Redis) -> None:
    room = (await create_room(redis, "Plain")).room.id
    queue = Queue(redis)
    a = await queue.join(room)
    await queue.call_on(room, a)
    await floor.schedule(redis, room)
    assert await floor.sweep(redis, warn_s=15, grace_s=10) == []
    assert await redis.zscore(floor.TIMERS_KEY, room) is None


async def test_an_undelivered_invitation_is_taken_back_and_the_hand_stays(redis: Redis, room: str) -> None:
    queue = Queue(redis)
    a, b = await queue.join(room), await queue.join(room)
    await queue.raise_hand(room, a, source="keypad")
    await floor.invite(redis, room, a, timeout_s=30, next_hand=True)
    assert await floor.withdraw(redis, room, a) is True
    assert (await get_room(redis, room)).invitation is None
    assert [h.participant for h in await queue.queue(room)] == [a]
    assert (await floor.invite(redis, room, b, timeout_s=30, next_hand=False)).outcome == "invited"
    assert await floor.withdraw(redis, room, a) is False  # not theirs any more


async def test_a_limit_set_during_a_turn_applies_to_that_turn(redis: Redis) -> None:
    from handraise.rooms import update_room

    room = (await create_room(redis, "Later")).room.id
    queue = Queue(redis)
    a = await queue.join(room)
    await queue.call_on(room, a)
    assert await floor.sweep(redis, warn_s=0.5, grace_s=0.3) == []
    await update_room(redis, room, speak_limit_s=1)

    async def over() -> bool:
        return any(x.kind == "over" for x in await floor.sweep(redis, warn_s=0.5, grace_s=0.3))

    await _until(over)
