"""The companion page in headless Chromium: a caller links it with the PIN they heard."""

from __future__ import annotations

import re

import pytest
from browserkit import ARTIFACTS, PHONE, open_signed_in
from phonekit import Stack, phone_stack, until
from playwright.async_api import Browser, BrowserContext, Page, expect
from test_host_a11y import serious_violations

from handraise.phone.nextup import marker_key
from handraise.rooms import create_room

pytestmark = [pytest.mark.filterwarnings("ignore:.*(BasicAuth|auth' parameter).*:DeprecationWarning")]

LIVE = 5000


def heard_pin(stack: Stack, sid: str) -> str:
    """The PIN as the caller heard it: "your PIN is 4, 8, 1, 9, 2, 3"."""
    found = re.search(r"your PIN is ((?:\d, ){5}\d)", stack.said(sid))
    assert found, stack.said(sid)
    return found.group(1).replace(", ", "")


async def link(context: BrowserContext, pin: str) -> Page:
    page = await context.new_page()
    await page.goto("/join")
    await page.get_by_label("PIN").fill(f"{pin[:3]} {pin[3:]}")  # as people type it
    await page.get_by_role("button", name="Link my call").click()
    await page.wait_for_url("**/me")
    return page


async def test_a_caller_links_the_page_and_the_page_and_keypad_move_the_same_hand(
        redis_server: str, browser: Browser) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Town hall")
        room = created.room
        await stack.join(created.host_code, "+15550100000", host=True)
        sid, _pid = await stack.join(room.access_code, "+15550104821")
        pin = heard_pin(stack, sid)
        context = await browser.new_context(base_url=stack.served.base_url, viewport=PHONE,  # type: ignore[arg-type]
                                            bypass_csp=True)
        page = await link(context, pin)
        status = page.get_by_role("status")
        await expect(status).to_contain_text("Your hand is down.")
        await expect(page.get_by_text("You are linked to your call ending 4821.")).to_be_visible()
        await expect(page.get_by_text("On the phone: *1 raises, *2 lowers")).to_be_visible()
        host = await open_signed_in(browser, stack.served.base_url, f"/host/rooms/{room.id}")
        queue = host.page.get_by_role("region", name="Hand queue")

        await page.get_by_label("Topic").fill("The budget, line 4")
        await page.get_by_role("button", name="Save topic").click()
        mark = stack.sim.events[-1].seq
        await page.get_by_role("button", name="Raise hand").click()
        await expect(status).to_contain_text("Your hand is raised. You're next.", timeout=LIVE)
        await expect(queue.get_by_role("listitem")).to_contain_text("via web page", timeout=LIVE)
        await expect(queue.get_by_role("listitem")).to_contain_text("The budget, line 4")
        await page.get_by_label("Your name").fill("Ada")
        await page.get_by_role("button", name="Save name").click()
        await expect(queue.get_by_role("listitem")).to_contain_text("Ada", timeout=LIVE)
        await expect(host.page.get_by_role("region", name="Participants")).to_contain_text("Phone + web")
        # A web raise is not announced on the phone (the room does not ask for it).
        assert not [e for e in stack.sim.events[mark:] if e.kind == "heard" and e.call_sid == sid]

        # *2 on the keypad lowers the same hand; the page follows without reload.
        stack.sim.press(sid, "*2")
        await expect(status).to_contain_text("Your hand is down.", timeout=LIVE)
        await expect(queue.get_by_role("listitem")).to_have_count(0, timeout=LIVE)
        await expect(page.get_by_label("Topic")).to_have_value("")  # the topic went with the hand
        # *1 on the keypad: the page shows it.
        stack.sim.press(sid, "*1")
        await expect(status).to_contain_text("You're next.", timeout=LIVE)
        [hand] = await stack.queue.queue(room.id)
        assert hand.source == "keypad"
        # The host calls on them: the page says they are live.
        await host.page.get_by_role("button", name="Call on next").click()
        await expect(status).to_contain_text("You are live — the host called on you.", timeout=LIVE)

        assert await serious_violations(page) == []
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "companion-phone-360x740.png"), full_page=True)
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0

        # The call ends: the page says so and offers nothing to press.
        await stack.sim.hang_up(sid)
        await expect(status).to_have_text("Your call has ended.", timeout=LIVE)
        await expect(page.get_by_role("button", name="Raise hand")).to_have_count(0)
        await expect(page.get_by_role("button", name="Lower hand")).to_have_count(0)
        await page.reload()
        await expect(page.get_by_text("Your call has ended.")).to_be_visible()
        await page.goto("/me")
        await expect(page).to_have_url(f"{stack.served.base_url}/join")  # the link is void
        assert not host.problems, host.problems
        # Closed before the app stops: an open dashboard's live stream would hold its
        # shutdown for the whole graceful period.
        await host.context.close()
        await context.close()


async def test_two_linked_callers_each_see_only_their_own_place(redis_server: str, browser: Browser) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Two pages")
        room = created.room
        await stack.join(created.host_code, "+15550100000", host=True)
        a_sid, _a = await stack.join(room.access_code, "+15550104821")
        b_sid, b = await stack.join(room.access_code, "+15550107777")
        await stack.queue.update(room.id, b, name="Bob Secret")
        pages = []
        for sid in (a_sid, b_sid):
            context = await browser.new_context(base_url=stack.served.base_url)
            pages.append(await link(context, heard_pin(stack, sid)))
        page_a, page_b = pages
        await page_a.get_by_role("button", name="Raise hand").click()
        await expect(page_a.get_by_role("status")).to_contain_text("You're next.", timeout=LIVE)
        await page_b.get_by_role("button", name="Raise hand").click()
        await expect(page_b.get_by_role("status")).to_contain_text("You are number 2 in line.", timeout=LIVE)
        assert "Bob" not in await page_a.content() and "7777" not in await page_a.content()
        # A second tab of the same call stays in step.
        second = await page_b.context.new_page()
        await second.goto("/me")
        await expect(second.get_by_role("status")).to_contain_text("number 2")
        assert (await stack.host.call_on(room.id)).ok  # the host calls on the first hand
        await expect(page_a.get_by_role("status")).to_contain_text("You are live", timeout=LIVE)
        await expect(page_b.get_by_role("status")).to_contain_text("You're next.", timeout=LIVE)
        await expect(second.get_by_role("status")).to_contain_text("You're next.", timeout=LIVE)
        await until(lambda: not stack.sim.state(a_sid)["conference"]["muted"])


async def test_without_javascript_linking_and_raising_still_work(redis_server: str, browser: Browser) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "No script")
        room = created.room
        await stack.join(created.host_code, "+15550100000", host=True)
        sid, pid = await stack.join(room.access_code, "+15550104821")
        context = await browser.new_context(base_url=stack.served.base_url, java_script_enabled=False)
        page = await link(context, heard_pin(stack, sid))
        await page.get_by_role("button", name="Raise hand").click()
        await expect(page.get_by_role("status")).to_contain_text("You're next.")
        assert [h.participant for h in await stack.queue.queue(room.id)] == [pid]
        await page.get_by_role("button", name="Lower hand").click()
        await expect(page.get_by_role("status")).to_contain_text("Your hand is down.")


async def test_the_pin_page_is_accessible_and_refuses_a_wrong_pin_politely(
        redis_server: str, browser: Browser) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        context = await browser.new_context(base_url=stack.served.base_url, viewport=PHONE,  # type: ignore[arg-type]
                                            bypass_csp=True)
        page = await context.new_page()
        await page.goto("/join")
        assert await serious_violations(page) == []
        await page.get_by_label("PIN").fill("000 000")
        await page.get_by_role("button", name="Link my call").click()
        await expect(page.get_by_role("alert")).to_have_text(
            "That PIN is not valid. Check the six digits you heard on the call.")
        await page.screenshot(path=str(ARTIFACTS / "join-phone-360x740.png"), full_page=True)


async def test_when_the_hand_becomes_first_the_page_and_the_phone_both_say_youre_next(
        redis_server: str, browser: Browser) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Next on the page")
        room = created.room
        await until(lambda: stack.redis.exists(marker_key(room.id)))  # the watcher knows the room
        await stack.join(created.host_code, "+15550100000", host=True)
        a_sid, a = await stack.join(room.access_code, "+15550107777")
        sid, pid = await stack.join(room.access_code, "+15550104821")
        await stack.queue.raise_hand(room.id, a, source="keypad")
        context = await browser.new_context(base_url=stack.served.base_url, viewport=PHONE,  # type: ignore[arg-type]
                                            bypass_csp=True)
        page = await link(context, heard_pin(stack, sid))
        status = page.get_by_role("status")
        keys = page.get_by_text("*3 tells your place, *0 repeats the keys and your PIN")
        await expect(keys).to_be_visible()
        await page.get_by_role("button", name="Raise hand").click()
        await expect(status).to_contain_text("You are number 2 in line.", timeout=LIVE)

        host = await open_signed_in(browser, stack.served.base_url, f"/host/rooms/{room.id}")
        await expect(host.page.get_by_text("Your keys on the phone: *5 calls on next")).to_be_visible()
        first = host.page.get_by_role("region", name="Hand queue").get_by_role("listitem").first
        await first.get_by_role("button", name="Lower hand").click()
        await expect(status).to_contain_text("Your hand is raised. You're next.", timeout=LIVE)
        await stack.sim.wait_event("heard", call_sid=sid, kind="announcement", text="You're next.",
                                   timeout=15)
        assert "You're next." not in stack.said(a_sid)
        assert [h.participant for h in await stack.queue.queue(room.id)] == [pid]
        assert not host.problems, host.problems
        await host.context.close()  # before the app stops (see the first test)
        await context.close()
