"""`handraise demo`, as the README tells a newcomer to run it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from handraise.store import free_port


def printed(lines: list[str], label: str) -> str:
    """The value the demo printed after ``label:`` (the sign-in block)."""
    found = [m.group(1) for line in lines if (m := re.match(rf"\s*{label}:\s+(\S+)", line))]
    assert found, f"the demo printed no {label!r} line:\n" + "".join(lines)
    return found[0]


@pytest.mark.slow
def test_the_demo_shows_a_hand_raised_from_a_simulated_phone_and_stops_on_ctrl_c(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "HANDRAISE_DATA_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    env.pop("HANDRAISE_REDIS_URL", None)
    env.pop("HANDRAISE_HOST_PASSWORD", None)  # the demo's own then
    proc = subprocess.Popen(
        [sys.executable, "-m", "handraise.cli", "demo", "--port", str(free_port())],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        for line in proc.stdout:  # blocks on the demo's own output, line by line
            seen.append(line)
            if "[hand.raised]" in line or time.monotonic() > deadline:
                break
        assert any("[hand.raised]" in line and "source=prompt" in line for line in seen), "".join(seen)
        assert any("participant access code" in line for line in seen)

        # What the README tells the newcomer: sign in with the printed password, open the
        # printed dashboard, see the simulated caller's hand; the Phones page has their phone.
        login, password = printed(seen, "Sign in"), printed(seen, "Password")
        dashboard, phones = printed(seen, "Dashboard"), printed(seen, "Phones")
        assert password == "handraise-demo"
        with httpx.Client(trust_env=False, timeout=10) as browser:
            signed = browser.post(login, data={"password": password})
            assert signed.status_code == 303, signed.text
            page = browser.get(dashboard)
            assert page.status_code == 200
            queue = re.search(r'<section id="queue".*?</section>', page.text, re.S)
            assert queue and "Caller 4821" in queue.group(0), page.text
            phone_page = browser.get(phones)
            assert phone_page.status_code == 200 and "Phone +15550104821" in phone_page.text
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest
    assert "Traceback" not in "".join(seen) + rest
    assert not (tmp_path / "redis.sock").exists()  # the embedded Redis stopped with it
