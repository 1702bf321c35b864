"""Keypad streams that survive a restart: Twilio never reconnects a media stream, so the
app starts a new one (REST Streams create) for callers no process holds a stream for."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from phonekit import ACCOUNT_SID, AUTH_TOKEN, Stack, phone_stack, until
from servekit import Served

from handraise.phone.control import set_conference
from handraise.phone.media import media_hub
from handraise.phone.streams import live_streams, live_value, refresh_live
from handraise.phone.webhooks import phone, resume_streams
from handraise.queue import Queue
from handraise.rooms import create_room, get_room
from handraise.sim import SimConfig, Simulator, free_port
from handraise.sim.client import emulator_client
from handraise.store import Redis, client_from_url

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*(BasicAuth|auth' parameter).*:DeprecationWarning"),
]


async def _resumed_streams(stack: Stack, sid: str) -> list[dict[str, object]]:
    return [e.data for e in stack.sim.events if e.kind == "rest"
            and e.data["path"].endswith(f"/Calls/{sid}/Streams.json")]


async def test_a_stream_live_in_another_process_is_not_duplicated_and_a_dead_one_is_resumed(
        redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Resume")
        room = created.room
        await stack.join(created.host_code, "+15550100001", host=True)
        sid, pid = await stack.join(room.access_code, "+15550100002")
        svc, me = phone(stack.app), media_hub(stack.app).holder
        live = await until(lambda: live_streams(stack.redis, room.id, me=me))
        assert live[pid].holder == me
        assert await resume_streams(svc, me=me, grace_s=0) == 0  # held here

        # The stream stops (REST, as an operator could); a process on another host says
        # it holds one for this caller: that one is trusted until it expires.
        client = emulator_client(stack.sim.base_url, ACCOUNT_SID, AUTH_TOKEN)
        await asyncio.to_thread(client.calls(sid).streams("handraise-keys").update,
                                status="stopped")
        await until(lambda: stack.sim.state(sid)["streams"] == [])
        await until(lambda: _not_live(stack.redis, room.id, pid, me))
        other = "elsewhere:4242:abcd"
        await refresh_live(stack.redis, {room.id: {pid: "MZ" + "0" * 32}}, other)
        assert await resume_streams(svc, me=me, grace_s=0) == 0
        assert stack.sim.state(sid)["streams"] == [] and not await _resumed_streams(stack, sid)

        # Its entry expires (that process died): the stream is started again by REST, with
        # the TwiML's name and parameters, and the keypad works in it.
        await stack.redis.hset(f"hr:{{{room.id}}}:live-streams", pid,
                               live_value(other, "MZ" + "0" * 32, ttl_s=-1))
        mark = stack.sim.events[-1].seq
        # Two processes find it at once (both passes run here): one stream is started.
        both = await asyncio.gather(resume_streams(svc, me=me, grace_s=0),
                                    resume_streams(svc, me="elsewhere:77:beef", grace_s=0))
        assert sorted(both) == [0, 1]
        started = await stack.sim.wait_event("stream-started", call_sid=sid, after=mark)
        assert started.data["name"] == "handraise-keys"
        assert started.data["params"] == {"room": room.id, "participant": pid}
        assert started.data["url"] == svc.urls.media_stream()
        live = await until(lambda: _live_here(stack.redis, room.id, pid, me))
        assert await resume_streams(svc, me=me, grace_s=0) == 0  # live again: not twice
        assert len(await _resumed_streams(stack, sid)) == 1

        stack.sim.press(sid, "*1")
        await stack.sim.wait_event("heard", call_sid=sid, kind="announcement", after=mark,
                                   text="Hand raised. You are number 1 in line.", timeout=15)
        assert [(h.participant, h.source) for h in await stack.queue.queue(room.id)] == [
            (pid, "keypad")]


async def _not_live(redis: Redis, room: str, pid: str, me: str) -> bool:
    return pid not in await live_streams(redis, room, me=me)


async def _live_here(redis: Redis, room: str, pid: str, me: str) -> bool:
    entry = (await live_streams(redis, room, me=me)).get(pid)
    return entry is not None and entry.holder == me


@pytest.mark.slow
async def test_after_the_app_is_killed_and_restarted_star_1_in_the_conference_still_raises_the_hand(
        redis_server: str, tmp_path: Path) -> None:
    redis = client_from_url(redis_server)
    await redis.flushall()
    port, sim_port = free_port(), free_port()
    server = Served(redis_server, tmp_path / "serve.log", port=port, env={
        "HANDRAISE_TWILIO_API_URL": f"http://127.0.0.1:{sim_port}",
        "HANDRAISE_RECONCILE_INTERVAL": "1"})
    config = SimConfig(voice_url=server.public + "/voice/incoming", account_sid=ACCOUNT_SID,
                       auth_token=AUTH_TOKEN, port=sim_port, media_time_scale=0.0,
                       wait_time_scale=0.05, seed=11, background="silence")
    try:
        async with Simulator(config) as sim:
            await asyncio.to_thread(server.start)
            created = await create_room(redis, "Survives a restart")
            room = created.room
            host = sim.place_call("+15550100001", "+15550109999")
            await sim.wait_event("gather-start", call_sid=host, num_digits=6)
            sim.press(host, created.host_code)
            sid = sim.place_call("+15550100002", "+15550109999")
            await sim.wait_event("gather-start", call_sid=sid, num_digits=6)
            sim.press(sid, room.access_code)
            await sim.wait_event("conference", call_sid=sid, event="participant-join",
                                 timeout=20)
            pid = sim.state(sid)["conference"]["label"]
            await until(lambda: live_streams(redis, room.id), timeout=20)

            mark = sim.events[-1].seq
            server.kill()  # kill -9: nothing of the app's shut-down runs
            await sim.wait_event("stream-stopped", call_sid=sid, after=mark, timeout=20)
            assert sim.state(sid)["streams"] == []  # Twilio does not reconnect it
            await asyncio.to_thread(server.start)
            await sim.wait_event("stream-started", call_sid=sid, after=mark, timeout=40)
            await until(lambda: _listening(server, pid), timeout=20)

            sim.press(sid, "*1")
            await sim.wait_event("heard", call_sid=sid, kind="announcement", after=mark,
                                 text="Hand raised. You are number 1 in line.", timeout=20)
            hands = await Queue(redis).queue(room.id)
            assert [(h.participant, h.source) for h in hands] == [(pid, "keypad")]
            log = server.log()
            assert f"room {room.id}: {pid} had no live keypad stream" in log, log[-3000:]
            # One stream, not one per pass (the host's leg, streamed for their keys, comes
            # back too, with a line of its own).
            assert log.count(f"{pid} had no live keypad stream") == 1
            assert log.count("had no live keypad stream") == 2

            # Again at once (a rolling restart): the stream comes back once more.
            mark = sim.events[-1].seq
            server.kill()
            await sim.wait_event("stream-stopped", call_sid=sid, after=mark, timeout=20)
            await asyncio.to_thread(server.start)
            await sim.wait_event("stream-started", call_sid=sid, after=mark, timeout=40)
            await until(lambda: _listening(server, pid, 3), timeout=20)
            sim.press(sid, "*2")
            await sim.wait_event("heard", call_sid=sid, kind="announcement", after=mark,
                                 text="Your hand was lowered.", timeout=20)
            assert await Queue(redis).queue(room.id) == []
            assert server.log().count(f"{pid} had no live keypad stream") == 2
            assert await asyncio.to_thread(server.terminate) == 0
    finally:
        server.stop()
        await redis.aclose()


def _listening(server: Served, pid: str, times: int = 2) -> bool:
    return server.log().count(f"participant {pid}): listening for keys") == times


async def test_a_caller_whose_call_ended_unseen_is_removed_rather_than_resumed(
        redis_server: str, caplog: pytest.LogCaptureFixture) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Ghost")
        room = created.room
        await stack.join(created.host_code, "+15550100001", host=True)
        sid, pid = await stack.reach_prejoin(room, "+15550100002")  # their stream runs
        me = media_hub(stack.app).holder
        await until(lambda: _live_here(stack.redis, room.id, pid, me))
        # They had been in the conference when the app went away; their hang-up's
        # callback was lost with it.
        conference = (await get_room(stack.redis, room.id)).conference_sid
        assert conference
        await set_conference(stack.redis, room.id, pid, conference)
        await stack.sim.hang_up(sid)
        await until(lambda: _not_live(stack.redis, room.id, pid, me))
        caplog.set_level(logging.INFO, logger="handraise.phone.webhooks")

        assert await resume_streams(phone(stack.app), me=me, grace_s=0) == 0
        assert (await stack.queue.snapshot(room.id)).participant(pid) is None
        assert f"{pid}'s call {sid[-6:]} is over; removed" in caplog.text
