"""Consent to speak and the speaking limit in headless Chromium: the companion page's
"Go live" / "Stay muted", the dashboard's invitation line and "over time"."""

from __future__ import annotations

from typing import Any

import pytest
from browserkit import ARTIFACTS, LAPTOP, PHONE, open_signed_in
from phonekit import Stack, phone_stack, until
from playwright.async_api import Browser, BrowserContext, Page, expect
from test_companion import heard_pin, link
from test_dashboard import OVERFLOW
from test_host_a11y import serious_violations

from handraise.rooms import create_room

pytestmark = [pytest.mark.filterwarnings("ignore:.*(BasicAuth|auth' parameter).*:DeprecationWarning"),
              pytest.mark.slow]

LIVE = 5000
#: Short floor timers: the test cannot wait the real 15 s.
FAST: dict[str, Any] = {"invite_timeout_s": 1.5, "speak_warn_s": 1.0, "speak_grace_s": 1.0,
                        "timer_interval_s": 0.05}


def _muted(stack: Stack, sid: str) -> bool:
    return bool(stack.sim.state(sid)["conference"]["muted"])


async def _companion(browser: Browser, stack: Stack, sid: str,
                     viewport: dict[str, int] = PHONE) -> tuple[BrowserContext, Page]:
    # CSP bypassed only so that axe can inject its script (as in test_companion.py).
    context = await browser.new_context(base_url=stack.served.base_url, viewport=viewport,  # type: ignore[arg-type]
                                        bypass_csp=True)
    return context, await link(context, heard_pin(stack, sid))


async def test_go_live_and_stay_muted_on_the_companion_page(redis_server: str, browser: Browser) -> None:
    async with phone_stack(redis_server) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Consent hall", unmute="consent")
        room = created.room
        await stack.join(created.host_code, "+15550100000", host=True)
        sid, pid = await stack.join(room.access_code, "+15550104821")
        _, page = await _companion(browser, stack, sid)
        host = await open_signed_in(browser, stack.served.base_url, f"/host/rooms/{room.id}")
        speaking = host.page.get_by_role("region", name="Speaking now")

        await page.get_by_role("button", name="Raise hand").click()
        await expect(host.page.get_by_role("button", name="Call on next")).to_be_enabled(timeout=LIVE)
        await host.page.get_by_role("button", name="Call on next").click()
        await expect(host.page.get_by_role("status")).to_contain_text(
            "Invited Caller 4821; waiting for their answer.", timeout=LIVE)
        await expect(speaking).to_contain_text("Invited: Caller 4821 — waiting for their answer (",
                                               timeout=LIVE)
        status = page.get_by_role("status")
        await expect(status).to_contain_text("The host invites you to speak", timeout=LIVE)
        await expect(page.get_by_role("button", name="Stay muted")).to_be_visible()
        assert _muted(stack, sid)
        assert await serious_violations(page) == []
        await page.screenshot(path=str(ARTIFACTS / "companion-invited-phone-360x740.png"),
                              full_page=True)
        assert await page.evaluate(OVERFLOW) <= 0

        await page.get_by_role("button", name="Go live").click()
        await until(lambda: not _muted(stack, sid))  # Twilio's view: their voice is on
        await expect(status).to_contain_text("You are live", timeout=LIVE)
        await expect(page.get_by_role("button", name="Go live")).to_have_count(0)
        await expect(speaking).to_contain_text("Caller 4821 accepted the invitation.", timeout=LIVE)
        assert await stack.queue.speaker(room.id) == pid

        # Done, raise again, invited again: this time "Stay muted".
        await host.page.get_by_role("button", name="Done").click()
        await until(lambda: _muted(stack, sid))
        await page.get_by_role("button", name="Raise hand").click()
        await expect(host.page.get_by_role("button", name="Call on next")).to_be_enabled(timeout=LIVE)
        await host.page.get_by_role("button", name="Call on next").click()
        await page.get_by_role("button", name="Stay muted").click(timeout=LIVE)
        await expect(speaking).to_contain_text("Caller 4821 declined the invitation.", timeout=LIVE)
        await expect(status).to_contain_text("Your hand is down.", timeout=LIVE)
        assert _muted(stack, sid) and await stack.queue.speaker(room.id) is None
        assert not host.problems, host.problems


@pytest.mark.parametrize("viewport", [PHONE, LAPTOP], ids=["phone", "laptop"])
async def test_invitation_and_over_time_fit_a_phone_and_a_laptop(
        redis_server: str, browser: Browser, viewport: dict[str, int]) -> None:
    async with phone_stack(redis_server, app_settings=FAST) as stack:
        await stack.redis.flushall()
        created = await create_room(stack.redis, "Tuesday planning call", unmute="consent",
                                    speak_limit_s=1)
        room = created.room
        await stack.join(created.host_code, "+15550100000", host=True)
        a, a_pid = await stack.join(room.access_code, "+15550104821")
        b, b_pid = await stack.join(room.access_code, "+15550105932")
        await stack.host.rename(room.id, b_pid, "Katherine Johnson-Goble, Flight Dynamics")
        _, page = await _companion(browser, stack, a, viewport)
        w = await open_signed_in(browser, stack.served.base_url, f"/host/rooms/{room.id}",
                                 viewport=viewport)
        speaking = w.page.get_by_role("region", name="Speaking now")
        label = "phone-360x740" if viewport is PHONE else "laptop-1280x800"

        # Over time: the speaker's page and the dashboard say so at the limit.
        assert (await stack.host.call_on(room.id, a_pid)).ok
        await page.get_by_role("button", name="Go live").click(timeout=LIVE)
        await expect(speaking.get_by_text("over time")).to_be_visible(timeout=LIVE)
        await expect(page.get_by_text("You are over time.")).to_be_visible(timeout=LIVE)
        # A pending invitation of the next speaker shows under the current one.
        assert (await stack.host.call_on(room.id, b_pid)).ok
        await expect(speaking).to_contain_text(
            "Invited: Katherine Johnson-Goble, Flight Dynamics — waiting for their answer",
            timeout=LIVE)
        ARTIFACTS.mkdir(exist_ok=True)
        await w.page.screenshot(path=str(ARTIFACTS / f"dashboard-floor-{label}.png"), full_page=True)
        assert await w.page.evaluate(OVERFLOW) <= 0
        await page.screenshot(path=str(ARTIFACTS / f"companion-over-time-{label}.png"), full_page=True)
        assert await page.evaluate(OVERFLOW) <= 0
        # The new settings in the dashboard's form (made from ROOM_SETTINGS).
        await w.page.get_by_text("Room settings").click()
        await expect(w.page.get_by_label("Unmuting")).to_have_value("consent")
        await expect(w.page.get_by_label("Speaking limit (seconds)")).to_have_value("1")
        await w.page.locator("#settings").screenshot(path=str(ARTIFACTS / f"settings-floor-{label}.png"))
        assert await w.page.evaluate(OVERFLOW) <= 0
        assert not w.problems, w.problems
        assert not _muted(stack, a) and _muted(stack, b)  # no auto-mute here; b is only invited
