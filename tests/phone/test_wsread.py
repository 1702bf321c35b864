"""The C reader of ``handraise serve``'s media sockets (handraise/phone/_wsread.c), over real
socket pairs: WebSocket framing, the fast path into the keypad bank's queues, and what goes
back to Python."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
from collections.abc import Iterator

import numpy as np
import pytest

from handraise.phone._wsread import Reader
from handraise.phone.frames import StreamReader
from handraise.phone.keypad import MAX_QUEUED, QUEUE_BYTES, KeypadBank, KeypadListener

SID = "MZ" + "1" * 32


def ws_frame(payload: bytes, op: int = 1, *, fin: bool = True, masked: bool = True) -> bytes:
    """One client frame (RFC 6455), masked with a random key as a client must."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | op
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = bytes((b0, mask_bit | n))
    elif n < 65536:
        head = bytes((b0, mask_bit | 126)) + struct.pack(">H", n)
    else:
        head = bytes((b0, mask_bit | 127)) + struct.pack(">Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(c ^ key[i % 4] for i, c in enumerate(payload))


def media(payload: bytes, seq: int = 2, *, sid: str = SID, spaced: bool = False) -> bytes:
    sep = (", ", ": ") if spaced else (",", ":")
    return json.dumps({"event": "media", "sequenceNumber": str(seq),
                       "media": {"track": "inbound", "chunk": str(seq - 1),
                                 "timestamp": str(20 * seq), "payload": base64.b64encode(payload).decode()},
                       "streamSid": sid}, separators=sep).encode()


def tails(sid: str = SID) -> tuple[bytes, ...]:
    reader = StreamReader()
    reader.feed(json.dumps({"event": "start", "streamSid": sid,
                            "start": {"streamSid": sid, "callSid": "CA" + "2" * 32}}))
    return reader.tails


@pytest.fixture
def pair() -> Iterator[tuple[Reader, int, socket.socket, socket.socket]]:
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    reader = Reader(4096)
    handle = reader.add(ours)
    yield reader, handle, ours, peer
    ours.close()
    peer.close()


Polled = tuple[bytes | None, int, list[bytes], int | None]


def poll_one(reader: Reader, bank: KeypadBank | None = None) -> Polled:
    out = reader.poll(bank.audio, bank.fill, bank.frames, bank.dropped) if bank else reader.poll()
    assert len(out) <= 1
    if not out:
        return None, 0, [], None
    _, audio, count, messages, end = out[0]
    return audio, count, messages or [], end


def test_messages_go_back_whole_until_the_stream_is_named_then_media_come_back_decoded(pair) -> None:
    reader, handle, _, peer = pair
    frames = [bytes([i]) * 160 for i in range(3)]
    peer.sendall(ws_frame(media(frames[0])))
    assert poll_one(reader) == (None, 0, [media(frames[0])], None)
    reader.fast(handle, tails())
    peer.sendall(ws_frame(media(frames[1], 3)) + ws_frame(media(frames[2], 4, spaced=True)))
    assert poll_one(reader) == (frames[1] + frames[2], 2, [], None)
    assert reader.poll() == []  # nothing new: nothing reported


def test_after_a_message_for_python_the_rest_of_the_read_keeps_its_order(pair) -> None:
    reader, handle, _, peer = pair
    reader.fast(handle, tails())
    a, b = b"\x01" * 160, b"\x02" * 160
    mark = b'{"event":"mark","streamSid":"%s","mark":{"name":"x"}}' % SID.encode()
    peer.sendall(ws_frame(media(a)) + ws_frame(mark) + ws_frame(media(b, 3)))
    # a before the mark is audio; b after it goes back whole, after the mark
    assert poll_one(reader) == (a, 1, [mark, media(b, 3)], None)


def test_what_the_fast_path_cannot_vouch_for_goes_to_the_parser(pair) -> None:
    reader, handle, _, peer = pair
    reader.fast(handle, tails())
    odd = [
        media(b"\x05" * 160, sid="MZ" + "9" * 32),  # another stream
        media(b"\x05" * 160).replace(b'"inbound"', b'"outbound"'),
        media(b"\x05" * 160).replace(b'"payload":"', b'"payload":"*'),  # not base64
        media(b"\x05" * 1601),  # over 1600 bytes
        media(b"").replace(b"==", b""),  # empty payload
        media(b"\x05" * 160).replace(b'"2"', b'"0000000000000000002"'),  # a 19-digit count
    ]
    for message in odd:
        peer.sendall(ws_frame(message))
        assert poll_one(reader) == (None, 0, [message], None), message
        # ... and the parser agrees that none of them is an inbound media frame of this stream
        sr = StreamReader()
        sr.feed(json.dumps({"event": "start", "streamSid": SID, "start": {"callSid": "CA1"}}))
        assert sr.media_payload(message) is None


def test_fragments_are_joined_and_a_ping_is_answered_in_between(pair) -> None:
    reader, handle, _, peer = pair
    reader.fast(handle, tails())
    whole = media(b"\x07" * 160)
    peer.sendall(ws_frame(whole[:100], fin=False) + ws_frame(b"hi", op=9)
                 + ws_frame(whole[100:200], op=0, fin=False) + ws_frame(whole[200:], op=0))
    assert poll_one(reader) == (b"\x07" * 160, 1, [], None)
    assert peer.recv(64) == b"\x8a\x02hi"  # the pong, unmasked, with the ping's payload


def test_a_message_over_the_limit_is_one_empty_message_and_the_stream_goes_on(pair) -> None:
    reader, handle, _, peer = pair
    reader.fast(handle, tails())
    peer.sendall(ws_frame(b"x" * 3000, fin=False) + ws_frame(b"y" * 3000, op=0)
                 + ws_frame(media(b"\x09" * 160)))
    # the empty message is counted as skipped by the parser; what follows it in the same
    # read goes back whole too (order kept), and the next read is fast again
    assert poll_one(reader) == (None, 0, [b"", media(b"\x09" * 160)], None)
    peer.sendall(ws_frame(media(b"\x0a" * 160, 3)))
    assert poll_one(reader) == (b"\x0a" * 160, 1, [], None)


def test_a_message_arriving_a_byte_at_a_time_is_read_whole(pair) -> None:
    reader, handle, _, peer = pair
    reader.fast(handle, tails())
    data = ws_frame(media(b"\x0b" * 160))
    for i, byte in enumerate(data):
        peer.sendall(bytes([byte]))
        got = poll_one(reader)
        assert got == ((b"\x0b" * 160, 1, [], None) if i == len(data) - 1 else (None, 0, [], None))


@pytest.mark.parametrize(("frame", "end"), [
    (ws_frame(b"\x03\xe8bye", op=8), 1000),
    (ws_frame(b"", op=8), 1005),  # a close with no code
    (ws_frame(b"\x03", op=8), -1002),  # a one-byte close payload
    (ws_frame(b"{}", masked=False), -1002),  # clients must mask
    (ws_frame(b"{}", op=3), -1002),  # a reserved opcode
    (ws_frame(b"x" * 126, op=9), -1002),  # a control frame over 125 bytes
    (ws_frame(b"{}", op=0), -1002),  # a continuation with nothing to continue
    (bytes((0xC1, 0x80)) + b"\0\0\0\0", -1002),  # a reserved bit (compression not agreed)
    (ws_frame(b"\x0f\xa0", op=8), 4000),  # a code for applications
    (ws_frame(b"\x03\xf3", op=8), 1011),
    (ws_frame(b"\x03\xee", op=8), -1002),  # 1006 may never be sent (RFC 6455 7.4.1)
    (ws_frame(b"\x03\xed", op=8), -1002),  # nor 1005
    (ws_frame(b"\x00\x00", op=8), -1002),  # nor 0 (which would read as end of file)
    (ws_frame(b"\x13\x88", op=8), -1002),  # 5000: no such code
    (ws_frame(b"\x03\xe8" + "adiós ✓ 🎉".encode(), op=8), 1000),
    (ws_frame(b"\x03\xe8bad \xff", op=8), -1007),  # a reason that is not UTF-8
    (ws_frame(b"\x03\xe8\xed\xa0\x80", op=8), -1007),  # ... a surrogate
    (ws_frame(b"\x03\xe8\xc0\xaf", op=8), -1007),  # ... an overlong form
    (ws_frame(b"\x03\xe8\xe2\x9c", op=8), -1007),  # ... cut short
])
def test_the_end_of_a_stream_is_reported_with_its_code(pair, frame: bytes, end: int) -> None:
    reader, _, _, peer = pair
    peer.sendall(frame + ws_frame(b'{"after": "the end"}'))
    assert poll_one(reader) == (None, 0, [], end)


def _filling_the_first_recv_up_to_a_close() -> bytes:
    """Frames that end with a close exactly at 16384 bytes, the reader's first recv: so
    whatever follows is read by a second recv in the same poll."""
    filler = ws_frame(b"m" * 4086) * 4  # 4094 bytes each
    data = filler + ws_frame(b"\x03\xe8", op=8)
    assert len(data) == 16384
    return data


def test_a_close_code_stands_when_the_end_of_file_follows_in_the_same_poll(pair) -> None:
    reader, _, _, peer = pair
    peer.sendall(_filling_the_first_recv_up_to_a_close())
    peer.close()
    [(_, _, _, messages, end)] = reader.poll()
    assert end == 1000 and messages == [b"m" * 4086] * 4


def test_bytes_after_a_close_frame_do_not_count_even_in_a_second_recv(pair) -> None:
    reader, _, _, peer = pair
    peer.sendall(_filling_the_first_recv_up_to_a_close() + b"\xff" * 20000)
    [(_, _, _, _, end)] = reader.poll()
    assert end == 1000


def test_end_of_file_is_reported_once_and_the_socket_is_no_longer_polled(pair) -> None:
    reader, handle, _, peer = pair
    peer.sendall(ws_frame(b'{"event":"connected"}'))
    peer.close()
    assert poll_one(reader) == (None, 0, [b'{"event":"connected"}'], None)
    assert poll_one(reader) == (None, 0, [], 0)  # seen at the next read
    assert reader.poll() == []
    reader.remove(handle)
    assert len(reader) == 0
    with pytest.raises(KeyError):
        reader.fast(handle, ())


def test_a_closing_socket_drops_its_messages(pair) -> None:
    reader, handle, _, peer = pair
    reader.fast(handle, tails())
    reader.closing(handle)
    peer.sendall(ws_frame(media(b"\x01" * 160)) + ws_frame(b'{"event":"stop"}'))
    assert reader.poll() == []
    peer.sendall(ws_frame(b"\x03\xe8", op=8))
    assert poll_one(reader) == (None, 0, [], 1000)


def test_with_a_slot_media_go_straight_into_the_keypad_banks_queue(pair) -> None:
    reader, handle, _, peer = pair
    bank = KeypadBank(4)
    other = bank.join(KeypadListener())
    slot = bank.join(KeypadListener())
    reader.fast(handle, tails(), slot)
    frames = [bytes([i]) * 160 for i in range(3)]
    peer.sendall(b"".join(ws_frame(media(f, 2 + i)) for i, f in enumerate(frames)))
    assert poll_one(reader, bank) == (None, 0, [], None)  # nothing for Python
    assert bank.fill[slot] == 480 and bank.frames[slot] == 3 and bank.fill[other] == 0
    assert bank.audio[slot, :480].tobytes() == b"".join(frames)
    # the same queue rules as push_frames: beyond MAX_QUEUED frames, the oldest go
    python_side = KeypadBank(4)
    python_side.join(KeypadListener())
    twin = python_side.join(KeypadListener())
    for f in frames:
        python_side.push(twin, f)
    more = [bytes([10 + i % 200]) * 160 for i in range(MAX_QUEUED + 5)]
    for i, f in enumerate(more):
        peer.sendall(ws_frame(media(f, 10 + i)))
        python_side.push(twin, f)
        poll_one(reader, bank)
    assert bank.fill[slot] == QUEUE_BYTES == python_side.fill[twin]
    assert bank.dropped[slot] == 8 == python_side.dropped[twin]
    assert bank.frames[slot] == python_side.frames[twin] == 3 + MAX_QUEUED + 5
    assert np.array_equal(bank.audio[slot], python_side.audio[twin])


def test_odd_sized_payloads_are_queued_end_to_end(pair) -> None:
    reader, handle, _, peer = pair
    bank = KeypadBank(2)
    slot = bank.join(KeypadListener())
    reader.fast(handle, tails(), slot)
    peer.sendall(ws_frame(media(b"\x01" * 100)) + ws_frame(media(b"\x02" * 100, 3)))
    poll_one(reader, bank)
    assert bank.fill[slot] == 200 and bank.frames[slot] == 2
    assert bank.audio[slot, :200].tobytes() == b"\x01" * 100 + b"\x02" * 100


def test_many_sockets_in_one_poll_each_get_their_own_audio() -> None:
    reader, bank = Reader(), KeypadBank(64)
    socks = []
    for i in range(40):
        ours, peer = socket.socketpair()
        ours.setblocking(False)
        h = reader.add(ours)
        sid = f"MZ{i:032x}"
        reader.fast(h, tails(sid), bank.join(KeypadListener()))
        socks.append((ours, peer, sid))
    try:
        for i, (_, peer, sid) in enumerate(socks):
            peer.sendall(ws_frame(media(bytes([i]) * 160, sid=sid)) * 2)
        assert reader.poll(bank.audio, bank.fill, bank.frames, bank.dropped) == []
        for slot in range(40):
            assert bank.audio[slot, :320].tobytes() == bytes([slot]) * 320
    finally:
        for ours, peer, _ in socks:
            ours.close()
            peer.close()
