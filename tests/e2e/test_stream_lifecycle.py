"""A media stream whose socket ends while its start-up check (a Redis round trip) is still
running: it must leave nothing behind in the process's media hub, whether the check
answers soon after or Redis stalls past the stream's finish."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

import pytest
from phonekit import ACCOUNT_SID, StoppableRedis, phone_stack, until

from handraise.phone.media import FINISH_TIMEOUT_S, MediaHub, MediaStream
from handraise.phone.webhooks import phone
from handraise.rooms import create_room

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*(BasicAuth|auth' parameter).*:DeprecationWarning"),
]


def start(call_sid: str, room: str, participant: str) -> str:
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": "MZ" + call_sid[2:],
                       "start": {"accountSid": ACCOUNT_SID, "streamSid": "MZ" + call_sid[2:],
                                 "callSid": call_sid, "tracks": ["inbound"],
                                 "customParameters": {"room": room, "participant": participant},
                                 "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                                 "channels": 1}}})


def left_nothing(hub: MediaHub, *streams: MediaStream) -> None:
    for stream in streams:
        assert stream not in hub.open and stream not in hub.by_slot.values()
        assert stream not in hub.answering.values()


async def test_a_stream_ended_during_its_start_up_check_leaves_nothing_in_the_hub(
        redis_server: str) -> None:
    async with phone_stack(redis_server) as stack:
        room = (await create_room(stack.redis, "Short stream")).room
        call = "CA" + "1f" * 16
        pid = await stack.queue.join(room.id, call_sid=call, label="p_short")
        hub = MediaHub()
        stream = MediaStream(phone(stack.app), hub, lambda code, reason: None)
        stream.on_message(start(call, room.id, pid))
        stream.dropped()  # the caller hung up before the check's round trip came back
        await hub.drain()
        left_nothing(hub, stream)
        assert hub.bank.streams == 0 and not hub.answering


@pytest.mark.slow
async def test_a_stream_ended_while_redis_stalls_its_check_never_joins_after_its_finish(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    stoppable = StoppableRedis(tmp_path)
    stoppable.start()
    try:
        async with phone_stack(stoppable.url, app_connects=True) as stack:
            room = (await create_room(stack.redis, "Stalled")).room
            calls = ["CA" + "2e" * 16, "CA" + "3d" * 16]
            pids = [await stack.queue.join(room.id, call_sid=c, label=f"p_{i}")
                    for i, c in enumerate(calls)]
            hub = MediaHub()
            svc = phone(stack.app)
            first = MediaStream(svc, hub, lambda code, reason: None)
            assert stoppable.proc is not None
            os.kill(stoppable.proc.pid, signal.SIGSTOP)  # Redis takes connections, answers none
            try:
                with caplog.at_level(logging.WARNING, logger="handraise.phone.media"):
                    first.on_message(start(calls[0], room.id, pids[0]))
                    first.dropped()
                    # The stream's finish waits FINISH_TIMEOUT_S for the check, then gives up.
                    await until(lambda: "stopped before its start-up check answered"
                                in caplog.text, timeout=FINISH_TIMEOUT_S + 10)
            finally:
                os.kill(stoppable.proc.pid, signal.SIGCONT)
            # Redis answers again, the first check's reply included. A second stream starts
            # and listens; the first one must not have joined meanwhile.
            second = MediaStream(svc, hub, lambda code, reason: None)
            second.on_message(start(calls[1], room.id, pids[1]))
            assert second.starting is not None
            await second.starting
            assert list(hub.by_slot.values()) == [second] and hub.bank.streams == 1
            left_nothing(hub, first)
            second.dropped()
            await hub.drain()
            left_nothing(hub, first, second)
            assert hub.bank.streams == 0 and not hub.answering
    finally:
        stoppable.stop()
