"""The participants and hand queue domain, on a real Redis."""

from __future__ import annotations

import asyncio
import random

import pytest

from handraise.errors import Invalid, NotFound
from handraise.events import Event, read_events
from handraise.queue import Queue, RoomFull, Turn, mask_number
from handraise.rooms import close_room, create_room
from handraise.store import Redis, client_from_url, key


@pytest.fixture
async def room(redis: Redis) -> str:
    return (await create_room(redis, "Standup")).room.id


@pytest.fixture
def queue(redis: Redis) -> Queue:
    return Queue(redis)


async def events_of(redis: Redis, room: str, after: str = "0-0") -> list[Event]:
    return [e for e in await read_events(redis, room, after) if e.type != "room.created"]


async def test_a_second_raise_keeps_the_first_place_and_adds_no_event(
    redis: Redis, queue: Queue, room: str
) -> None:
    a, b = await queue.join(room), await queue.join(room)
    assert await queue.raise_hand(room, a, source="keypad") == (1, True)
    assert await queue.raise_hand(room, b, source="web") == (2, True)
    before = await events_of(redis, room)
    assert await queue.raise_hand(room, a, source="web") == (1, False)
    assert await events_of(redis, room) == before
    assert [h.participant for h in await queue.queue(room)] == [a, b]
    assert [h.source for h in await queue.queue(room)] == ["keypad", "web"]


async def test_lowering_and_raising_again_goes_to_the_back(queue: Queue, room: str) -> None:
    a, b, c = [await queue.join(room) for _ in range(3)]
    for p in (a, b, c):
        await queue.raise_hand(room, p, source="keypad")
    assert await queue.lower_hand(room, a, by="web") is True
    assert await queue.lower_hand(room, a, by="web") is False
    await queue.raise_hand(room, a, source="keypad")
    assert [h.participant for h in await queue.queue(room)] == [b, c, a]
    assert await queue.position(room, a) == 3
    assert await queue.position(room, await queue.join(room)) is None


async def test_queue_reports_positions_and_wait_times_from_the_redis_clock(
    queue: Queue, room: str
) -> None:
    a, b = await queue.join(room), await queue.join(room)
    await queue.raise_hand(room, a, source="keypad")
    await queue.raise_hand(room, b, source="prompt")
    state = await queue.snapshot(room)
    assert [(h.participant, h.position) for h in state.queue] == [(a, 1), (b, 2)]
    assert state.queue[0].raised_at <= state.queue[1].raised_at <= state.now
    assert all(h.wait_s >= 0 for h in state.queue)
    assert state.queue[0].wait_s >= state.queue[1].wait_s


async def test_call_on_next_makes_the_first_hand_the_speaker(
    redis: Redis, queue: Queue, room: str
) -> None:
    a, b = await queue.join(room), await queue.join(room)
    await queue.raise_hand(room, a, source="keypad")
    await queue.raise_hand(room, b, source="keypad")
    assert await queue.call_on(room) == Turn(speaker=a, previous=None)
    assert await queue.speaker(room) == a
    assert [h.participant for h in await queue.queue(room)] == [b]
    assert await queue.call_on(room) == Turn(speaker=b, previous=a)
    last = (await events_of(redis, room))[-1]
    assert (last.type, last.participant, last.data["previous"]) == ("speaker.called", b, a)
    assert await queue.call_on(room) is None  # nobody left in the queue
    assert await queue.done_speaking(room, a) is False  # a is no longer the speaker
    assert await queue.done_speaking(room) is True
    assert await queue.speaker(room) is None


async def test_call_on_a_named_participant_without_a_hand(queue: Queue, room: str) -> None:
    a = await queue.join(room)
    assert await queue.call_on(room, a) == Turn(speaker=a, previous=None)
    assert await queue.call_on(room, a) == Turn(speaker=a, previous=None)  # no change, no event
    with pytest.raises(NotFound):
        await queue.call_on(room, "pnobody")


async def test_racing_call_ons_each_see_exactly_one_previous_speaker(
    queue: Queue, room: str
) -> None:
    people = [await queue.join(room) for _ in range(8)]
    turns = await asyncio.gather(*(queue.call_on(room, p) for p in people))
    assert all(t is not None for t in turns)
    previous = [t.previous for t in turns if t is not None]
    # Each turn ended exactly one other: a chain, so only the last speaker stays live.
    assert previous.count(None) == 1
    last = await queue.speaker(room)
    assert sorted(p for p in previous if p) == sorted(p for p in people if p != last)


async def test_leaving_removes_the_hand_and_ends_the_turn(
    redis: Redis, queue: Queue, room: str
) -> None:
    a, b = await queue.join(room), await queue.join(room)
    await queue.raise_hand(room, a, source="keypad")
    await queue.call_on(room, b)
    assert await queue.leave(room, a, reason="hangup") is True
    assert await queue.leave(room, b) is True
    assert await queue.leave(room, b) is False
    assert await queue.queue(room) == []
    assert await queue.speaker(room) is None
    left = [e for e in await events_of(redis, room) if e.type == "participant.left"]
    assert [(e.participant, e.data["hand_lowered"], e.data["speaker_ended"]) for e in left] == [
        (a, True, False),
        (b, False, True),
    ]
    with pytest.raises(NotFound):
        await queue.raise_hand(room, a, source="keypad")


async def test_update_emits_only_the_fields_that_changed(
    redis: Redis, queue: Queue, room: str
) -> None:
    a = await queue.join(room, number="+14155554821", name="Ada")
    mark = (await events_of(redis, room))[-1].id
    assert await queue.update(room, a, muted=False, hold=False, name="Ada") == 1
    assert await queue.update(room, a, muted=False) == 0
    assert await queue.update(room, a, channels=["web", "phone"]) == 1
    changes = [e.data for e in await events_of(redis, room, mark)]
    assert changes == [{"muted": False}, {"channels": ["phone", "web"]}]
    p = await queue.participant(room, a)
    assert (p.muted, p.name, p.channels) == (False, "Ada", ("phone", "web"))


async def test_events_never_carry_the_full_phone_number(
    redis: Redis, queue: Queue, room: str
) -> None:
    a = await queue.join(room, number="+14155554821")
    joined = (await events_of(redis, room))[-1]
    assert joined.data["number_masked"] == "+1 ••• ••• 4821"
    assert "4155554821" not in joined.to_json()
    assert (await queue.participant(room, a)).to_dict()["number_masked"] == "+1 ••• ••• 4821"
    assert "number" not in (await queue.participant(room, a)).to_dict()
    assert (await queue.participant(room, a)).to_dict(host_view=True)["number"] == "+14155554821"


@pytest.mark.parametrize(
    ("number", "shown"),
    [
        ("+14155554821", "+1 ••• ••• 4821"),
        ("+442071838750", "+•• ••• 8750"),
        ("anonymous", "Private number"),
        (None, "Unknown number"),
        ("12", "Private number"),
    ],
)
def test_mask_number_hides_all_but_the_last_four_digits(number: str | None, shown: str) -> None:
    assert mask_number(number) == shown


async def test_lower_all_is_one_event(redis: Redis, queue: Queue, room: str) -> None:
    people = [await queue.join(room) for _ in range(4)]
    for p in people:
        await queue.raise_hand(room, p, source="web")
    mark = (await events_of(redis, room))[-1].id
    assert await queue.lower_all(room) == 4
    assert await queue.lower_all(room) == 0
    (cleared,) = await events_of(redis, room, mark)
    assert cleared.type == "hands.cleared"
    assert cleared.data["participants"] == people


async def test_a_closed_room_refuses_callers_and_forgets_its_state(
    redis: Redis, queue: Queue, room: str
) -> None:
    a = await queue.join(room)
    await queue.raise_hand(room, a, source="keypad")
    assert await close_room(redis, room) is True
    assert (await queue.snapshot(room)).queue == []
    with pytest.raises(Invalid):
        await queue.join(room)


async def test_a_room_at_its_cap_refuses_a_newcomer_without_a_trace(
    redis: Redis, queue: Queue, room: str
) -> None:
    people = [await queue.join(room, cap=5) for _ in range(5)]
    before = await events_of(redis, room)
    with pytest.raises(RoomFull) as refused:
        await queue.join(room, cap=5, participant_id="p-late")
    assert refused.value.cap == 5 and refused.value.status == 409
    assert len((await queue.snapshot(room)).participants) == 5
    assert await events_of(redis, room) == before  # no event, no hash left behind
    assert not await redis.exists(f"hr:{{{room}}}:p:p-late")
    # Someone already in (a retried webhook) is still a no-op, not a refusal.
    assert await queue.join(room, cap=5, participant_id=people[0]) == people[0]
    # Without a cap (a caller Twilio already has in its conference) nobody is refused.
    await queue.join(room)
    # A seat freed by a leave is taken again.
    await queue.leave(room, people[1])
    await queue.leave(room, people[2])
    await queue.join(room, cap=5)
    with pytest.raises(RoomFull):
        await queue.join(room, cap=5)


async def test_racing_joins_never_overfill_a_room(queue: Queue, room: str) -> None:
    async def attempt() -> bool:
        try:
            await queue.join(room, cap=10)
            return True
        except RoomFull:
            return False

    results = await asyncio.gather(*(attempt() for _ in range(40)))
    assert sum(results) == 10
    assert len((await queue.snapshot(room)).participants) == 10


async def test_unknown_source_is_refused(queue: Queue, room: str) -> None:
    a = await queue.join(room)
    with pytest.raises(Invalid):
        await queue.raise_hand(room, a, source="fax")  # type: ignore[arg-type]


async def test_200_concurrent_raises_and_lowers_from_phone_and_web_stay_consistent(
    redis: Redis, redis_url: str, room: str
) -> None:
    # Two separate clients play the phone and web channels, as two processes would.
    web_client = client_from_url(redis_url)
    phone_q, web_q = Queue(redis), Queue(web_client)
    people = [await phone_q.join(room) for _ in range(20)]
    mark = (await events_of(redis, room))[-1].id
    effective = {"raise": 0, "lower": 0}

    async def channel(q: Queue, seed: int, source: str) -> None:
        rng = random.Random(seed)
        for _ in range(100):
            pid = rng.choice(people)
            if rng.random() < 0.6:
                _, new = await q.raise_hand(room, pid, source=source)  # type: ignore[arg-type]
                effective["raise"] += new
            else:
                lowered = await q.lower_hand(room, pid, by=source)  # type: ignore[arg-type]
                effective["lower"] += lowered

    try:
        await asyncio.gather(channel(phone_q, 1, "keypad"), channel(web_q, 2, "web"))
    finally:
        await web_client.aclose()

    events = await events_of(redis, room, mark)
    assert sum(e.type == "hand.raised" for e in events) == effective["raise"]
    assert sum(e.type == "hand.lowered" for e in events) == effective["lower"]
    assert len(events) == effective["raise"] + effective["lower"]

    # Replaying the events in stream order gives exactly the queue Redis holds.
    replay: list[str] = []
    for e in events:
        assert e.participant is not None
        if e.type == "hand.raised":
            assert e.participant not in replay
            replay.append(e.participant)
            assert e.data["position"] == len(replay)
        else:
            replay.remove(e.participant)
    final = [h.participant for h in await phone_q.queue(room)]
    assert final == replay
    assert len(final) == len(set(final))
    assert [h.position for h in await phone_q.queue(room)] == list(range(1, len(final) + 1))


async def test_room_and_participant_are_read_together_or_not_found(
    redis: Redis, queue: Queue, room: str
) -> None:
    pid = await queue.join(room, call_sid="CA" + "1" * 32, label="Ada")
    got_room, got_participant = await queue.room_and_participant(room, pid)
    assert got_room.id == room and got_room.name == "Standup"
    assert (got_participant.id, got_participant.label) == (pid, "Ada")
    other = (await create_room(redis, "Other")).room.id
    for r, p in ((room, "p-nobody"), (other, pid), ("r-nosuchroom", pid), ("bad id{}", pid)):
        with pytest.raises(NotFound):
            await queue.room_and_participant(r, p)


async def test_other_reads_ride_along_with_the_room_and_participant(
    redis: Redis, queue: Queue, room: str
) -> None:
    pid = await queue.join(room, label="Ada")
    await redis.set(key(room, "test-mark"), "seen")
    found, (mark, gone) = await queue.room_and_participant_with(
        room, pid, lambda pipe: pipe.get(key(room, "test-mark")),
        lambda pipe: pipe.exists(key(room, "none")))
    assert not isinstance(found, NotFound)
    assert (found[0].name, found[1].label, mark, gone) == ("Standup", "Ada", "seen", 0)
    # A participant not there: said so, and the other reads still answered.
    found, [mark] = await queue.room_and_participant_with(
        room, "p-nobody", lambda pipe: pipe.get(key(room, "test-mark")))
    assert isinstance(found, NotFound) and "p-nobody" in found.message
    assert mark == "seen"
