"""The property tests' shared pieces: the app handle, and strategies for what Twilio (or
someone pretending to be it) and browsers may send."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from hypothesis import strategies as st
from quart import Quart

from handraise.queue import Queue
from handraise.store import Redis

T = TypeVar("T")


def examples(n: int) -> int:
    """``n`` examples, times ``HANDRAISE_FUZZ_SCALE`` (default 1) for a deeper run by hand."""
    return max(1, int(n * float(os.environ.get("HANDRAISE_FUZZ_SCALE", "1"))))


ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
PUBLIC = "https://hr.example.org"
TOKEN = "abcdef0123456789abcdef0123456789"
PASSWORD = "correct horse battery"


@dataclass
class Fuzz:
    """The app under test, in the loop of a runner of its own (see conftest.py)."""

    runner: asyncio.Runner
    app: Quart
    redis: Redis
    queue: Queue

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)


#: Text as forms and queries may carry it: empty, ASCII, non-ASCII, control characters, huge.
texts = st.one_of(
    st.just(""),
    st.text(max_size=30),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=60),
    st.text(alphabet="0123456789*# -.", max_size=12),
    st.builds(lambda c, n: c * n, st.sampled_from(["x", "é", "9", "\u202e", "\x00", "🙋"]),
              st.integers(1, 5000)),
)

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                         st.floats(allow_nan=False), texts)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


payloads = st.one_of(
    st.binary(min_size=0, max_size=2000).map(b64),
    st.binary(min_size=160, max_size=160).map(b64),
    texts,
    json_values,
)
counts = st.one_of(st.integers(0, 10**6).map(str), st.integers(-5, 10**6), json_values)
sids = st.one_of(st.just("MZ1"), st.just("MZ2"), st.text(max_size=70), json_values)


def start(stream_sid: str, call_sid: str, room: str, participant: str) -> dict[str, Any]:
    return {"event": "start", "sequenceNumber": "1", "streamSid": stream_sid,
            "start": {"accountSid": ACCOUNT_SID, "streamSid": stream_sid, "callSid": call_sid,
                      "tracks": ["inbound"], "customParameters": {"room": room, "participant": participant},
                      "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}


def media(stream_sid: str, payload: str, seq: int = 2, track: str = "inbound") -> dict[str, Any]:
    return {"event": "media", "sequenceNumber": str(seq),
            "media": {"track": track, "chunk": str(seq - 1), "timestamp": str(seq * 20),
                      "payload": payload}, "streamSid": stream_sid}


def _template(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["connected", "start", "media", "media", "media", "dtmf", "mark",
                                 "stop", "other"]))
    sid = draw(st.sampled_from(["MZ1", "MZ2"]))
    if kind == "connected":
        return {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    if kind == "start":
        return start(sid, "CA" + "1" * 32, "r1", "p1")
    if kind == "media":
        return media(sid, draw(st.binary(min_size=1, max_size=400).map(b64)), draw(st.integers(2, 999)))
    if kind == "dtmf":
        return {"event": "dtmf", "streamSid": sid, "sequenceNumber": "5",
                "dtmf": {"track": "inbound_track", "digit": draw(st.sampled_from("0123456789*#AD"))}}
    if kind == "mark":
        return {"event": "mark", "streamSid": sid, "sequenceNumber": "4", "mark": {"name": "m"}}
    if kind == "stop":
        return {"event": "stop", "streamSid": sid, "sequenceNumber": "9",
                "stop": {"accountSid": ACCOUNT_SID, "callSid": "CA" + "1" * 32}}
    return {"event": draw(texts)}


@st.composite
def message_shapes(draw: st.DrawFn) -> Any:
    """A Media Streams message, often valid, often with one field missing, retyped or huge."""
    msg = _template(draw)
    for _ in range(draw(st.integers(0, 3))):
        # A path to change: top level, or one level down into an object.
        holder = msg
        inner = [k for k, v in msg.items() if isinstance(v, dict)]
        if inner and draw(st.booleans()):
            holder = msg[draw(st.sampled_from(inner))]
        names = sorted(holder) or ["event"]
        name = draw(st.sampled_from([*names, "payload", "streamSid", "sequenceNumber"]))
        action = draw(st.sampled_from(["drop", "value", "payload", "count", "sid"]))
        if action == "drop":
            holder.pop(name, None)
        else:
            strategy = {"value": json_values, "payload": payloads, "count": counts, "sid": sids}[action]
            holder[name] = draw(strategy)
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)  # not even an object
    return msg


def encode(msg: Any, *, compact: bool = False) -> str:
    return json.dumps(msg, separators=(",", ":") if compact else None)


raw_messages = st.one_of(
    st.builds(encode, message_shapes(), compact=st.booleans()),
    st.builds(lambda m: encode(m).encode(), message_shapes()),
    st.text(max_size=200),
    st.binary(max_size=200),
)
