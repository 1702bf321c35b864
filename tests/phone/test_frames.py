"""Media Streams message parsing and order checks (pure)."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from handraise.dsp import synth
from handraise.phone.frames import (
    FRAME_BYTES,
    MAX_FRAME_BYTES,
    Connected,
    Dtmf,
    FrameError,
    Media,
    Start,
    Stop,
    StreamReader,
    parse_message,
)
from handraise.phone.media import KeypadListener

SID = "MZ" + "ab" * 16
CALL = "CA" + "cd" * 16

# The documented examples (TWILIO.md §1.4), counters as strings.
CONNECTED = {"event": "connected", "protocol": "Call", "version": "1.0.0"}


def start(**over: Any) -> dict[str, Any]:
    body = {"accountSid": "AC" + "0" * 32, "streamSid": SID, "callSid": CALL,
            "tracks": ["inbound"], "customParameters": {"room": "r1", "participant": "p1"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}
    return {"event": "start", "sequenceNumber": "1", "start": body | over, "streamSid": SID}


def media(payload: bytes | str = bytes(FRAME_BYTES), **over: Any) -> dict[str, Any]:
    text = payload if isinstance(payload, str) else base64.b64encode(payload).decode()
    body = {"track": "inbound", "chunk": "2", "timestamp": "5", "payload": text}
    return {"event": "media", "sequenceNumber": "4", "media": body | over, "streamSid": SID}


STOP = {"event": "stop", "sequenceNumber": "5", "stop": {"accountSid": "AC", "callSid": CALL},
        "streamSid": SID}


def raw(msg: dict[str, Any]) -> str:
    return json.dumps(msg)


def test_the_documented_messages_parse_into_typed_values() -> None:
    assert parse_message(raw(CONNECTED)) == Connected("Call", "1.0.0")
    s = parse_message(raw(start()))
    assert isinstance(s, Start)
    assert (s.stream_sid, s.call_sid, s.tracks, s.sequence) == (SID, CALL, ("inbound",), 1)
    assert dict(s.parameters) == {"room": "r1", "participant": "p1"}
    m = parse_message(raw(media(b"\x7f" * FRAME_BYTES)))
    assert isinstance(m, Media)
    assert (m.track, m.chunk, m.timestamp_ms, m.sequence) == ("inbound", 2, 5, 4)
    assert m.payload == b"\x7f" * FRAME_BYTES
    assert parse_message(raw(STOP)) == Stop(SID, CALL, 5)
    d = parse_message(raw({"event": "dtmf", "streamSid": SID, "sequenceNumber": "5",
                           "dtmf": {"track": "inbound_track", "digit": "1"}}))
    assert d == Dtmf(SID, "inbound_track", "1", 5)


def test_bytes_and_numeric_counters_are_accepted() -> None:
    m = parse_message(raw(media(chunk=7, timestamp=140)).encode())
    assert isinstance(m, Media) and (m.chunk, m.timestamp_ms) == (7, 140)


@pytest.mark.parametrize(("message", "says"), [
    ("{not json", "not JSON"),
    ("[1, 2]", "must be a JSON object"),
    (raw({"protocol": "Call"}), "no event name"),
    (raw({"event": "dance", "streamSid": SID}), "unknown event"),
    (raw({"event": "media", "media": {"payload": "AA=="}}), "streamSid"),
    (raw(media("!!!not base64!!!")), "not valid base64"),
    (raw(media("")), "empty"),
    (raw(media(bytes(MAX_FRAME_BYTES + 1))), f"over {MAX_FRAME_BYTES} bytes"),
    (raw(media(chunk="two")), "media.chunk must be a count"),
    (raw(media(timestamp=-5)), "media.timestamp must be a count"),
    (raw({**media(), "sequenceNumber": True}), "sequenceNumber must be a count"),
    (raw(start(mediaFormat={"encoding": "audio/l16", "sampleRate": 16000, "channels": 1})),
     "audio/x-mulaw at 8000 Hz"),
    (raw(start(customParameters={"room": 5})), "values must be strings"),
    (raw(start(callSid="")), "start.callSid"),
    (raw({"event": "dtmf", "streamSid": SID, "dtmf": {"digit": "12"}}), "one keypad key"),
    ("x" * 20_000, "over 16384"),
])
def test_malformed_messages_raise_a_frame_error_that_says_what_is_wrong(
        message: str, says: str) -> None:
    with pytest.raises(FrameError, match=says):
        parse_message(message)


def test_odd_frame_sizes_are_still_frames() -> None:
    for size in (1, 80, 320, MAX_FRAME_BYTES):
        m = parse_message(raw(media(bytes(size))))
        assert isinstance(m, Media) and len(m.payload) == size


def test_the_reader_holds_messages_to_twilios_order_and_skips_the_rest() -> None:
    reader = StreamReader()
    with pytest.raises(FrameError, match="media before start"):
        reader.feed(raw(media()))
    assert isinstance(reader.feed(raw(CONNECTED)), Connected)
    assert isinstance(reader.feed(raw(start())), Start)
    assert reader.stream_sid == SID
    with pytest.raises(FrameError, match="second start"):
        reader.feed(raw(start()))
    with pytest.raises(FrameError, match="connected after"):
        reader.feed(raw(CONNECTED))
    with pytest.raises(FrameError, match="another stream"):
        reader.feed(raw({**media(), "streamSid": "MZ" + "ff" * 16}))
    with pytest.raises(FrameError, match="not JSON"):
        reader.feed("{")
    assert isinstance(reader.feed(raw(media())), Media)  # still reading after bad frames
    assert isinstance(reader.feed(raw(STOP)), Stop)
    with pytest.raises(FrameError, match="media after stop"):
        reader.feed(raw(media()))
    assert reader.skipped == 6 and reader.state == "stopped"


def test_start_without_connected_is_accepted() -> None:
    reader = StreamReader()
    assert isinstance(reader.feed(raw(start())), Start)
    assert reader.state == "started"


def test_the_listener_turns_keypad_frames_into_commands_and_notes_the_first_tone() -> None:
    listener = KeypadListener({"*1": "raise", "*2": "lower"}, label="test")
    frames = synth.to_frames(_audio("*1"))
    results = [listener.feed(f) for f in frames]
    commands = [c for cs, _ in results for c in cs]
    assert [(c.name, c.keys) for c in commands] == [("raise", "*1")]
    assert [first for _, first in results].count(True) == 1
    assert listener.tones_seen and listener.frames == len(frames)
    listener.flush()
    assert listener.digits == 2


def test_silence_leaves_the_self_test_at_no() -> None:
    listener = KeypadListener(label="test")
    for frame in synth.to_frames(synth.silence(2000)):
        assert listener.feed(frame) == ([], False)
    assert not listener.tones_seen and listener.digits == 0 and listener.frames == 100


def test_a_room_mapping_the_decoder_refuses_falls_back_to_star_1_and_star_2() -> None:
    listener = KeypadListener({"*": "raise", "*2": "lower"}, label="test")
    commands = [c for f in synth.to_frames(_audio("*2")) for c in listener.feed(f)[0]]
    assert [(c.name, c.keys) for c in commands] == [("lower", "*2")]


def _audio(digits: str) -> npt.NDArray[np.float64]:
    return np.concatenate([synth.silence(60), synth.dtmf(digits, tone_ms=90, gap_ms=90),
                           synth.silence(200)])


# -- the fast path for media frames -------------------------------------------------


def _started_reader() -> StreamReader:
    reader = StreamReader()
    reader.feed(raw(start()))
    return reader


def _media_text(payload: str, *, sid: str = "MZ" + "a" * 32, track: str = "inbound",
                separators: tuple[str, str] = (", ", ": ")) -> str:
    return json.dumps({"event": "media", "sequenceNumber": "4",
                       "media": {"track": track, "chunk": "2", "timestamp": "5",
                                 "payload": payload}, "streamSid": sid},
                      separators=separators)


def test_the_fast_path_gives_the_payload_the_full_parser_gives_as_text_or_bytes() -> None:
    reader = _started_reader()
    sid = reader.stream_sid
    rng = np.random.default_rng(3)
    for size in (1, 2, 3, 159, 160, 161, 1600):
        payload = rng.integers(0, 256, size=size, dtype=np.uint8).tobytes()
        text = base64.b64encode(payload).decode()
        for separators in ((", ", ": "), (",", ":")):
            message = _media_text(text, sid=sid, separators=separators)
            full = parse_message(message)
            assert isinstance(full, Media) and full.payload == payload
            assert reader.media_payload(message) == payload
            assert reader.media_payload(message.encode()) == payload


@pytest.mark.parametrize("case", [
    "bad padding", "bad character", "empty", "too long", "other stream", "outbound track",
    "escaped key", "extra key"])
def test_the_fast_path_leaves_anything_unusual_to_the_strict_parser(case: str) -> None:
    reader = _started_reader()
    sid = reader.stream_sid
    good = base64.b64encode(bytes(160)).decode()
    message = {
        "bad padding": _media_text(good[:-1], sid=sid),
        "bad character": _media_text(good[:-4] + "!!!!", sid=sid),
        "empty": _media_text("", sid=sid),
        "too long": _media_text(base64.b64encode(bytes(1601)).decode(), sid=sid),
        "other stream": _media_text(good, sid="MZ" + "b" * 32),
        "outbound track": _media_text(good, sid=sid, track="outbound"),
        "escaped key": _media_text(good, sid=sid).replace('"event"', '"\\u0065vent"'),
        "extra key": _media_text(good, sid=sid)[:-1] + ', "x": 1}',
    }[case]
    assert reader.media_payload(message) is None
    if case in ("outbound track", "escaped key", "extra key"):
        assert isinstance(reader.feed(message), Media)  # valid, just not the usual shape
    else:
        with pytest.raises(FrameError):
            reader.feed(message)


def test_the_fast_path_takes_no_frame_before_start_or_after_stop() -> None:
    reader = StreamReader()
    message = _media_text(base64.b64encode(bytes(160)).decode())
    assert reader.media_payload(message) is None
    reader.feed(raw(start()))
    reader.feed(json.dumps({"event": "stop", "streamSid": reader.stream_sid,
                            "sequenceNumber": "9"}))
    assert reader.media_payload(_media_text(base64.b64encode(bytes(160)).decode(),
                                            sid=reader.stream_sid)) is None


@pytest.mark.parametrize("msg", [
    # Found by tests/fuzz: an unknown event name of 5000 characters was repeated whole in
    # the "streamSid must be…" refusal, and so in the log line, newlines included.
    {"event": "x" * 5000 + "\nforged log line", "protocol": "Call"},
    {"event": "media", "streamSid": "MZ1", "sequenceNumber": "y" * 5000},
    {"event": "dtmf", "streamSid": "MZ1", "dtmf": {"digit": "1" * 5000}},
])
def test_a_refusal_quotes_what_was_sent_in_a_few_characters_only(msg: dict[str, Any]) -> None:
    with pytest.raises(FrameError) as refused:
        parse_message(json.dumps(msg))
    assert len(str(refused.value)) < 120 and "\n" not in str(refused.value)
