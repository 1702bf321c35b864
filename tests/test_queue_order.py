"""The queue's order on a real Redis: replies, the fair order, and undoing "lower all".

Besides the examples, a property test drives random sequences of raise / reply / lower /
call on / done / lower all / undo / leave-and-rejoin against a plain-Python model of the
rules and checks, after every step, that Redis orders the queue as the model does, gives
the same answers, and writes exactly one event per change.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handraise.errors import Conflict, NotFound
from handraise.events import Event, read_events
from handraise.phone.control import clear_conference
from handraise.queue import UNDO_LOWER_ALL_S, IsSpeaker, NoSpeaker, Queue
from handraise.rooms import close_room, create_room, update_room
from handraise.store import Redis, client_from_url, key


@pytest.fixture
async def room(redis: Redis) -> str:
    return (await create_room(redis, "Standup")).room.id


@pytest.fixture
async def fair_room(redis: Redis) -> str:
    return (await create_room(redis, "Fair standup", order="fair")).room.id


@pytest.fixture
def queue(redis: Redis) -> Queue:
    return Queue(redis)


async def events_of(redis: Redis, room: str, after: str = "0-0") -> list[Event]:
    return [e for e in await read_events(redis, room, after) if e.type != "room.created"]


async def order(queue: Queue, room: str) -> list[tuple[str, str]]:
    return [(h.participant, h.kind) for h in (await queue.snapshot(room)).queue]


# --- replies ------------------------------------------------------------------------------


async def test_replies_go_ahead_of_points_in_the_order_raised_while_the_turn_lasts(
        redis: Redis, queue: Queue, room: str) -> None:
    s, a, b, c, d = [await queue.join(room) for _ in range(5)]
    await queue.call_on(room, s)
    await queue.raise_hand(room, a, source="keypad")
    await queue.raise_hand(room, b, source="web")
    assert await queue.reply(room, c, source="keypad") == (1, True)
    assert await queue.reply(room, d, source="web") == (2, True)
    assert await queue.reply(room, c, source="web") == (1, False)  # again: same place
    assert await order(queue, room) == [(c, "reply"), (d, "reply"), (a, "point"), (b, "point")]
    hand = (await queue.snapshot(room)).hand(c)
    assert hand is not None and hand.reply_to == s and hand.source == "keypad"
    assert await queue.line(room) == [c, d, a, b]
    assert await queue.position(room, d) == 2 and await queue.first_in_line(room) == c

    # The speaker is done: the replies become ordinary hands, in place (by raise time).
    mark = (await events_of(redis, room))[-1].id
    assert await queue.done_speaking(room) is True
    assert await order(queue, room) == [(a, "point"), (b, "point"), (c, "point"), (d, "point")]
    [done] = await events_of(redis, room, mark)
    assert done.type == "speaker.done" and done.data["replies_ended"] == [c, d]


async def test_a_raised_point_that_replies_becomes_a_reply_and_goes_back_to_its_place(
        redis: Redis, queue: Queue, room: str) -> None:
    s, a, b = [await queue.join(room) for _ in range(3)]
    await queue.raise_hand(room, a, source="keypad")
    await queue.raise_hand(room, b, source="keypad")
    await queue.call_on(room, s)
    mark = (await events_of(redis, room))[-1].id
    assert await queue.reply(room, b, source="keypad") == (1, True)
    [ev] = await events_of(redis, room, mark)
    assert (ev.type, ev.data["kind"], ev.data["reply_to"], ev.data["position"]) == \
        ("hand.updated", "reply", s, 1)
    assert await order(queue, room) == [(b, "reply"), (a, "point")]
    assert await queue.raise_hand(room, b, source="web") == (1, False)  # still a reply
    await queue.done_speaking(room)
    assert await order(queue, room) == [(a, "point"), (b, "point")]


async def test_calling_on_a_reply_keeps_the_other_replies_and_a_new_point_ends_them(
        queue: Queue, room: str) -> None:
    s, a, r1, r2 = [await queue.join(room) for _ in range(4)]
    await queue.raise_hand(room, a, source="keypad")
    await queue.call_on(room, s)
    await queue.reply(room, r1, source="keypad")
    await queue.reply(room, r2, source="keypad")
    turn = await queue.call_on(room)  # "Call on next": the first reply
    assert turn is not None and (turn.speaker, turn.previous) == (r1, s)
    assert await order(queue, room) == [(r2, "reply"), (a, "point")]
    turn = await queue.call_on(room, a)  # a new point: the exchange is over
    assert await order(queue, room) == [(r2, "point")]


async def test_a_reply_needs_someone_else_speaking(queue: Queue, room: str) -> None:
    s, a = await queue.join(room), await queue.join(room)
    with pytest.raises(NoSpeaker, match="Nobody is speaking"):
        await queue.reply(room, a, source="keypad")
    await queue.call_on(room, s)
    with pytest.raises(IsSpeaker):
        await queue.reply(room, s, source="keypad")
    assert isinstance(NoSpeaker("x"), Conflict)
    with pytest.raises(NotFound):
        await queue.reply(room, "p-nobody", source="keypad")
    assert await queue.line(room) == []


async def test_the_speaker_leaving_ends_the_replies(queue: Queue, room: str) -> None:
    s, a, b = [await queue.join(room) for _ in range(3)]
    await queue.raise_hand(room, a, source="keypad")
    await queue.call_on(room, s)
    await queue.reply(room, b, source="keypad")
    await queue.leave(room, s)
    assert await order(queue, room) == [(a, "point"), (b, "point")]
    assert (await queue.snapshot(room)).hand(b).reply_to is None  # type: ignore[union-attr]


# --- the fair order -----------------------------------------------------------------------


async def test_fair_order_puts_those_who_have_not_spoken_first(
        redis: Redis, queue: Queue, fair_room: str) -> None:
    room = fair_room
    a, b, c = [await queue.join(room) for _ in range(3)]
    await queue.call_on(room, a)
    await queue.done_speaking(room)
    await queue.raise_hand(room, a, source="keypad")  # spoke already: behind the others
    assert await queue.raise_hand(room, b, source="keypad") == (1, True)
    assert await queue.raise_hand(room, c, source="keypad") == (2, True)
    assert await queue.line(room) == [b, c, a]
    assert (await queue.call_on(room)).speaker == b  # type: ignore[union-attr]
    await queue.done_speaking(room)
    await queue.raise_hand(room, b, source="keypad")  # b spoke too: FIFO among a and b
    assert await queue.line(room) == [c, a, b]
    # Lowering and raising again goes to the back of one's group.
    await queue.lower_hand(room, c, by="keypad")
    await queue.raise_hand(room, c, source="keypad")
    assert await queue.line(room) == [c, a, b]  # the only one not to have spoken
    # The same room in fifo order: by raise time only (the setting applies at once).
    await update_room(redis, room, order="fifo")
    assert await queue.line(room) == [a, b, c]


async def test_who_has_spoken_is_forgotten_when_the_conference_ends(
        redis: Redis, queue: Queue, fair_room: str) -> None:
    room = fair_room
    a, b = await queue.join(room), await queue.join(room)
    await queue.call_on(room, a)
    await queue.done_speaking(room)
    assert await redis.smembers(key(room, "spoken")) == {a}
    await update_room(redis, room, conference_sid="CF1")
    await clear_conference(queue, room, "CF1")  # nobody is in CF1: both stay, a is new again
    assert await redis.exists(key(room, "spoken")) == 0
    await queue.raise_hand(room, a, source="keypad")
    await queue.raise_hand(room, b, source="keypad")
    assert await queue.line(room) == [a, b]


async def test_fair_order_holds_under_racing_raises_from_two_processes(
        redis: Redis, redis_url: str, fair_room: str) -> None:
    room = fair_room
    other = client_from_url(redis_url)
    try:
        q1, q2 = Queue(redis), Queue(other)
        people = [await q1.join(room) for _ in range(12)]
        veterans = people[:6]
        for p in veterans:
            await q1.call_on(room, p)
        await q1.done_speaking(room)
        # A process that has been running: its client knows the nodes (a fresh cluster
        # client's first commands, sent at once, may be retried; seen only on the cluster).
        await q2.line(room)
        mark = (await events_of(redis, room))[-1].id
        results = await asyncio.gather(*(
            (q1 if i % 2 else q2).raise_hand(room, p, source="keypad")
            for i, p in enumerate(people * 2)))
        line = await q1.line(room)
        assert sorted(line) == sorted(people)  # no duplicates, nobody lost
        assert set(line[:6]) == set(people[6:])  # newcomers first
        raised = [e for e in await events_of(redis, room, mark) if e.type == "hand.raised"]
        assert len(raised) == 12 and sum(new for _, new in results) == 12
        first = {e.participant: e.data["raised_at"] for e in raised}
        for group in (line[:6], line[6:]):  # FIFO within each group
            assert [first[p] for p in group] == sorted(first[p] for p in group)
    finally:
        await other.aclose()


# --- undo "lower all" -----------------------------------------------------------------------


async def test_undo_lower_all_brings_back_the_same_hands_in_the_same_order(
        redis: Redis, queue: Queue, room: str) -> None:
    s, a, b, c = [await queue.join(room) for _ in range(4)]
    await queue.raise_hand(room, a, source="keypad")
    await queue.raise_hand(room, b, source="web")
    await queue.set_topic(room, b, "Budget")
    await queue.call_on(room, s)
    await queue.reply(room, c, source="api")
    before = (await queue.snapshot(room)).queue
    assert await queue.lower_all(room) == 3
    state = await queue.snapshot(room)
    assert state.queue == [] and state.undo_until is not None
    assert 0 < state.undo_until - state.now <= UNDO_LOWER_ALL_S * 1000
    assert (await queue.participant(room, b)).topic is None

    await queue.raise_hand(room, a, source="web")  # raised again meanwhile
    mark = (await events_of(redis, room))[-1].id
    assert await queue.undo_lower_all(room) == 3
    after = await queue.snapshot(room)
    assert [(h.participant, h.position, h.raised_at, h.source, h.kind, h.reply_to)
            for h in after.queue] == \
        [(h.participant, h.position, h.raised_at, h.source, h.kind, h.reply_to) for h in before]
    assert (await queue.participant(room, b)).topic == "Budget"
    assert after.undo_until is None
    [ev] = await events_of(redis, room, mark)
    assert ev.type == "hands.restored" and ev.data["participants"] == [c, a, b]
    assert await queue.undo_lower_all(room) is None  # once only


async def test_undo_skips_who_left_or_speaks_and_lapses_with_its_ttl(
        redis: Redis, queue: Queue, room: str) -> None:
    a, b, c = [await queue.join(room) for _ in range(3)]
    for p in (a, b, c):
        await queue.raise_hand(room, p, source="keypad")
    await queue.lower_all(room)
    await queue.leave(room, a)
    await queue.call_on(room, b)
    assert await queue.undo_lower_all(room) == 1
    assert await queue.line(room) == [c]
    await queue.lower_all(room)
    await redis.pexpire(key(room, "undo-lower-all"), 1)  # as 15 s later
    await until_gone(redis, key(room, "undo-lower-all"))
    assert await queue.undo_lower_all(room) is None
    assert (await queue.snapshot(room)).undo_until is None


async def until_gone(redis: Redis, name: str) -> None:
    for _ in range(200):
        if not await redis.exists(name):
            return
        await asyncio.sleep(0.005)  # polling with a deadline
    raise TimeoutError(name)


async def test_closing_the_room_forgets_replies_spoken_and_undo(
        redis: Redis, queue: Queue, fair_room: str) -> None:
    room = fair_room
    s, a = await queue.join(room), await queue.join(room)
    await queue.call_on(room, s)
    await queue.reply(room, a, source="keypad")
    await queue.lower_all(room)
    await close_room(redis, room)
    for part in ("replies", "reply-to", "spoken", "undo-lower-all"):
        assert await redis.exists(key(room, part)) == 0, part


# --- the property test ------------------------------------------------------------------------

PEOPLE = ("p1", "p2", "p3", "p4")


@dataclass
class Model:
    """The queue's rules in plain Python (see handraise/queue.py's docstring)."""

    fair: bool
    clock: int = 0
    hands: dict[str, int] = field(default_factory=dict)  # pid -> raise time
    replies: dict[str, tuple[int, str]] = field(default_factory=dict)  # pid -> (time, to)
    spoken: set[str] = field(default_factory=set)
    speaker: str | None = None
    undo: list[tuple[str, int, tuple[int, str] | None]] | None = None

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    def line(self) -> list[str]:
        replies = sorted(self.replies, key=lambda p: self.replies[p][0])
        points = sorted((p for p in self.hands if p not in self.replies),
                        key=lambda p: (self.fair and p in self.spoken, self.hands[p]))
        return replies + points

    def kinds(self) -> list[tuple[str, str]]:
        return [(p, "reply" if p in self.replies else "point") for p in self.line()]

    def end_replies(self) -> None:
        self.replies.clear()

    # Each returns (the answer Redis should give, how many events it should write).
    def raise_(self, p: str) -> tuple[object, int]:
        if p in self.hands:
            return (self.line().index(p) + 1, False), 0
        self.hands[p] = self.tick()
        return (self.line().index(p) + 1, True), 1

    def reply(self, p: str) -> tuple[object, int]:
        if self.speaker is None:
            return "NoSpeaker", 0
        if self.speaker == p:
            return "IsSpeaker", 0
        if p in self.replies:
            return (self.line().index(p) + 1, False), 0
        at = self.tick()
        self.hands.setdefault(p, at)
        self.replies[p] = (at, self.speaker)
        return (self.line().index(p) + 1, True), 1

    def lower(self, p: str) -> tuple[object, int]:
        had = p in self.hands
        self.hands.pop(p, None)
        self.replies.pop(p, None)
        return had, int(had)

    def call_on(self, p: str | None) -> tuple[object, int]:
        if p is None:
            line = self.line()
            if not line:
                return None, 0
            p = line[0]
        previous = self.speaker
        if previous == p:
            return (p, None), 0
        replying = p in self.replies
        self.hands.pop(p, None)
        self.replies.pop(p, None)
        self.speaker = p
        self.spoken.add(p)
        if not replying:
            self.end_replies()
        return (p, previous), 1

    def done(self) -> tuple[object, int]:
        if self.speaker is None:
            return False, 0
        self.speaker = None
        self.end_replies()
        return True, 1

    def lower_all(self) -> tuple[object, int]:
        line = self.line()
        if not line:
            return 0, 0
        self.undo = [(p, self.hands[p], self.replies.get(p)) for p in line]
        self.hands.clear()
        self.replies.clear()
        return len(line), 1

    def undo_lower_all(self) -> tuple[object, int]:
        if self.undo is None:
            return None, 0
        saved, self.undo = self.undo, None
        back = 0
        for p, at, reply in saved:
            if p == self.speaker:
                continue
            self.hands[p] = at
            if reply is not None and reply[1] == self.speaker:
                self.replies[p] = reply
            back += 1
        return back, int(back > 0)

    def rejoin(self, p: str) -> tuple[object, int]:
        """Leave and join again (two events): hand gone; the speaker leaving ends the turn."""
        self.hands.pop(p, None)
        self.replies.pop(p, None)
        if self.speaker == p:
            self.speaker = None
            self.end_replies()
        return None, 2


#: Operations, weighted towards those that build up a queue worth ordering.
OPS = st.one_of(
    st.tuples(st.sampled_from(["raise"] * 4 + ["reply"] * 4 + ["call_on"] * 3 + ["lower", "rejoin"]),
              st.sampled_from(PEOPLE)),
    st.tuples(st.sampled_from(["call_next"] * 3 + ["done", "done", "lower_all", "undo"]),
              st.none()),
)


async def _apply(q: Queue, room: str, op: str, p: str | None) -> object:
    if op == "raise":
        assert p is not None
        return await q.raise_hand(room, p, source="keypad")
    if op == "reply":
        assert p is not None
        try:
            return await q.reply(room, p, source="web")
        except Conflict as exc:
            return type(exc).__name__
    if op == "lower":
        assert p is not None
        return await q.lower_hand(room, p, by="keypad")
    if op in ("call_on", "call_next"):
        turn = await q.call_on(room, p)
        return None if turn is None else (turn.speaker, turn.previous)
    if op == "done":
        return await q.done_speaking(room)
    if op == "lower_all":
        return await q.lower_all(room)
    if op == "undo":
        return await q.undo_lower_all(room)
    assert op == "rejoin" and p is not None
    await q.leave(room, p)
    await q.join(room, participant_id=p)
    return None


async def _run_against_model(redis_url: str, fair: bool, ops: list[tuple[str, str | None]]) -> None:
    redis = client_from_url(redis_url)
    try:
        q = Queue(redis)
        room = (await create_room(redis, "Model", order="fair" if fair else "fifo")).room.id
        for p in PEOPLE:
            await q.join(room, participant_id=p)
        model = Model(fair=fair)
        last = (await read_events(redis, room, "0-0"))[-1].id
        for step, (op, p) in enumerate(ops):
            expected, n_events = getattr(model, {"raise": "raise_", "call_next": "call_on",
                                                 "undo": "undo_lower_all"}.get(op, op))(
                *(() if op in ("done", "lower_all", "undo") else (p,)))
            got = await _apply(q, room, op, p)
            where = f"step {step}: {op} {p or ''} after {ops[:step]}"
            assert got == expected, where
            state = await q.snapshot(room)
            assert [(h.participant, h.kind) for h in state.queue] == model.kinds(), where
            assert [h.position for h in state.queue] == list(range(1, len(state.queue) + 1))
            assert state.speaker == model.speaker, where
            # The head alone (what the next-up watcher reads, and the id of the read it
            # records) agrees with the whole snapshot.
            head, _ = await q.head_change(room, key(room, "test-head"), 60)
            marked = await redis.hgetall(key(room, "test-head"))
            assert (head, f"{marked['ms']}-{marked['seq']}") == (
                state.queue[0].participant if state.queue else None, state.last_event_id), where
            # So does each caller's own part of it (what their page reads).
            for person in PEOPLE:
                view = await q.view(room, person)
                mine, theirs = view.hand(person), state.hand(person)
                assert (mine and replace(mine, wait_s=0), view.participant(person), view.speaker,
                        view.last_event_id) == (theirs and replace(theirs, wait_s=0),
                                                state.participant(person), state.speaker,
                                                state.last_event_id), where
                assert [h.participant for h in view.queue] == ([person] if state.hand(person) else [])
            new = await read_events(redis, room, last)
            assert len(new) == n_events, (where, [e.type for e in new])
            if new:
                last = new[-1].id
    finally:
        await redis.aclose()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fair=st.booleans(), ops=st.lists(OPS, min_size=12, max_size=40))
def test_the_redis_queue_orders_hands_as_the_model_does(redis_server: str, fair: bool,
                                                        ops: list[tuple[str, str | None]]) -> None:
    asyncio.run(_run_against_model(redis_server, fair, ops))


async def test_the_hand_log_treats_an_undone_lower_all_as_never_lowered(
        redis: Redis, queue: Queue, room: str) -> None:
    from handraise.handlog import CALLED_ON, LOWERED_BY_HOST, load_hand_log

    a, b = await queue.join(room, name="Ada"), await queue.join(room, name="Bo")
    await queue.raise_hand(room, a, source="keypad")
    await queue.raise_hand(room, b, source="web")
    await queue.lower_all(room)
    await queue.undo_lower_all(room)
    await queue.call_on(room)
    rows = (await load_hand_log(redis, room)).rows
    assert [(r.display_name, r.source, r.how_ended) for r in rows] == \
        [("Ada", "keypad", CALLED_ON), ("Bo", "web", "")]
    await queue.lower_all(room)  # not undone: lowered by the host
    rows = (await load_hand_log(redis, room)).rows
    assert [r.how_ended for r in rows] == [CALLED_ON, LOWERED_BY_HOST]
