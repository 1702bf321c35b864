"""How ``handraise serve`` accepts a connection and reads its head before it is HTTP or a
media stream: in pieces, too big, cut off, silent, or with no file descriptor left
(fastmedia's ``_accept``, ``_peek`` and ``_upgrade_head``), over raw sockets."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import resource
from collections.abc import Iterator

import pytest
from phonekit import AUTH_TOKEN, until
from servekit import Served, serving
from twilio.request_validator import RequestValidator

from handraise.phone.fastmedia import FIRST_LINE_TIMEOUT_S, MAX_HEAD_BYTES

pytestmark = [pytest.mark.slow]

KEY = base64.b64encode(b"sixteen byte key").decode()
ACCEPT = base64.b64encode(hashlib.sha1(KEY.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
                          .digest()).decode()


@pytest.fixture(scope="module")
def server(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(redis_server, tmp_path_factory.mktemp("upgrade") / "serve.log") as served:
        yield served


def upgrade_head(server: Served) -> bytes:
    signature = RequestValidator(AUTH_TOKEN).compute_signature(server.ws_url, {})
    return (f"GET /voice/stream HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
            f"X-Twilio-Signature: {signature}\r\n\r\n").encode()


async def exchange(server: Served, pieces: list[bytes]) -> bytes:
    """Send ``pieces`` one write each; what the server answers until it closes or a head ends."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
        answer = b""
        while b"\r\n\r\n" not in answer or answer.startswith(b"HTTP/1.1 4"):
            chunk = await asyncio.wait_for(reader.read(65536), 10)
            if not chunk:
                break
            answer += chunk
        return answer
    finally:
        writer.close()


async def test_an_upgrade_head_arriving_a_few_bytes_at_a_time_is_switched(server: Served) -> None:
    head = upgrade_head(server)
    pieces = [head[i:i + 7] for i in range(0, len(head), 7)]
    answer = await exchange(server, pieces)
    assert answer.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"), answer
    assert f"Sec-WebSocket-Accept: {ACCEPT}\r\n".encode() in answer


async def test_an_upgrade_head_over_the_limit_is_refused_with_431_and_a_sentence(
        server: Served) -> None:
    start = upgrade_head(server).split(b"\r\n\r\n")[0] + b"\r\n"
    padding = b"X-Padding: " + b"a" * 1000 + b"\r\n"
    answer = await exchange(server, [start] + [padding] * (MAX_HEAD_BYTES // len(padding) + 1))
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert answer.endswith(b"Request header fields too large.\n")


async def test_a_request_line_in_pieces_is_still_http(server: Served) -> None:
    answer = await exchange(server, [b"GET /hea", b"lthz HT", b"TP/1.1\r\nHost: x\r\n",
                                     b"Connection: close\r\n\r\n"])
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


async def test_peers_that_go_away_mid_head_leave_the_server_serving(server: Served) -> None:
    head = upgrade_head(server)
    for cut in (b"GE", b"GET /voice/str", head[: len(head) // 2]):
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(cut)
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    assert (await exchange(server, [head])).startswith(b"HTTP/1.1 101 ")
    assert (await health(server)).startswith(b"HTTP/1.1 200")
    assert "Traceback" not in server.log()


async def health(server: Served) -> bytes:
    return await exchange(server, [b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"])


@pytest.mark.parametrize("part", ["request line", "upgrade head"])
async def test_a_peer_that_shuts_its_side_mid_head_is_closed_at_once(
        server: Served, part: str) -> None:
    head = upgrade_head(server)
    sent = b"GET /voice/str" if part == "request line" else head[: len(head) // 2]
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(sent)
        writer.write_eof()
        # Well before the 10 s given to a slow request line; with what it sent unread, the
        # close is a reset.
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


@pytest.mark.parametrize("part", ["request line", "upgrade head"])
async def test_a_head_finished_after_a_pause_is_still_served(server: Served, part: str) -> None:
    head = upgrade_head(server)
    cut = 9 if part == "request line" else len(head) // 2
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(head[:cut])
        await writer.drain()
        assert (await health(server)).startswith(b"HTTP/1.1 200")  # the server has looked
        writer.write(head[cut:])
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert answer.startswith(b"HTTP/1.1 101 ")
    finally:
        writer.close()


async def test_connections_silent_before_their_head_ends_are_closed_at_the_first_line_limit(
        server: Served) -> None:
    head = upgrade_head(server)

    async def silent_after(sent: bytes) -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            if sent:
                writer.write(sent)
                await writer.drain()
            with contextlib.suppress(ConnectionResetError):
                assert await asyncio.wait_for(reader.read(), FIRST_LINE_TIMEOUT_S + 10) == b""
            return loop.time() - start
        finally:
            writer.close()

    # Nothing at all, half a request line, half a media stream's upgrade head, from peers
    # that stay: each is closed by the server at the limit, not before.
    waited = await asyncio.gather(silent_after(b""), silent_after(b"GET /heal"),
                                  silent_after(head[: len(head) // 2]))
    assert all(FIRST_LINE_TIMEOUT_S - 1 <= w <= FIRST_LINE_TIMEOUT_S + 5 for w in waited), waited


async def test_out_of_file_descriptors_accepting_pauses_then_serves_who_waited(
        server: Served) -> None:
    assert server.proc is not None
    pid = server.proc.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    before = server.log().count("accept failed")
    # Every descriptor the process may open is in use: accept(2) fails with EMFILE.
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (len(os.listdir(f"/proc/{pid}/fd")), hard))
    try:
        waiting = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
        for _, writer in waiting:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await until(lambda: "accept failed" in server.log()[-2000:], timeout=10)
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    # Accepting resumes: the connections that waited in the backlog are served.
    for reader, writer in waiting:
        assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 200")
        writer.close()
    # One line per pause, not one per turn of the loop.
    assert server.log().count("accept failed") - before <= 3, server.log()[-3000:]
