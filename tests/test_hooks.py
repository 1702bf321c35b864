"""Outbound events: signed, in order, at least once, retried with backoff, isolated per receiver."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hookkit import Delivery, FastClock, black_hole, eventually, receiver

from handraise.errors import Invalid, NotFound
from handraise.events import read_events
from handraise.hooks import (
    Clock,
    HookSettings,
    HookWorker,
    add_hook,
    check_events,
    describe_status,
    lane_key,
    list_hooks,
    pending,
    remove_hook,
    sign,
    verify,
)
from handraise.queue import Queue
from handraise.rooms import close_room, create_room
from handraise.store import Redis

QUICK = HookSettings(scan_s=0.05, lease_s=3.0, read_block_s=0.2, timeout_s=5.0, trust_env=False)


@contextlib.asynccontextmanager
async def worker(redis: Redis, settings: HookSettings = QUICK,
                 clock: Clock | None = None) -> AsyncIterator[HookWorker]:
    """A delivery worker, as one app process runs it."""
    w = HookWorker(redis, settings=settings, clock=clock)
    w.start()
    try:
        yield w
    finally:
        await w.stop()


async def meeting(redis: Redis, *, close: bool = True) -> str:
    """A short scripted meeting; returns the room id."""
    queue = Queue(redis)
    room = (await create_room(redis, "Hooked")).room.id
    a = await queue.join(room, number="+15550100001", name="Ada")
    b = await queue.join(room, number="+15550100002")
    c = await queue.join(room, number="+15550100003")
    await queue.raise_hand(room, b, source="keypad")
    await queue.raise_hand(room, c, source="web")
    await queue.call_on(room, b)
    await queue.update(room, b, muted=False)
    await queue.done_speaking(room, b)
    await queue.lower_hand(room, c, by="host")
    await queue.leave(room, a, reason="hung-up")
    if close:
        await close_room(redis, room)
    return room


async def all_ids(redis: Redis, room: str) -> list[str]:
    return [e.id for e in await read_events(redis, room)]


async def _redis_ms_after(redis: Redis, ms: int) -> bool:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000 > ms


async def _pending_is(redis: Redis, hook_id: str, n: int) -> bool:
    return await pending(redis, hook_id) == n


async def test_a_receiver_gets_every_event_of_a_meeting_once_in_order_and_signed(redis: Redis) -> None:
    async with receiver() as got, worker(redis):
        hook = await add_hook(redis, got.url)
        room = await meeting(redis)
        expected = await all_ids(redis, room)
        await got.until(lambda r: len(r.accepted) >= len(expected))
        assert got.ids() == expected  # every event, once, in the room's order
        assert len(got.tries) == len(expected)
        assert got.signed_by(hook.secret)
        events = [d.event for d in got.accepted]
        assert [e["type"] for e in events][:4] == [
            "room_created", "participant_joined", "participant_joined", "participant_joined"]
        raised = next(e for e in events if e["type"] == "hand_raised")
        assert raised["source"] == "keypad" and raised["position"] == 1 and raised["room"] == room
        assert raised["participant"]["display_name"] == "Caller 0002"
        assert raised["participant"]["number_masked"] == "+1 ••• ••• 0002"
        assert set(raised["participant"]) == {"id", "display_name", "number_masked"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", raised["at"])
        left = next(e for e in events if e["type"] == "participant_left")
        assert left["participant"]["display_name"] == "Ada"  # remembered after they left
        assert events[-1]["type"] == "room_closed"
        assert "+15550100002" not in b"".join(d.body for d in got.tries).decode()
        assert got.accepted[0].headers["Handraise-Event-Id"] == expected[0]
        listed = (await list_hooks(redis))[0]
        assert describe_status(listed.status).startswith("ok (HTTP 200) at ")
        assert await pending(redis, hook.id) == 0


async def test_a_receiver_failing_its_first_three_tries_still_gets_every_event_in_order(
        redis: Redis) -> None:
    def flaky(_delivery: Delivery, n: int) -> int:
        return 500 if n < 3 else 200

    clock = FastClock(1000)  # the backoff (2 s, 4 s, 8 s…) passes in milliseconds
    async with receiver(flaky) as got, worker(redis, clock=clock):
        hook = await add_hook(redis, got.url)
        room = await meeting(redis)
        expected = await all_ids(redis, room)
        await got.until(lambda r: len(r.accepted) >= len(expected))
        assert got.ids() == expected
        first = [d for d in got.tries if d.event["id"] == expected[0]]
        assert [d.headers["Handraise-Attempt"] for d in first] == ["1", "2", "3", "4"]
        assert got.signed_by(hook.secret)


async def test_a_delivery_is_retried_for_at_least_ten_minutes_then_dropped_and_the_next_goes(
        redis: Redis) -> None:
    doomed: list[str] = []

    def refuse_first(delivery: Delivery, _n: int) -> int:
        if not doomed:
            doomed.append(delivery.event["id"])
        return 503 if delivery.event["id"] == doomed[0] else 200

    # 300 times faster: 15 minutes in 3 s, while a try's own few milliseconds stay small
    # beside the backoff (a tight loop would make hundreds of tries).
    clock = FastClock(300)
    async with receiver(refuse_first) as got, worker(redis, clock=clock):
        hook = await add_hook(redis, got.url, events=("hand_raised",))
        room = (await create_room(redis, "Patience")).room.id
        queue = Queue(redis)
        a = await queue.join(room, number="+15550100001")
        b = await queue.join(room, number="+15550100002")
        await queue.raise_hand(room, a, source="keypad")
        await queue.raise_hand(room, b, source="keypad")
        await got.until(lambda r: len(r.accepted) == 1, timeout=30)
        tries = [d for d in got.tries if d.event["id"] == doomed[0]]
        assert tries[-1].signed_at - tries[0].signed_at >= 600  # retried for 10 minutes and more
        assert 5 < len(tries) < 40  # with backoff, not in a tight loop
        assert got.accepted[0].event["participant"]["id"] == b

        async def counted() -> dict[str, str] | None:
            status = (await list_hooks(redis))[0].status
            return status if status.get("delivered") == "1" else None

        status = await eventually(counted)
        assert status["dropped"] == "1" and status["last_ok"] == "1"
        assert await pending(redis, hook.id) == 0


async def test_a_receiver_that_never_answers_delays_no_other_receiver(redis: Redis) -> None:
    # Its timeout is far longer than the deadline below: waiting behind it would fail the test.
    slow = HookSettings(scan_s=0.05, lease_s=3.0, read_block_s=0.2, timeout_s=60.0, trust_env=False)
    async with black_hole() as dead_url, receiver() as got, worker(redis, slow):
        dead = await add_hook(redis, dead_url)
        await add_hook(redis, got.url)
        started = time.time()
        room = await meeting(redis)
        expected = await all_ids(redis, room)
        await got.until(lambda r: r.ids() == expected, timeout=15)
        lag = max(d.received_at for d in got.accepted) - started
        print(f"\nlive receiver: {len(expected)} events, last one {lag * 1000:.0f} ms after the "
              f"meeting began, while the other receiver hangs")
        assert await pending(redis, dead.id) == len(expected)  # still waiting on the dead one


async def test_deliveries_wait_in_redis_across_a_restart_and_go_out_in_order(redis: Redis) -> None:
    up = False

    def until_up(_delivery: Delivery, _n: int) -> int:
        return 200 if up else 500

    async with receiver(until_up) as got:
        async with worker(redis, clock=FastClock(1000)):
            hook = await add_hook(redis, got.url)
            room = await meeting(redis)
            expected = await all_ids(redis, room)
            await got.until(lambda r: len(r.tries) >= 3)
            await eventually(lambda: _pending_is(redis, hook.id, len(expected)))
        assert got.accepted == []
        assert "failing (HTTP 500)" in describe_status((await list_hooks(redis))[0].status)
        up = True
        async with worker(redis, clock=FastClock(1000)):  # "the app restarted"
            await got.until(lambda r: len(r.accepted) >= len(expected))
        assert got.ids() == expected


async def test_two_processes_share_the_work_without_sending_an_event_twice(redis: Redis) -> None:
    async with receiver() as got, worker(redis) as one, worker(redis) as two:
        await add_hook(redis, got.url)
        rooms = [await meeting(redis, close=False) for _ in range(4)]
        expected = {room: await all_ids(redis, room) for room in rooms}
        total = sum(len(ids) for ids in expected.values())
        await got.until(lambda r: len(r.accepted) >= total)
        for room, ids in expected.items():
            assert [d.event["id"] for d in got.accepted if d.event["room"] == room] == ids
        assert len(got.tries) == total
        assert one.rooms.isdisjoint(two.rooms) and one.rooms | two.rooms == set(rooms)


async def test_a_hook_gets_only_its_room_and_the_event_types_it_asked_for(redis: Redis) -> None:
    async with receiver() as got, worker(redis):
        queue = Queue(redis)
        mine = (await create_room(redis, "Mine")).room.id
        other = (await create_room(redis, "Other")).room.id
        await add_hook(redis, got.url, room=mine, events=check_events(["hand.raised,hand_lowered"]))
        for room in (other, mine):
            pid = await queue.join(room, number="+15550100001")
            await queue.raise_hand(room, pid, source="web")
            await queue.lower_hand(room, pid, by="web")
        await got.until(lambda r: len(r.accepted) >= 2)
        assert [(d.event["room"], d.event["type"]) for d in got.accepted] == [
            (mine, "hand_raised"), (mine, "hand_lowered")]


async def test_a_hook_added_later_gets_nothing_from_before_it(redis: Redis) -> None:
    async with receiver() as got, worker(redis):
        queue = Queue(redis)
        room = (await create_room(redis, "Before")).room.id
        pid = await queue.join(room, number="+15550100001")
        # A hook gets events from the millisecond it was added on; the join is before that.
        joined = int((await read_events(redis, room))[-1].id.split("-")[0])
        await eventually(lambda: _redis_ms_after(redis, joined))
        await add_hook(redis, got.url)
        await queue.raise_hand(room, pid, source="keypad")
        await got.until(lambda r: len(r.accepted) >= 1)
        assert [d.event["type"] for d in got.accepted] == ["hand_raised"]


async def test_removing_a_hook_drops_its_pending_deliveries(redis: Redis) -> None:
    async with receiver(lambda _d, _n: 500) as got, worker(redis, clock=FastClock(1000)):
        hook = await add_hook(redis, got.url)
        room = await meeting(redis, close=False)
        await got.until(lambda r: len(r.tries) >= 1)
        assert await pending(redis, hook.id) > 0
        await remove_hook(redis, hook.id)
        assert await list_hooks(redis) == []

        async def lane_gone() -> bool:  # a fan-out in flight may re-add it once; its lane drops it
            return not await redis.exists(lane_key(room, hook.id))

        await eventually(lane_gone)
        assert await list_hooks(redis) == []
        with pytest.raises(NotFound):
            await remove_hook(redis, hook.id)


def test_a_signature_verifies_only_for_its_body_secret_and_time() -> None:
    body = json.dumps({"type": "hand_raised", "id": "1-0"}).encode()
    header = sign("whsec_x", 1_700_000_000, body)
    assert verify("whsec_x", body, header, now=1_700_000_100)
    assert not verify("whsec_y", body, header, now=1_700_000_100)
    assert not verify("whsec_x", body + b" ", header, now=1_700_000_100)
    assert not verify("whsec_x", body, header, now=1_700_001_000)  # too old: a replay
    assert not verify("whsec_x", body, "v1=abc", now=1_700_000_100)


async def test_bad_hook_urls_rooms_and_event_types_are_refused(redis: Redis) -> None:
    with pytest.raises(Invalid, match="http"):
        await add_hook(redis, "ftp://example.org/hook")
    with pytest.raises(NotFound):
        await add_hook(redis, "https://example.org/hook", room="rnothere")
    with pytest.raises(Invalid, match="hand_rased"):
        check_events(["hand_rased"])


def _cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(Path(sys.executable).parent), "HOME": str(data_dir),
           "HANDRAISE_DATA_DIR": str(data_dir / "data")}
    return subprocess.run([sys.executable, "-m", "handraise.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_hooks_add_list_remove_from_the_command_line(tmp_path: Path) -> None:
    added = _cli("hooks", "add", "https://example.org/hook", "--events", "hand_raised",
                 "hand_lowered", data_dir=tmp_path)
    assert added.returncode == 0, added.stderr
    hook_id = re.search(r"Hook (h\w+) added", added.stdout)
    secret = re.search(r"whsec_[\w-]+", added.stdout)
    assert hook_id and secret
    listed = _cli("hooks", "list", data_dir=tmp_path)
    assert hook_id.group(1) in listed.stdout and "no delivery yet" in listed.stdout
    assert "hand_raised,hand_lowered" in listed.stdout and secret.group(0) not in listed.stdout
    bad = _cli("hooks", "add", "https://example.org/x", "--events", "nope", data_dir=tmp_path)
    assert bad.returncode == 1 and "Unknown event type 'nope'" in bad.stderr
    removed = _cli("hooks", "remove", hook_id.group(1), data_dir=tmp_path)
    assert removed.returncode == 0 and "removed" in removed.stdout
    assert "No hooks" in _cli("hooks", "list", data_dir=tmp_path).stdout



async def test_the_readme_verification_example_accepts_a_real_delivery_only(redis: Redis) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Outbound events (webhooks)", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {}
    exec(example, namespace)
    readme_verify = namespace["verify"]
    assert callable(readme_verify)
    async with receiver() as got, worker(redis):
        hook = await add_hook(redis, got.url)
        await create_room(redis, "Documented")
        await got.until(lambda r: len(r.accepted) >= 1)
    delivery = got.accepted[0]
    header = delivery.headers["Handraise-Signature"]
    assert readme_verify(hook.secret, delivery.body, header)
    assert not readme_verify(hook.secret, delivery.body.replace(b"Documented", b"Forged"), header)
    assert not readme_verify("whsec_wrong", delivery.body, header)
