"""The media stream handler, fuzzed: random frames on one stream never raise, and never
touch another participant's hand or record."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fuzzkit import Fuzz, b64, encode, examples, media, raw_messages, start
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handraise.dsp import synth
from handraise.phone.media import MediaHub, MediaStream
from handraise.phone.streams import note_gather
from handraise.phone.webhooks import phone
from handraise.rooms import create_room
from handraise.store import key

CALL_A, CALL_B = "CA" + "a1" * 16, "CA" + "b2" * 16


def _tones(keys: str) -> list[bytes]:
    return synth.to_frames(synth.dtmf(keys, tone_ms=80, gap_ms=80))


steps = st.one_of(
    st.tuples(st.just("start"), st.sampled_from(["a", "b", "other"]), st.sampled_from(["room", "other"]),
              st.sampled_from([CALL_A, "CA" + "0" * 32, ""])),
    st.tuples(st.just("tones"), st.sampled_from(["*1", "*2", "*0", "1", "#", "*12"]),
              st.sampled_from(["MZ1", "MZ2"])),
    st.tuples(st.just("noise"), st.lists(st.binary(min_size=0, max_size=400), max_size=8)),
    st.tuples(st.just("raw"), raw_messages),
    st.tuples(st.just("stop"), st.sampled_from(["MZ1", "MZ2"])),
)


async def _scenario(fuzz: Fuzz, plan: list[tuple[Any, ...]]) -> None:
    redis, q = fuzz.redis, fuzz.queue
    room = (await create_room(redis, "Fuzzed stream")).room  # keypad mode "stream"
    a = await q.join(room.id, call_sid=CALL_A, number="+15550100001")
    b = await q.join(room.id, call_sid=CALL_B, number="+15550100002", name="Bea")
    await q.raise_hand(room.id, b, source="web")
    await q.set_topic(room.id, b, "Bea's point")
    await note_gather(redis, room.id, a, "")  # a is in the conference: their keys count
    b_before = await redis.hgetall(key(room.id, "p", b))
    b_score = await redis.zscore(key(room.id, "hands"), b)

    hub = MediaHub()
    stream = MediaStream(phone(fuzz.app), hub, lambda code, reason: None)
    seq = 2
    for step in plan:
        if step[0] == "start":
            who = {"a": a, "b": b, "other": "p_nobody"}[step[1]]
            where = room.id if step[2] == "room" else "r_nowhere"
            messages = [encode(start("MZ1", step[3], where, who))]
        elif step[0] == "tones":
            messages = [encode(media(step[2], b64(f), seq + i)) for i, f in enumerate(_tones(step[1]))]
        elif step[0] == "noise":
            messages = [encode(media("MZ1", b64(f), seq + i)) for i, f in enumerate(step[1])]
        elif step[0] == "raw":
            messages = [step[1]]
        else:
            messages = [encode({"event": "stop", "streamSid": step[1], "sequenceNumber": str(seq),
                                "stop": {"callSid": CALL_A}})]
        seq += len(messages)
        for raw in messages:
            stream.on_message(raw)  # anything escaping here fails the test
            if stream.starting is not None and not stream.starting.done():
                await stream.starting  # the server waits for the start check, so do we
        if stream.closed is not None:
            break  # the server closes the socket
    stream.dropped()
    await hub.drain()

    assert await redis.hgetall(key(room.id, "p", b)) == b_before
    assert await redis.zscore(key(room.id, "hands"), b) == b_score
    mine = await redis.hgetall(key(room.id, "p", a))
    assert mine.get("hand_source", "keypad") == "keypad"  # only the keypad moved a's hand
    assert set(await redis.smembers(key(room.id, "participants"))) == {a, b}


@settings(max_examples=examples(100), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(steps, min_size=1, max_size=8))
def test_random_frames_on_one_stream_never_raise_nor_touch_another_participant(
        fuzz: Fuzz, caplog: pytest.LogCaptureFixture, plan: list[tuple[Any, ...]]) -> None:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="handraise"):
        fuzz.run(_scenario(fuzz, plan))
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not failures, failures[0].getMessage()


def test_a_stream_for_the_caller_raises_their_hand_with_star_1(fuzz: Fuzz) -> None:
    # The scenario's own check: a started stream of a does move a's hand (else the
    # property above would hold vacuously).
    async def run() -> None:
        redis, q = fuzz.redis, fuzz.queue
        room = (await create_room(redis, "Reachable")).room
        a = await q.join(room.id, call_sid=CALL_A, number="+15550100001")
        await note_gather(redis, room.id, a, "")
        hub = MediaHub()
        stream = MediaStream(phone(fuzz.app), hub, lambda code, reason: None)
        stream.on_message(encode(start("MZ1", CALL_A, room.id, a)))
        assert stream.starting is not None
        await stream.starting
        for i, frame in enumerate(_tones("*1")):
            stream.on_message(encode(media("MZ1", b64(frame), 2 + i)))
        stream.on_message(encode({"event": "stop", "streamSid": "MZ1", "stop": {"callSid": CALL_A}}))
        await hub.drain()
        assert [(h.participant, h.source) for h in await q.queue(room.id)] == [(a, "keypad")]

    fuzz.run(run())


