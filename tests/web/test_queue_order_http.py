"""The dashboard's view of the queue's order over HTTP: fair-order marks, reply marks, Undo."""

from __future__ import annotations

import html
import re

from webkit import signed_in

from handraise.queue import Queue
from handraise.rooms import create_room
from handraise.store import Redis


def hand_items(page: str) -> list[str]:
    return [html.unescape(re.sub(r"<[^>]+>|\s+", " ", li))
            for li in re.findall(r'<li id="hand-.*?</li>', page, re.S)]


async def test_a_fair_room_shows_first_turns_before_those_who_have_spoken(redis: Redis) -> None:
    async with signed_in(redis) as host:
        room = (await create_room(redis, "Fair", order="fair")).room.id
        q = Queue(redis)
        veteran = await q.join(room, name="Vera Veteran")
        newcomer = await q.join(room, name="Nina Newcomer")
        speaker = await q.join(room, name="Sam Speaker")
        await q.call_on(room, veteran)
        await q.call_on(room, speaker)
        await q.raise_hand(room, veteran, source="keypad")
        await q.raise_hand(room, newcomer, source="web")
        page = await (await host.client.get(f"/host/rooms/{room}")).get_data(as_text=True)
        first, second = hand_items(page)
        assert "Nina Newcomer" in first and "first turn" in first
        assert "Vera Veteran" in second and "has spoken" in second
        assert "fair order" in page
        await q.reply(room, newcomer, source="web")
        page = await (await host.client.get(f"/host/rooms/{room}")).get_data(as_text=True)
        assert "Reply to Sam Speaker" in hand_items(page)[0]
        assert 'name="order"' in page and 'name="reply_keys"' in page  # the settings form
        assert "Undo" not in page
        await q.lower_all(room)
        page = await (await host.client.get(f"/host/rooms/{room}")).get_data(as_text=True)
        undo = re.search(r'<div class="undo" data-expires-at="(\d+)">', page)
        assert undo and ">Undo</button>" in page
