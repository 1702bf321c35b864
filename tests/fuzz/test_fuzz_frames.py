"""Media Streams frames, fuzzed: parsed or refused with FrameError, the same way every time."""

from __future__ import annotations

import contextlib
import json

from fuzzkit import b64, encode, examples, media, message_shapes, raw_messages, start
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handraise.phone.frames import Connected, FrameError, Media, Start, Stop, StreamReader, parse_message

FAST = settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(raw: str | bytes) -> object:
    try:
        return parse_message(raw)
    except FrameError as exc:
        return ("refused", str(exc))


@FAST
@given(raw_messages)
def test_any_message_is_parsed_or_refused_with_a_frame_error_and_always_the_same_way(
        raw: str | bytes) -> None:
    first = outcome(raw)  # anything but a FrameError escaping fails the test
    assert outcome(raw) == first
    if isinstance(first, tuple):
        assert first[1].endswith(".") and len(first[1]) < 400  # a sentence, not a dump


@FAST
@given(st.binary(min_size=0, max_size=2000), st.sampled_from(["MZ1", "MZ2"]), st.integers(2, 10**6),
       st.booleans())
def test_a_frame_in_twilios_shape_takes_the_fast_path_with_the_slow_paths_answer(
        payload: bytes, sid: str, seq: int, as_bytes: bool) -> None:
    text = encode(media(sid, b64(payload), seq))
    raw: str | bytes = text.encode() if as_bytes else text
    reader = StreamReader()
    reader.feed(encode(start("MZ1", "CA" + "1" * 32, "r1", "p1")))
    fast = reader.media_payload(raw)
    try:
        slow: object = reader.feed(raw)
    except FrameError:
        slow = None
    if sid == "MZ1" and 0 < len(payload) <= 1600:
        assert fast == payload
        assert isinstance(slow, Media) and slow.payload == payload and slow.track == "inbound"
    else:
        assert fast is None and slow is None  # another stream's, empty or oversized: refused


@FAST
@given(raw_messages)
def test_the_fast_path_never_accepts_what_the_parser_refuses_or_reads_it_differently(
        raw: str | bytes) -> None:
    reader = StreamReader()
    reader.feed(encode(start("MZ1", "CA" + "1" * 32, "r1", "p1")))
    fast = reader.media_payload(raw)
    if fast is not None:
        msg = reader.feed(raw)
        assert isinstance(msg, Media) and msg.payload == fast and msg.track == "inbound"
        assert msg.stream_sid == "MZ1"


@settings(max_examples=examples(120), deadline=None)
@given(st.lists(st.one_of(raw_messages, st.builds(encode, message_shapes())), max_size=25))
def test_a_stream_of_random_messages_keeps_twilios_order_and_skips_the_rest(
        messages: list[str | bytes]) -> None:
    reader = StreamReader()
    starts = 0
    for raw in messages:
        before = (reader.state, reader.start, reader.skipped)
        try:
            msg = reader.feed(raw)
        except FrameError:
            assert (reader.state, reader.start) == before[:2]  # a refused message changes nothing
            assert reader.skipped == before[2] + 1
            continue
        if before[0] == "stopped":
            raise AssertionError(f"accepted {msg!r} after stop")
        if isinstance(msg, Start):
            starts += 1
        elif not isinstance(msg, Connected):
            assert reader.start is not None and msg.stream_sid == reader.start.stream_sid
        if isinstance(msg, Stop):
            assert reader.state == "stopped"
    assert starts <= 1


def test_the_shapes_include_valid_messages_of_every_kind() -> None:
    # The strategies must reach the parser's success paths, not only its refusals.
    seen: set[str] = set()

    @settings(max_examples=examples(200), deadline=None, database=None, derandomize=True)
    @given(message_shapes())
    def collect(msg: object) -> None:
        with contextlib.suppress(FrameError):
            seen.add(type(parse_message(json.dumps(msg))).__name__)

    collect()
    assert seen >= {"Connected", "Start", "Media", "Dtmf", "Mark", "Stop"}
