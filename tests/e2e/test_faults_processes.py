"""Two ``handraise serve`` processes on one Redis behind one public URL (a round-robin TCP
balancer): webhooks, media streams and dashboards spread over both; one is killed -9
mid-meeting and the other carries the meeting; restarted, it picks up."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from phonekit import ACCOUNT_SID, AUTH_TOKEN, until
from servekit import Served

from handraise.phone.streams import live_streams
from handraise.queue import Queue
from handraise.rooms import create_room
from handraise.sim import SimConfig, Simulator, free_port
from handraise.store import Redis, client_from_url, key
from handraise.tokens import create_token

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*(BasicAuth|auth' parameter).*:DeprecationWarning"),
]


class Balancer:
    """A TCP round-robin balancer, as a load balancer in front of two app servers: each
    connection goes to its backend in turn, or to the next one that accepts it."""

    def __init__(self, backends: list[int]) -> None:
        self.port = free_port()
        self.backends = backends
        self._next = itertools.cycle(range(len(backends)))
        self.sent: list[int] = []  # the backend port of each connection
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Balancer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        # This connection's turn, then each other backend once. (Drawing every try from
        # the shared cycle let two connections arriving together both draw a dead backend
        # twice, and one of them gave up with another backend up.)
        first = next(self._next)
        for i in range(len(self.backends)):
            port = self.backends[(first + i) % len(self.backends)]
            try:
                upstream = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue  # that one is down: the next
            self.sent.append(port)
            break
        if upstream is None:
            writer.close()
            return
        up_reader, up_writer = upstream
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@contextlib.asynccontextmanager
async def event_stream(http: httpx.AsyncClient, base: str, room: str,
                       last_event_id: str | None = None) -> AsyncIterator[list[dict[str, Any]]]:
    """One dashboard's view of ``room``'s events (the API's SSE), from one process."""
    got: list[dict[str, Any]] = []
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}

    async def read() -> None:
        with contextlib.suppress(httpx.HTTPError):
            async with http.stream("GET", f"{base}/api/v1/rooms/{room}/events/stream",
                                   headers=headers) as response:
                current: dict[str, Any] = {}
                async for line in response.aiter_lines():
                    if not line:
                        if current.get("id"):
                            got.append(current)
                        current = {}
                    elif line.startswith("id:"):
                        current["id"] = line[3:].strip()
                    elif line.startswith("event:"):
                        current["event"] = line[6:].strip()
                    elif line.startswith("data:"):
                        current["data"] = json.loads(line[5:].strip())

    task = asyncio.ensure_future(read())
    try:
        yield got
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _ids(events: list[dict[str, Any]]) -> list[str]:
    return [e["id"] for e in events]


async def _all_ids(redis: Redis, room: str, after: str | None = None) -> list[str]:
    low = "-" if after is None else "(" + after
    return [i for i, _ in await redis.xrange(key(room, "events"), min=low, max="+")]


async def _holders(redis: Redis, room: str) -> dict[str, str]:
    return {pid: e.holder for pid, e in (await live_streams(redis, room, me="")).items()}


async def test_two_processes_share_a_meeting_and_one_killed_leaves_the_other_carrying_it(
        redis_server: str, tmp_path: Path) -> None:
    redis = client_from_url(redis_server)
    await redis.flushall()
    queue = Queue(redis)
    sim_port, ports = free_port(), [free_port(), free_port()]
    balancer = Balancer(ports)
    env = {"HANDRAISE_PUBLIC_URL": balancer.url,
           "HANDRAISE_TWILIO_API_URL": f"http://127.0.0.1:{sim_port}",
           "HANDRAISE_RECONCILE_INTERVAL": "1"}
    a, b = [Served(redis_server, tmp_path / f"serve-{i}.log", port=p, env=env)
            for i, p in enumerate(ports)]
    config = SimConfig(voice_url=balancer.url + "/voice/incoming", account_sid=ACCOUNT_SID,
                       auth_token=AUTH_TOKEN, port=sim_port, media_time_scale=0.0,
                       wait_time_scale=0.05, seed=11, background="silence",
                       webhook_keepalive=False)
    try:
        async with balancer, Simulator(config) as sim, \
                httpx.AsyncClient(trust_env=False, timeout=30) as http:
            await asyncio.gather(asyncio.to_thread(a.start), asyncio.to_thread(b.start))
            created = await create_room(redis, "Two processes", end_on_host_exit=False)
            room = created.room
            secret, _ = await create_token(redis, "e2e")
            http.headers["Authorization"] = f"Bearer {secret}"

            async def join(number: str, code: str, host: bool = False) -> tuple[str, str]:
                sid = sim.place_call(number, "+15550109999")
                await sim.wait_event("gather-start", call_sid=sid, num_digits=6)
                sim.press(sid, code)
                await sim.wait_event("conference", call_sid=sid, event="participant-join",
                                     timeout=20)
                return sid, sim.state(sid)["conference"]["label"]

            host, _ = await join("+15550100001", created.host_code, host=True)
            callers = [await join(f"+1555010000{i}", room.access_code) for i in (2, 3, 4, 5)]
            pids = [pid for _, pid in callers]
            # The webhooks and the streams went to both processes.
            assert set(balancer.sent) == set(ports)
            holders = await until(lambda: _holders_of(redis, room.id, pids), timeout=20)
            assert len(set(holders.values())) == 2, holders
            on_a_streams = [p for p in pids if _listening(a, p)]
            assert on_a_streams and len(on_a_streams) < len(pids)
            a_holders = {holders[p] for p in on_a_streams}

            start = (await _all_ids(redis, room.id))[-1]
            async with event_stream(http, a.public, room.id, start) as on_a, \
                    event_stream(http, b.public, room.id, start) as on_b:
                # A keypad raise in the conference (its stream is held by one process)...
                (c1, p1), (_, p2) = callers[0], callers[1]
                sim.press(c1, "*1")
                await sim.wait_event("heard", call_sid=c1, kind="announcement",
                                     text="Hand raised. You are number 1 in line.", timeout=20)
                # ...a web raise through the other process, and the host's call-on there.
                r = await http.put(f"{b.public}/api/v1/rooms/{room.id}/participants/{p2}/hand")
                assert r.status_code == 200, r.text
                r = await http.post(f"{a.public}/api/v1/rooms/{room.id}/call-next")
                assert r.status_code == 200, r.text
                assert r.json()["participant"] == p1
                # They converge: one queue, one speaker, unmuted by Twilio.
                state = await queue.snapshot(room.id)
                assert state.speaker == p1 and [h.participant for h in state.queue] == [p2]
                assert sim.state(c1)["conference"]["muted"] is False
                # Every dashboard saw every event once, in order, whichever process served it.
                everything = await _all_ids(redis, room.id, after=start)
                await until(lambda: _ids(on_a)[-len(everything):] == everything == _ids(
                    on_b)[-len(everything):])
                for seen in (on_a, on_b):
                    assert len(_ids(seen)) == len(set(_ids(seen)))
                last_a = _ids(on_a)[-1]

                # kill -9 one of them mid-meeting.
                mark = sim.events[-1].seq
                a.kill()
                # The survivor answers the webhooks and the dashboards: a new caller gets in.
                late, _ = await join("+15550100006", room.access_code)
                r = await http.post(f"{b.public}/api/v1/rooms/{room.id}/done")
                assert r.status_code == 200, r.text
                everything = await _all_ids(redis, room.id, after=start)
                await until(lambda: _ids(on_b)[-len(everything):] == everything, timeout=10)
                # The killed process's keypad streams are started again in the survivor.
                for pid in on_a_streams:
                    sid = next(s for s, p in callers if p == pid)
                    await sim.wait_event("stream-started", call_sid=sid, after=mark, timeout=40)
                # ...and are live there: every caller's stream is held by the survivor.
                await until(lambda: _held_by_others(redis, room.id, pids, a_holders), timeout=30)
                # Nobody was dropped: every call is still in the conference.
                for sid in [host, late, *(s for s, _ in callers)]:
                    assert sim.state(sid)["status"] == "in-progress"
                    assert sim.state(sid)["conference"] is not None
                # A keypad raise through a resumed stream works.
                sid = next(s for s, p in callers if p == on_a_streams[0])
                mark = sim.events[-1].seq
                sim.press(sid, "*1")
                await sim.wait_event("heard", call_sid=sid, kind="announcement", after=mark,
                                     timeout=20)

            # Restarted, it picks up: its dashboard resumes from the last event it sent.
            await asyncio.to_thread(a.start)
            async with event_stream(http, a.public, room.id, last_a) as resumed:
                missed = await _all_ids(redis, room.id, after=last_a)
                assert missed
                await until(lambda: _ids(resumed)[:len(missed)] == missed, timeout=10)
                assert last_a not in _ids(resumed)
                assert len(_ids(resumed)) == len(set(_ids(resumed)))
            assert (await http.get(a.public + "/healthz")).status_code == 200
            statuses = [e.data.get("status") for e in sim.events
                        if e.kind == "webhook" and e.seq > mark]
            assert statuses and set(statuses) == {200}
            assert await asyncio.to_thread(b.terminate) == 0
            assert await asyncio.to_thread(a.terminate) == 0
    finally:
        a.stop()
        b.stop()
        await redis.aclose()


def _listening(server: Served, pid: str) -> bool:
    return f"participant {pid}): listening for keys" in server.log()


async def _held_by_others(redis: Redis, room: str, pids: list[str], gone: set[str]) -> bool:
    holders = await _holders_of(redis, room, pids)
    return holders is not None and not gone & set(holders.values())


async def _holders_of(redis: Redis, room: str, pids: list[str]) -> dict[str, str] | None:
    holders = await _holders(redis, room)
    return holders if all(p in holders for p in pids) else None
