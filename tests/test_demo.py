"""`handraise demo`, as the README tells a newcomer to run it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from handraise.store import free_port


@pytest.mark.slow
def test_the_demo_shows_a_hand_raised_from_a_simulated_phone_and_stops_on_ctrl_c(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "HANDRAISE_DATA_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    env.pop("HANDRAISE_REDIS_URL", None)
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
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest
    assert "Traceback" not in "".join(seen) + rest
    assert not (tmp_path / "redis.sock").exists()  # the embedded Redis stopped with it
