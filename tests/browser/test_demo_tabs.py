"""The newcomer's meeting: the dashboard in one tab, the demo's Phones page in another."""

from __future__ import annotations

import pytest
from browserkit import ARTIFACTS
from playwright.async_api import Browser, expect
from test_demo_phones import PASSWORD, demo

from handraise.store import Redis

pytestmark = [pytest.mark.filterwarnings("ignore:.*(BasicAuth|auth' parameter).*:DeprecationWarning")]


async def test_a_newcomer_runs_a_meeting_from_two_tabs(redis: Redis, browser: Browser) -> None:
    async with demo(redis) as d:
        context = await browser.new_context(base_url=d.served.base_url)
        dashboard = await context.new_page()
        await dashboard.goto(f"/host/rooms/{d.room}")
        await dashboard.get_by_label("Password").fill(PASSWORD)
        await dashboard.get_by_role("button", name="Sign in").click()
        queue = dashboard.get_by_role("region", name="Hand queue")
        await expect(queue).to_contain_text("No hands raised.")

        phones = await context.new_page()
        await phones.goto("/demo/phones")
        number = await phones.get_by_label("Phone number").input_value()
        await phones.get_by_role("button", name="Dial in").click()
        card = phones.get_by_role("region", name=f"Phone {number}")
        await expect(card).to_contain_text("You will join muted.", timeout=10_000)
        await card.get_by_role("button", name="Press *1 (raise)").click()

        hand = queue.get_by_role("listitem")
        await expect(hand).to_have_count(1, timeout=10_000)
        await expect(hand).to_contain_text(f"Caller {number[-4:]}")
        await dashboard.get_by_role("button", name="Call on next").click()
        await expect(dashboard.get_by_role("region", name="Speaking now")).to_contain_text(
            f"Caller {number[-4:]}", timeout=10_000)
        await expect(card).to_contain_text("You are live. Go ahead.", timeout=10_000)
        assert d.sim.state(d.sid_of(number))["conference"]["muted"] is False
        ARTIFACTS.mkdir(exist_ok=True)
        await phones.screenshot(path=str(ARTIFACTS / "demo-phones-laptop-1280x720.png"), full_page=True)
