"""``handraise serve`` in a child process for the benchmarks, the way an operator runs it.

Shared by bench/webhooks.py, bench/media.py and bench/dashboard.py: the settings serve
needs, a wait until /healthz answers, and a clean stop.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
TOKEN = "benchToken0123456789abcdef012345"
PASSWORD = "bench host password"


@contextlib.contextmanager
def serve(redis_url: str, port: int, *, workers: int = 1, prefix: Sequence[str] = (),
          env: dict[str, str] | None = None, log_path: Path | None = None,
          timeout: float = 30.0) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """(public URL, process) of ``handraise serve`` on ``port``; ``prefix`` runs it under
    another command (``taskset -c 0``); ``env`` adds or overrides settings."""
    public = f"http://127.0.0.1:{port}"
    full_env = os.environ | {
        "HANDRAISE_PUBLIC_URL": public, "HANDRAISE_REDIS_URL": redis_url,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": TOKEN,
        # Nothing listens here: any REST call (an announcement) fails at once.
        "HANDRAISE_TWILIO_API_URL": "http://127.0.0.1:9",
        "HANDRAISE_SECRET_KEY": "bench-secret-key-0123456789", "HANDRAISE_HOST_PASSWORD": PASSWORD,
        "HANDRAISE_RECONCILE_INTERVAL": "3600", "HANDRAISE_LOG_LEVEL": "WARNING",
    } | (env or {})
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115 - closed below
    # Its own session: a Ctrl-C reaches the bench, which then stops the server itself.
    proc = subprocess.Popen([*prefix, sys.executable, "-m", "handraise.cli", "serve", "--host",
                             "127.0.0.1", "--port", str(port), "--workers", str(workers)],
                            env=full_env, stdout=out, stderr=subprocess.STDOUT if log_path else None,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                httpx.get(public + "/healthz", timeout=1.0, trust_env=False)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    said = log_path.read_text(errors="replace")[-2000:] if log_path else ""
                    raise SystemExit("handraise serve did not start\n" + said) from None
                time.sleep(0.05)  # waiting for a process to listen; nothing to wait on
        yield public, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log_path and out is not subprocess.DEVNULL:
            out.close()  # type: ignore[union-attr]
