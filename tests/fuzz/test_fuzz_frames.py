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


def _through_c_reader(raw: bytes) -> tuple[bytes | None, list[bytes]]:
    """``raw`` as one masked WebSocket message through handraise serve's C reader, its fast
    path on for stream MZ1: (audio, messages given back whole)."""
    import os
    import socket
    import struct

    from handraise.phone._wsread import Reader

    ours, peer = socket.socketpair()
    try:
        ours.setblocking(False)
        reader = Reader()
        handle = reader.add(ours)
        tails = StreamReader()
        tails.feed(encode(start("MZ1", "CA" + "1" * 32, "r1", "p1")))
        reader.fast(handle, tails.tails)
        key = os.urandom(4)
        n = len(raw)
        head = bytes((0x81, 0x80 | n)) if n < 126 else (
            bytes((0x81, 0x80 | 126)) + struct.pack(">H", n) if n < 65536
            else bytes((0x81, 0x80 | 127)) + struct.pack(">Q", n))
        peer.sendall(head + key + bytes(c ^ key[i % 4] for i, c in enumerate(raw)))
        out = reader.poll()
        assert len(out) == 1
        _, audio, count, messages, end = out[0]
        assert end is None and count == (1 if audio else 0)
        return audio, messages or []
    finally:
        ours.close()
        peer.close()


@FAST
@given(st.one_of(raw_messages,
                 st.builds(lambda p, sid, seq: encode(media(sid, b64(p), seq)),
                           st.binary(max_size=1700), st.sampled_from(["MZ1", "MZ2"]),
                           st.integers(2, 10**6))))
def test_the_c_readers_fast_path_takes_exactly_what_the_python_fast_path_takes(
        raw: str | bytes) -> None:
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    reader = StreamReader()
    reader.feed(encode(start("MZ1", "CA" + "1" * 32, "r1", "p1")))
    expected = reader.media_payload(data)
    audio, messages = _through_c_reader(data)
    if expected is not None:
        assert audio == expected and messages == []
    else:
        assert audio is None and messages == [data]  # given back whole, for the parser
