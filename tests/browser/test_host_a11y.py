"""The sign-in, rooms and dashboard pages as a person uses them: forms, keyboard, axe-core."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from browserkit import ARTIFACTS, LAPTOP, PHONE, open_signed_in
from phonekit import HOST_PASSWORD, phone_stack
from playwright.async_api import Browser, Page, expect

from handraise.rooms import create_room, get_room, list_rooms

AXE = Path(__file__).resolve().parent.parent.parent / "node_modules" / "axe-core" / "axe.min.js"
OVERFLOW = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
CONTRACT_BUTTONS = {"Call on next", "Lower all hands", "Mute all", "End meeting", "Call on", "Lower hand",
                    "Done", "Mute", "Unmute", "Prompt", "Remove", "Rename"}


async def serious_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical findings on the page as it is now."""
    if not AXE.exists():
        pytest.skip("axe-core is not installed (npm ci; ./dev setup does it)")
    await page.add_script_tag(path=str(AXE))
    result = await page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [{"id": v["id"], "impact": v["impact"], "nodes": [n["html"] for n in v["nodes"]][:3]}
            for v in result["violations"] if v["impact"] in {"serious", "critical"}]


async def test_sign_in_says_wrong_password_then_lets_the_host_in(redis_server: str, browser: Browser) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        context = await browser.new_context(base_url=stack.served.base_url, bypass_csp=True)
        page = await context.new_page()
        await page.goto("/host")
        await expect(page).to_have_url(f"{stack.served.base_url}/host/login?next=/host")
        assert await serious_violations(page) == []
        await page.get_by_label("Password").fill("not the password")
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("alert")).to_have_text("Wrong password.")
        await page.get_by_label("Password").fill(HOST_PASSWORD)
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("heading", name="Rooms", exact=True)).to_be_visible()
        await page.get_by_role("button", name="Sign out").click()
        await expect(page.get_by_role("button", name="Sign in")).to_be_visible()


async def test_a_host_creates_a_room_sees_its_codes_once_and_closes_it(
        redis_server: str, browser: Browser) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        w = await open_signed_in(browser, stack.served.base_url, "/host", bypass_csp=True)
        page = w.page
        await expect(page.get_by_text("No open rooms yet.")).to_be_visible()
        await page.get_by_label("Name").fill("Board meeting")
        await page.get_by_label("Keypad mode").select_option("star")
        await page.get_by_role("button", name="Create room").click()
        created = page.get_by_role("region", name="“Board meeting” is ready")
        await expect(created).to_contain_text("Host code")
        [room] = await list_rooms(stack.redis)
        assert room.name == "Board meeting" and room.keypad_mode == "star"
        await expect(created).to_contain_text(room.access_code)
        assert await serious_violations(page) == []
        rooms = page.get_by_role("region", name="Open rooms")
        listed = rooms.get_by_role("row").filter(has_text="Board meeting")
        await expect(listed).to_contain_text(room.access_code)
        await listed.get_by_role("button", name="Close room").click()
        await expect(page.get_by_role("heading", name="Close Board meeting?")).to_be_visible()
        await page.get_by_role("button", name="Close room").click()
        await expect(page.get_by_text("No open rooms yet.")).to_be_visible()
        assert await list_rooms(stack.redis) == []
        assert not w.problems, w.problems


async def test_the_dashboard_has_no_serious_axe_finding_and_every_control_is_reachable_by_keyboard(
        redis_server: str, browser: Browser) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Keyboard only")
        room = created.room
        await stack.join(created.host_code, "+15550100000", host=True)
        _, a = await stack.join(room.access_code, "+15550104821")
        _, b = await stack.join(room.access_code, "+15550107777")
        _, _c = await stack.join(room.access_code, "+15550103333")
        await stack.queue.raise_hand(room.id, b, source="keypad")
        await stack.queue.call_on(room.id, a)
        await stack.queue.update(room.id, a, muted=False)
        w = await open_signed_in(browser, stack.served.base_url, f"/host/rooms/{room.id}", bypass_csp=True)
        page = w.page
        for name in ("Speaking now", "Hand queue", "Participants"):
            await expect(page.get_by_role("region", name=name)).to_be_visible()
        await expect(page.get_by_role("region", name="Hand queue").get_by_role("list")).to_have_count(1)
        await expect(page.get_by_role("region", name="Participants").get_by_role("table")).to_have_count(1)
        assert await page.get_by_role("status").count() == 1
        violations = await serious_violations(page)
        assert violations == [], json.dumps(violations, indent=1)

        # Tab through the page as a keyboard user; open each "Rename" disclosure on the way.
        seen: set[str] = set()
        for _ in range(150):
            await page.keyboard.press("Tab")
            focused = await page.evaluate("""() => {
                const e = document.activeElement;
                const visible = e && e.matches(':focus-visible');
                return e ? {tag: e.tagName, text: (e.innerText || '').trim(), visible} : null; }""")
            if focused is None or focused["tag"] == "BODY":
                continue  # wrapped around past the end of the page
            assert focused["visible"], f"focus on {focused} is not visible"
            if focused["tag"] == "BUTTON":
                seen.add(focused["text"])
            if focused["tag"] == "SUMMARY" and "Rename" in focused["text"] and "Rename" not in seen:
                await page.keyboard.press("Enter")
        missing = CONTRACT_BUTTONS - seen
        assert not missing, f"not reachable by keyboard: {missing}"
        assert not w.problems, w.problems


@pytest.mark.parametrize("viewport", [PHONE, LAPTOP], ids=["phone", "laptop"])
async def test_the_host_changes_room_settings_from_the_dashboard(
        redis_server: str, browser: Browser, viewport: dict[str, int]) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        room = (await create_room(stack.redis, "Settings")).room
        w = await open_signed_in(browser, stack.served.base_url, f"/host/rooms/{room.id}", viewport=viewport,
                                 bypass_csp=True)
        page = w.page
        await page.get_by_text("Room settings").click()
        await page.get_by_label("Keypad mode").select_option("star")
        await page.get_by_label("Confirm web raises on the phone").check()
        await page.get_by_role("button", name="Save settings").click()
        await expect(page.locator("#settings-outcome")).to_have_text("Settings saved.")
        saved = await get_room(stack.redis, room.id)
        assert (saved.keypad_mode, saved.announce_web) == ("star", True)
        await expect(page.get_by_label("Keypad mode")).to_have_value("star")

        await page.get_by_label("Lower keys").fill("*1")
        await page.get_by_role("button", name="Save settings").click()
        outcome = page.locator("#settings-outcome")
        await expect(outcome).to_have_text("lower_keys and raise_keys cannot both be *1.")
        assert (await get_room(stack.redis, room.id)).lower_keys == "*2"
        ARTIFACTS.mkdir(exist_ok=True)
        label = "phone-360x740" if viewport is PHONE else "laptop-1280x800"
        await page.screenshot(path=str(ARTIFACTS / f"settings-{label}.png"), full_page=True)
        assert await page.evaluate(OVERFLOW) <= 0
        violations = await serious_violations(page)
        assert violations == [], json.dumps(violations, indent=1)
        assert not w.problems, w.problems
