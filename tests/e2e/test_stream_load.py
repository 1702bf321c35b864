"""Many Media Streams against one ``handraise serve`` (the fast path, the C reader) and one Redis:
a burst of stream starts, and a SIGTERM with hundreds of streams open."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from phonekit import until
from servekit import Served, open_streams, seed_callers

from handraise.dsp import synth
from handraise.phone.control import set_conference
from handraise.phone.streams import KeypadCheck, check_key, live_key, note_gather, record_check
from handraise.rooms import update_room
from handraise.store import Redis, key

pytestmark = [pytest.mark.slow]

BURST_ROOMS, BURST_PER_ROOM = 4, 250  # 1000 streams; 250 is Twilio's conference limit
STOP_ROOMS, STOP_PER_ROOM = 3, 100


async def _counts(redis: Redis, rooms: set[str], name: str) -> int:
    async with redis.pipeline(transaction=False) as pipe:
        for room in rooms:
            pipe.hlen(check_key(room) if name == "check" else live_key(room))
        return sum(await pipe.execute())


async def test_a_burst_of_1000_stream_starts_checks_every_participant_with_no_redis_error(
        redis: Redis, redis_server: str, tmp_path: Path) -> None:
    callers = await seed_callers(redis, BURST_ROOMS, BURST_PER_ROOM)
    rooms = {c.room for c in callers}
    server = Served(redis_server, tmp_path / "serve.log")
    await asyncio.to_thread(server.start)
    clients = []
    try:
        clients = await open_streams(server.ws_url, callers)  # all at once
        # Each stream's start-up check found its participant (else it is refused, 1008)
        # and wrote its self-test record and its live entry.
        await until(lambda: _all(redis, rooms, len(callers)), timeout=60)
        assert all(c.close_code is None for c in clients)
        log = server.log()
        assert log.count("listening for keys") == len(callers), log[-3000:]
        assert "redis unavailable" not in log
        assert "refused" not in log and "Traceback" not in log
    finally:
        await asyncio.gather(*(c.close() for c in clients))
        code = await asyncio.to_thread(server.terminate)
    assert code == 0, server.log()[-3000:]


async def _all(redis: Redis, rooms: set[str], n: int) -> bool:
    return await _counts(redis, rooms, "check") == n and await _counts(redis, rooms, "live") == n


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_with_hundreds_of_streams_logs_one_stop_line_each_and_exits_cleanly(
        redis: Redis, redis_server: str, tmp_path: Path, workers: int) -> None:
    callers = await seed_callers(redis, STOP_ROOMS, STOP_PER_ROOM)
    rooms = {c.room for c in callers}
    server = Served(redis_server, tmp_path / "serve.log", workers=workers)
    await asyncio.to_thread(server.start)
    clients = []
    try:
        clients = await open_streams(server.ws_url, callers)
        for client in clients:  # audio keeps coming while the server stops
            client.pump(0.1)
        await until(lambda: _all(redis, rooms, len(callers)), timeout=60)
        code = await asyncio.to_thread(server.terminate)
        # The server closed every stream itself ("going away"), after finishing it.
        await asyncio.wait_for(asyncio.gather(*(c.closed for c in clients if c.closed)), 30)
    finally:
        server.stop()
        await asyncio.gather(*(c.close() for c in clients))
    log = server.log()
    assert code == 0, log[-3000:]
    assert log.count("keypad tones seen in stream: no") == len(callers), log[-3000:]
    for c in callers:
        assert f"(room {c.room} participant {c.pid}): stopped after" in log
    assert "Traceback" not in log and "CancelledError" not in log, log[-5000:]
    assert {c.close_code for c in clients} == {1001}
    # Stopped streams are no longer live: the next process resumes them.
    assert await _counts(redis, rooms, "live") == 0


async def test_sigterm_while_streams_are_being_resumed_stops_the_resume_before_twilio_closes(
        redis: Redis, redis_server: str, tmp_path: Path) -> None:
    # Callers in the conference whose streams no process holds: start-up resumes them,
    # through a Twilio that takes the request and never answers.
    callers = await seed_callers(redis, 1, 3)
    conference = "CF" + "ab" * 16
    await update_room(redis, callers[0].room, conference_sid=conference)
    for c in callers:
        await set_conference(redis, c.room, c.pid, conference)
        await redis.hset(key(c.room, "p", c.pid), "joined_at", 0)  # dialled in long ago
        await record_check(redis, c.room, KeypadCheck(  # their stream ran, then its process died
            participant=c.pid, stream="MZ" + c.call_sid[2:], frames=500, digits=0,
            tones_seen=False, stopped=False, updated_at=0.0))
    requests: list[bytes] = []
    hung: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hung.append(writer)
        requests.append(await reader.read(65536))

    twilio = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = twilio.sockets[0].getsockname()[1]
    server = Served(redis_server, tmp_path / "serve.log",
                    env={"HANDRAISE_TWILIO_API_URL": f"http://127.0.0.1:{port}"})
    try:
        await asyncio.to_thread(server.start)
        await until(lambda: requests, timeout=30)  # the first stream's REST create hangs
        assert b"/Streams.json" in requests[0]
        code = await asyncio.to_thread(server.terminate)
    finally:
        server.stop()
        for writer in hung:
            writer.close()
        twilio.close()
    log = server.log()
    assert code == 0, log[-3000:]
    assert "Traceback" not in log and "CancelledError" not in log, log[-5000:]
    assert "Unclosed" not in log, log[-3000:]
    assert len(requests) == 1  # shutdown stopped the pass: no caller after the hung one


async def test_sigterm_lets_an_announcement_in_flight_reach_twilio_before_the_session_closes(
        redis: Redis, redis_server: str, tmp_path: Path) -> None:
    [caller] = await seed_callers(redis, 1, 1)
    conference = "CF" + "cd" * 16
    await update_room(redis, caller.room, conference_sid=conference)
    await set_conference(redis, caller.room, caller.pid, conference)
    await note_gather(redis, caller.room, caller.pid, "")  # the pre-join window is over
    requests: list[bytes] = []
    answered: list[bool] = []
    log_path = tmp_path / "serve.log"

    async def slow_twilio(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        requests.append(head + await reader.readexactly(length))
        # Answer only once the server is shutting down (SIGTERM came while this was open).
        await until(lambda: "serve: stopping" in log_path.read_text(), timeout=30)
        body = json.dumps({"call_sid": caller.call_sid, "label": caller.pid, "muted": True,
                           "conference_sid": conference}).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        answered.append(True)
        writer.close()

    twilio = await asyncio.start_server(slow_twilio, "127.0.0.1", 0)
    port = twilio.sockets[0].getsockname()[1]
    server = Served(redis_server, log_path, env={"HANDRAISE_TWILIO_API_URL": f"http://127.0.0.1:{port}"})
    clients = []
    try:
        await asyncio.to_thread(server.start)
        clients = await open_streams(server.ws_url, [caller])
        keys = synth.to_frames(synth.concat(synth.silence(100), synth.dtmf("*1"),
                                            synth.silence(300)))
        await clients[0].send_frames(keys)
        await until(lambda: requests, timeout=30)  # the announcement of the raised hand
        assert b"/Participants/" in requests[0] and b"AnnounceUrl" in requests[0]
        code = await asyncio.to_thread(server.terminate)
    finally:
        server.stop()
        await asyncio.gather(*(c.close() for c in clients))
        twilio.close()
    log = server.log()
    assert code == 0, log[-3000:]
    assert answered == [True]
    assert "failed" not in log and "could not tell" not in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert f"participant {caller.pid}): stopped after" in log
