"""Redis restarts mid-meeting (persistent, AOF on): the room's state survives, a dashboard's
event stream resumes from its Last-Event-ID, and a caller who dialled in during the outage
is made whole by the reconciliation."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from phonekit import Stack, StoppableRedis, phone_stack, until

from handraise.phone.streams import live_streams
from handraise.pins import pin_of
from handraise.queue import RoomState
from handraise.rooms import create_room, get_room
from handraise.store import key
from handraise.tokens import create_token

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*(BasicAuth|auth' parameter).*:DeprecationWarning"),
]

UNAVAILABLE = "Hand raising is briefly unavailable"


@contextlib.asynccontextmanager
async def event_stream(http: httpx.AsyncClient, room: str,
                       last_event_id: str | None = None) -> AsyncIterator[list[dict[str, Any]]]:
    """The API's server-sent events of ``room``, gathered as they come: {id, event, data}."""
    got: list[dict[str, Any]] = []
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}

    async def read() -> None:
        async with http.stream("GET", f"/api/v1/rooms/{room}/events/stream",
                               headers=headers) as response:
            assert response.status_code == 200
            current: dict[str, Any] = {}
            async for line in response.aiter_lines():
                if not line:
                    if current.get("event"):
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
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await task


async def _event_ids(stack: Stack, room: str, after: str = "-") -> list[str]:
    low = after if after == "-" else "(" + after
    return [i for i, _ in await stack.redis.xrange(key(room, "events"), min=low, max="+")]


async def test_a_redis_restart_mid_meeting_loses_nothing_and_the_outage_caller_is_reconciled(
        stoppable: StoppableRedis) -> None:
    async with phone_stack(stoppable.url, reconcile_interval_s=1.0) as stack:
        created = await create_room(stack.redis, "Restart")
        room = created.room
        host, _ = await stack.join(created.host_code, "+15550100001", host=True)
        a, a_pid = await stack.join(room.access_code, "+15550100002")
        b, b_pid = await stack.join(room.access_code, "+15550100003")
        await stack.queue.raise_hand(room.id, b_pid, source="web")
        await stack.queue.raise_hand(room.id, a_pid, source="web")
        secret, _ = await create_token(stack.redis, "e2e")
        before = await stack.queue.snapshot(room.id)
        pins = {p: await pin_of(stack.redis, room.id, p) for p in (a_pid, b_pid)}
        assert all(pins.values())
        ids_before = await _event_ids(stack, room.id)

        async with httpx.AsyncClient(base_url=stack.served.base_url, trust_env=False, timeout=30,
                                     headers={"Authorization": f"Bearer {secret}"}) as http, \
                event_stream(http, room.id, ids_before[0]) as seen:
                await until(lambda: seen and seen[-1]["id"] == ids_before[-1])
                last_seen = seen[-1]["id"]

                stoppable.stop()
                # A caller dialling in during the outage hears why and is in the conference.
                outage = await stack.dial_in(room.access_code, "+15550100004")
                await stack.sim.wait_event("conference", call_sid=outage,
                                           event="participant-join", timeout=15)
                conf = stack.sim.state(outage)["conference"]
                assert conf["muted"] is True and conf["friendly_name"] == room.conference_name
                assert UNAVAILABLE in stack.said(outage)
                outage_pid = conf["label"]
                stoppable.start()
                await _after_restart(stack, http, room.id, before, pins, ids_before, last_seen,
                                     outage, outage_pid, seen)
        assert all(stack.sim.state(s)["status"] == "in-progress" for s in (host, a, b, outage))
        statuses = {e.data.get("status") for e in stack.sim.events if e.kind == "webhook"}
        assert statuses == {200}


async def _after_restart(stack: Stack, http: httpx.AsyncClient, room_id: str, before: RoomState,
                         pins: dict[str, str | None], ids_before: list[str], last_seen: str,
                         outage: str, outage_pid: str, kept: list[dict[str, Any]]) -> None:
    a_pid, b_pid = [h.participant for h in before.queue][::-1]
    room = await get_room(stack.redis, room_id)
    # Everything persisted: participants, hands in order, PINs, the event ids.
    after = await stack.queue.snapshot(room.id)
    assert [h.participant for h in after.queue] == [b_pid, a_pid]
    assert {p.id for p in before.participants} <= {p.id for p in after.participants}
    assert {p: await pin_of(stack.redis, room.id, p) for p in (a_pid, b_pid)} == pins
    assert (await _event_ids(stack, room.id))[:len(ids_before)] == ids_before
    assert (await get_room(stack.redis, room.id)).conference_sid

    # The reconciliation (every second here) adds the outage caller with what the
    # normal way in gives: a web PIN and their keypad stream.
    await until(lambda: _has(stack, room.id, outage_pid), timeout=15)
    assert await until(lambda: pin_of(stack.redis, room.id, outage_pid))
    await stack.sim.wait_event("stream-started", call_sid=outage, timeout=15)

    # The dashboard reconnects with its Last-Event-ID: what it missed, once, in order.
    await stack.queue.lower_hand(room.id, b_pid, by="host")
    async with event_stream(http, room.id, last_seen) as resumed:
        expected = await _event_ids(stack, room.id, after=last_seen)
        assert expected  # the outage caller's join, the lowered hand at least
        await until(lambda: len([e for e in resumed if "id" in e]) >= len(expected))
        await stack.queue.raise_hand(room.id, outage_pid, source="web")
        await until(lambda: any(e.get("event") == "hand_raised" for e in resumed))
    got = [e["id"] for e in resumed if "id" in e]
    assert got[:len(expected)] == expected
    assert len(got) == len(set(got)) and last_seen not in got
    types = [e["event"] for e in resumed]
    assert types[:2] == ["participant_joined", "hand_lowered"]
    assert resumed[0]["data"]["participant"]["id"] == outage_pid

    # And the keypad works for them, through the stream started for them.
    await until(lambda: _stream_live(stack, room.id, outage_pid), timeout=15)
    mark = stack.sim.events[-1].seq
    await stack.queue.lower_hand(room.id, outage_pid, by="host")
    stack.sim.press(outage, "*1")
    await stack.sim.wait_event("heard", call_sid=outage, kind="announcement", after=mark,
                               text="Hand raised. You are number 2 in line.", timeout=15)
    assert [h.participant for h in await stack.queue.queue(room.id)] == [a_pid, outage_pid]
    # The stream kept open through the outage caught up too, without duplicates.
    kept_ids = [e["id"] for e in kept if "id" in e]
    assert len(kept_ids) == len(set(kept_ids))
    everything = await _event_ids(stack, room.id)
    await until(lambda: [e["id"] for e in kept if "id" in e] == everything[1:])  # it began after the first


async def _stream_live(stack: Stack, room: str, pid: str) -> bool:
    return pid in await live_streams(stack.redis, room, me="")


async def _has(stack: Stack, room: str, pid: str) -> bool:
    return (await stack.queue.snapshot(room)).participant(pid) is not None
