"""Replies and the Undo of "Lower all hands" on the pages, in headless Chromium: the companion
page's Reply button, the dashboard's reply mark and its Undo, with the emulator's calls."""

from __future__ import annotations

import re

import pytest
from browserkit import ARTIFACTS, LAPTOP, PHONE, open_signed_in
from phonekit import Stack, phone_stack, until
from playwright.async_api import Browser, Locator, Page, expect
from test_companion import heard_pin, link
from test_host_a11y import serious_violations

from handraise.rooms import create_room
from handraise.store import key

pytestmark = [pytest.mark.filterwarnings("ignore:.*(BasicAuth|auth' parameter).*:DeprecationWarning")]

LIVE = 5000
OVERFLOW = "document.documentElement.scrollWidth - document.documentElement.clientWidth"


def hands(page: Page) -> Locator:
    return page.get_by_role("region", name="Hand queue").get_by_role("listitem")


async def fits(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    overflow = await page.evaluate(OVERFLOW)
    assert overflow <= 0, f"horizontal scroll of {overflow}px in {name}"


async def test_a_linked_caller_replies_to_the_speaker_and_the_dashboard_marks_it(
        redis_server: str, browser: Browser) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Replies on the page")
        room = created.room
        await stack.join(created.host_code, "+15550100000", host=True)
        s_sid, s_pid = await stack.join(room.access_code, "+15550102222")
        a_sid, a_pid = await stack.join(room.access_code, "+15550104821")
        b_sid, b_pid = await stack.join(room.access_code, "+15550107777")
        await stack.queue.update(room.id, s_pid, name="Speaker Sam")
        context = await browser.new_context(base_url=stack.served.base_url, viewport=PHONE,  # type: ignore[arg-type]
                                            bypass_csp=True)
        page = await link(context, heard_pin(stack, a_sid))
        status = page.get_by_role("status")
        reply = page.get_by_role("button", name="Reply")
        await expect(status).to_contain_text("Your hand is down.")
        await expect(reply).to_have_count(0)  # nobody speaks: nothing to reply to
        await expect(page.get_by_text("*4 replies to the speaker")).to_be_visible()
        host = await open_signed_in(browser, stack.served.base_url, f"/host/rooms/{room.id}",
                                    viewport=PHONE, bypass_csp=True)

        assert (await stack.host.call_on(room.id, s_pid)).ok
        await expect(reply).to_be_visible(timeout=LIVE)  # someone speaks now
        stack.sim.press(b_sid, "*1")  # a phone-only caller's point
        await expect(hands(host.page)).to_have_count(1, timeout=LIVE)
        await fits(page, "companion-reply-button-phone-360x740")
        await reply.click()
        await expect(status).to_contain_text("Your reply is raised. You're next.", timeout=LIVE)
        await expect(reply).to_have_count(0)  # a reply already
        await expect(page.get_by_role("button", name="Lower hand")).to_be_visible()
        await expect(hands(host.page)).to_have_count(2, timeout=LIVE)
        await expect(hands(host.page).nth(0)).to_contain_text("Caller 4821")
        await expect(hands(host.page).nth(0)).to_contain_text("Reply to Speaker Sam")
        await expect(hands(host.page).nth(1)).to_contain_text("Caller 7777")
        await expect(hands(host.page).nth(1)).not_to_contain_text("Reply to")
        assert [(h.participant, h.kind) for h in await stack.queue.queue(room.id)] == \
            [(a_pid, "reply"), (b_pid, "point")]
        assert await serious_violations(page) == []
        assert await serious_violations(host.page) == []
        await fits(page, "companion-reply-phone-360x740")
        await fits(host.page, "dashboard-reply-phone-360x740")
        await host.page.set_viewport_size(LAPTOP)  # type: ignore[arg-type]
        await fits(host.page, "dashboard-reply-laptop-1280x800")

        # Done: the reply becomes an ordinary hand in place, behind b's earlier point.
        await host.page.get_by_role("button", name="Done").click()
        await expect(status).to_contain_text("Your hand is raised. You are number 2 in line.",
                                             timeout=LIVE)
        await expect(hands(host.page).nth(0)).to_contain_text("Caller 7777", timeout=LIVE)
        await expect(host.page.get_by_text("Reply to Speaker Sam")).to_have_count(0)
        await expect(reply).to_have_count(0)
        assert stack.sim.state(s_sid)["conference"]["muted"] is True
        assert not host.problems, host.problems


async def test_the_dashboard_undoes_lower_all_for_a_few_seconds(redis_server: str, browser: Browser) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Undo on the page")
        room = created.room
        await stack.join(created.host_code, "+15550100000", host=True)
        calls = [await stack.join(room.access_code, f"+1555010{n}") for n in ("4821", "7777", "5555")]
        for sid, _ in calls:
            mark = stack.sim.events[-1].seq
            stack.sim.press(sid, "*1")
            await stack.sim.wait_event("heard", call_sid=sid, kind="announcement", after=mark, timeout=15)
        await stack.queue.set_topic(room.id, calls[1][1], "Line 4")
        host = await open_signed_in(browser, stack.served.base_url, f"/host/rooms/{room.id}",
                                    viewport=PHONE)
        await host.context.clock.install()  # real time flows; the test may jump it forward
        await host.page.reload()
        page = host.page
        undo = page.get_by_role("button", name="Undo")
        await expect(hands(page)).to_have_count(3)
        await expect(undo).to_have_count(0)
        before = await hands(page).all_inner_texts()

        await page.get_by_role("button", name="Lower all hands").click()
        await expect(hands(page)).to_have_count(0, timeout=LIVE)
        await expect(undo).to_be_visible(timeout=LIVE)
        await fits(page, "dashboard-undo-phone-360x740")
        await undo.click()
        await expect(page.locator("#status")).to_contain_text("3 hands are back in the queue.")
        await expect(hands(page)).to_have_count(3, timeout=LIVE)
        after = await hands(page).all_inner_texts()
        assert [re.sub(r"\d+:\d\d", "", t) for t in after] == \
            [re.sub(r"\d+:\d\d", "", t) for t in before]  # the same, but for the waiting clocks
        await expect(hands(page).nth(1)).to_contain_text("Line 4")
        await expect(undo).to_have_count(0, timeout=LIVE)

        # Lowered again: the Undo goes away on its own after 15 s (and the server agrees).
        await page.get_by_role("button", name="Lower all hands").click()
        await expect(undo).to_be_visible(timeout=LIVE)
        await host.context.clock.fast_forward("00:16")
        await expect(undo).to_be_hidden(timeout=LIVE)
        await stack.redis.pexpire(key(room.id, "undo-lower-all"), 1)  # as 15 s later on the server
        await until(lambda: _gone(stack, key(room.id, "undo-lower-all")))
        result = await stack.host.undo_lower_all(room.id)
        assert (result.ok, result.message) == (False, "Nothing to undo.")
        assert await stack.queue.queue(room.id) == []
        assert not host.problems, host.problems


async def _gone(stack: Stack, name: str) -> bool:
    return not await stack.redis.exists(name)
