"""The host dashboard in headless Chromium: a meeting run from the page, checked on the
emulator's side (Twilio's view) as well as on the page."""

from __future__ import annotations

import pytest
from browserkit import ARTIFACTS, LAPTOP, PHONE, CuttableProxy, accept_dialogs, open_signed_in
from phonekit import Stack, phone_stack, until
from playwright.async_api import Browser, Locator, Page, expect

from handraise.rooms import create_room

pytestmark = [pytest.mark.filterwarnings("ignore:.*(BasicAuth|auth' parameter).*:DeprecationWarning")]

OVERFLOW = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
LIVE = 5000  # ms: how long a live update may take to show, at most (it takes far less)


def hands(page: Page) -> Locator:
    return page.get_by_role("region", name="Hand queue").get_by_role("listitem")


def row(page: Page, name: str) -> Locator:
    return page.get_by_role("region", name="Participants").get_by_role("row").filter(has_text=name)


def muted(stack: Stack, sid: str) -> bool:
    return bool(stack.sim.state(sid)["conference"]["muted"])


async def test_hands_from_the_keypad_and_the_prejoin_window_appear_live_in_order_and_the_host_runs_the_floor(
        redis_server: str, browser: Browser) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Standup")
        room = created.room
        await stack.join(created.host_code, "+15550100000", host=True)
        a_sid, _a_pid = await stack.join(room.access_code, "+15550104821")
        w = await open_signed_in(browser, stack.served.base_url, f"/host/rooms/{room.id}")
        page = w.page
        await expect(row(page, "Caller 4821")).to_have_count(1)
        await expect(hands(page)).to_have_count(0)
        await expect(page.get_by_role("button", name="Call on next")).to_be_disabled()

        # A caller in the conference presses *1 (stream mode: the detector hears it).
        stack.sim.press(a_sid, "*1")
        await expect(hands(page)).to_have_count(1, timeout=LIVE)
        # Another caller raises in the pre-join window.
        b_sid, _b_pid = await stack.reach_prejoin(room, "+15550107777")
        stack.sim.press(b_sid, "*1")
        await expect(hands(page)).to_have_count(2, timeout=LIVE)
        await expect(hands(page).nth(0)).to_contain_text("Caller 4821")
        await expect(hands(page).nth(0)).to_contain_text("via keypad")
        await expect(hands(page).nth(1)).to_contain_text("Caller 7777")
        await expect(hands(page).nth(1)).to_contain_text("via pre-join prompt")
        await expect(page).to_have_title("(2) Standup · handraise")
        await stack.sim.wait_event("conference", call_sid=b_sid, event="participant-join")

        # Call on next: the first hand is unmuted on Twilio's side and hears it privately.
        await page.get_by_role("button", name="Call on next").click()
        status = page.get_by_role("status")
        await expect(status).to_contain_text("They are live.")
        await until(lambda: not muted(stack, a_sid))
        await until(lambda: "You are live" in stack.said(a_sid))
        speaking = page.get_by_role("region", name="Speaking now")
        await expect(speaking).to_contain_text("Caller 4821", timeout=LIVE)
        await expect(hands(page)).to_have_count(1, timeout=LIVE)
        await expect(hands(page).nth(0)).to_contain_text("Caller 7777")

        # Done mutes them again.
        await speaking.get_by_role("button", name="Done").click()
        await expect(status).to_contain_text("Done; they are muted again.")
        await until(lambda: muted(stack, a_sid))
        await expect(speaking).to_contain_text("Nobody has the floor", timeout=LIVE)

        # Call on one hand directly, then lower the others.
        stack.sim.press(a_sid, "*1")
        await expect(hands(page)).to_have_count(2, timeout=LIVE)
        await hands(page).filter(has_text="Caller 7777").get_by_role("button", name="Call on").click()
        await until(lambda: not muted(stack, b_sid))
        await expect(speaking).to_contain_text("Caller 7777", timeout=LIVE)
        await page.get_by_role("button", name="Lower all hands").click()
        await expect(status).to_contain_text("1 hand lowered.")
        await expect(hands(page)).to_have_count(0, timeout=LIVE)
        assert await stack.queue.queue(room.id) == []
        await expect(page).to_have_title("Standup · handraise")
        assert not w.problems, w.problems


async def test_mute_prompt_remove_and_end_meeting_act_on_the_calls(
        redis_server: str, browser: Browser) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Controls", end_on_host_exit=False)
        room = created.room
        host_sid, _ = await stack.join(created.host_code, "+15550100000", host=True)
        a_sid, _a_pid = await stack.join(room.access_code, "+15550104821")
        b_sid, _b_pid = await stack.join(room.access_code, "+15550107777")
        w = await open_signed_in(browser, stack.served.base_url, f"/host/rooms/{room.id}")
        page = w.page
        dialogs = accept_dialogs(page)
        status = page.get_by_role("status")

        await row(page, "Caller 4821").get_by_role("button", name="Unmute").click()
        await expect(status).to_contain_text("Unmuted.")
        await until(lambda: not muted(stack, a_sid))
        await expect(row(page, "Caller 4821")).to_contain_text("Live", timeout=LIVE)
        await row(page, "Caller 4821").get_by_role("button", name="Mute").click()
        await until(lambda: muted(stack, a_sid))
        await row(page, "Caller 7777").get_by_role("button", name="Unmute").click()
        await until(lambda: not muted(stack, b_sid))

        await page.get_by_role("button", name="Mute all").click()
        await expect(status).to_contain_text("Muted 1 caller.")
        await until(lambda: muted(stack, b_sid))
        assert not muted(stack, host_sid)  # the host keeps their voice

        # Prompt: the caller is pulled into a short Gather and put back, still muted.
        mark = stack.sim.events[-1].seq
        await row(page, "Caller 4821").get_by_role("button", name="Prompt").click()
        await expect(status).to_contain_text("They are being asked.")
        await stack.sim.wait_event("gather-start", call_sid=a_sid, after=mark)
        stack.sim.press(a_sid, "*1")
        await stack.sim.wait_event("conference", call_sid=a_sid, event="participant-join", after=mark)
        assert muted(stack, a_sid)
        await expect(hands(page).filter(has_text="Caller 4821")).to_have_count(1, timeout=LIVE)

        # Rename, live everywhere.
        await row(page, "Caller 7777").locator("summary", has_text="Rename").click()  # opens the form
        await row(page, "Caller 7777").get_by_label("New name for Caller 7777").fill("Grace")
        await row(page, "Caller 7777").get_by_role("button", name="Rename").click()
        await expect(status).to_contain_text("Renamed to Grace.")
        await expect(row(page, "Grace")).to_have_count(1, timeout=LIVE)

        # Remove asks first, then ends that call only.
        await row(page, "Grace").get_by_role("button", name="Remove").click()
        await expect(status).to_contain_text("Removed from the call.")
        await stack.sim.wait_event("call-ended", call_sid=b_sid)
        assert dialogs == ["Remove Grace from the call?"]
        await expect(row(page, "Grace")).to_have_count(0, timeout=LIVE)
        assert stack.sim.state(a_sid)["status"] == "in-progress"

        # End meeting asks first, then every call ends.
        await page.get_by_role("button", name="End meeting").click()
        await expect(status).to_contain_text("The conference has ended.")
        for sid in (host_sid, a_sid):
            await stack.sim.wait_event("call-ended", call_sid=sid)
        assert dialogs[-1].startswith("End the meeting for everyone?")
        await expect(page.get_by_role("region", name="Participants").get_by_role("row")).to_have_count(
            0, timeout=LIVE)
        assert not w.problems, w.problems


async def test_a_dropped_stream_resumes_and_shows_what_happened_meanwhile_once(
        redis_server: str, browser: Browser) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        room = (await create_room(stack.redis, "Flaky network")).room
        pid = await stack.queue.join(room.id, number="+15550104821", call_sid="CA" + "1" * 32)
        async with CuttableProxy(stack.served.port).running() as proxy:
            w = await open_signed_in(browser, proxy.base_url, f"/host/rooms/{room.id}")
            page = w.page
            await expect(row(page, "Caller 4821")).to_have_count(1)
            await stack.queue.raise_hand(room.id, pid, source="web")
            await expect(hands(page)).to_have_count(1, timeout=LIVE)
            connections = proxy.accepted
            # The network drops; a hand goes down and up again meanwhile.
            assert proxy.cut() >= 1
            await stack.queue.lower_hand(room.id, pid, by="web")
            other = await stack.queue.join(room.id, number="+15550107777", call_sid="CA" + "2" * 32)
            await stack.queue.raise_hand(room.id, other, source="keypad")
            await stack.queue.raise_hand(room.id, pid, source="web")
            await expect(hands(page)).to_have_count(2, timeout=LIVE)
            assert proxy.accepted > connections  # it did reconnect
            await expect(hands(page).nth(0)).to_contain_text("Caller 7777")
            await expect(hands(page).nth(1)).to_contain_text("Caller 4821")
            await expect(row(page, "Caller 7777")).to_have_count(1)


async def test_when_the_stream_cannot_connect_a_poll_keeps_the_page_current(
        redis_server: str, browser: Browser) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        room = (await create_room(stack.redis, "No live")).room
        pid = await stack.queue.join(room.id, number="+15550104821", call_sid="CA" + "3" * 32)
        context = await browser.new_context(base_url=stack.served.base_url)
        await context.route("**/events", lambda route: route.abort())
        page = await context.new_page()
        await page.goto(f"/host/rooms/{room.id}")
        from phonekit import HOST_PASSWORD
        await page.get_by_label("Password").fill(HOST_PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_text("Live updates paused")).to_be_visible(timeout=LIVE)
        await stack.queue.raise_hand(room.id, pid, source="web")
        await expect(hands(page)).to_have_count(1, timeout=8000)  # the next 5-second poll
        await context.unroute("**/events")
        await expect(page.get_by_text("Live updates paused")).to_be_hidden(timeout=15000)


async def test_a_callers_name_is_shown_as_text_never_run(redis_server: str, browser: Browser) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        room = (await create_room(stack.redis, "Names")).room
        evil = "<img src=x onerror=alert(1)>"
        pid = await stack.queue.join(room.id, number="+15550104821", name=evil, call_sid="CA" + "4" * 32)
        await stack.queue.raise_hand(room.id, pid, source="web")
        w = await open_signed_in(browser, stack.served.base_url, f"/host/rooms/{room.id}")
        page = w.page
        dialogs = accept_dialogs(page)
        await expect(hands(page).filter(has_text=evil)).to_have_count(1)
        await expect(row(page, evil)).to_have_count(1)
        assert await page.locator("#live img").count() == 0
        # And when it arrives live.
        other = await stack.queue.join(room.id, number="+15550107777", name="<script>alert(2)</script>",
                                       call_sid="CA" + "5" * 32)
        await stack.queue.raise_hand(room.id, other, source="keypad")
        await expect(hands(page).filter(has_text="<script>alert(2)</script>")).to_have_count(1, timeout=LIVE)
        assert dialogs == []


async def test_the_n_key_calls_on_the_next_hand_and_a_new_hand_flashes(
        redis_server: str, browser: Browser) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Keys")
        room = created.room
        await stack.join(created.host_code, "+15550100000", host=True)
        a_sid, a_pid = await stack.join(room.access_code, "+15550104821")
        w = await open_signed_in(browser, stack.served.base_url, f"/host/rooms/{room.id}")
        page = w.page
        toggle = page.get_by_label("Alert on a new hand (tone and flash)")
        await expect(toggle).to_be_checked()
        stack.sim.press(a_sid, "*1")
        await expect(hands(page)).to_have_count(1, timeout=LIVE)
        await expect(page.locator(f"#hand-{a_pid}")).to_have_class("hand flash")
        await page.keyboard.press("n")
        await until(lambda: not muted(stack, a_sid))
        await expect(page.get_by_role("region", name="Speaking now")).to_contain_text("Caller 4821")
        # Switched off, the choice survives a reload.
        await toggle.uncheck()
        await page.reload()
        await expect(page.get_by_label("Alert on a new hand (tone and flash)")).not_to_be_checked()
        assert not w.problems, w.problems


@pytest.mark.parametrize("viewport", [PHONE, LAPTOP], ids=["phone", "laptop"])
async def test_layout_fits_a_phone_and_a_laptop(redis_server: str, browser: Browser,
                                                viewport: dict[str, int]) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        room = (await create_room(stack.redis, "Tuesday planning call")).room
        names = ["Ada Lovelace", None, "Grace Hopper", None, "Katherine Johnson"]
        pids = []
        for i, name in enumerate(names):
            pids.append(await stack.queue.join(room.id, number=f"+1555010{4821 + i * 1111:04d}", name=name,
                                               call_sid=f"CA{i:032d}"))
        for pid in pids[1:4]:
            await stack.queue.raise_hand(room.id, pid, source="keypad")
        await stack.redis.hset(f"hr:{{{room.id}}}:p:{pids[2]}", "hand_topic",
                               "The budget for next quarter, and who signs off")
        await stack.queue.call_on(room.id, pids[0])
        w = await open_signed_in(browser, stack.served.base_url, f"/host/rooms/{room.id}", viewport=viewport)
        page = w.page
        await expect(hands(page)).to_have_count(3)
        ARTIFACTS.mkdir(exist_ok=True)
        label = "phone-360x740" if viewport is PHONE else "laptop-1280x800"
        await page.screenshot(path=str(ARTIFACTS / f"dashboard-{label}.png"), full_page=True)
        overflow = await page.evaluate(OVERFLOW)
        assert overflow <= 0, f"horizontal scroll of {overflow}px at {viewport}"
        await page.goto("/host")
        await page.screenshot(path=str(ARTIFACTS / f"rooms-{label}.png"), full_page=True)
        overflow = await page.evaluate(OVERFLOW)
        assert overflow <= 0
        assert not w.problems, w.problems
