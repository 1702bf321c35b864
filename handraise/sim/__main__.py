"""``python -m handraise.sim``: run the Twilio emulator against any TwiML app."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from handraise.sim.engine import SimConfig
from handraise.sim.server import Simulator


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m handraise.sim",
        description="Local Twilio emulator: calls your voice URL with signed webhooks, runs "
                    "the TwiML, keeps conferences, streams media and serves the REST API.")
    parser.add_argument("--voice-url", required=True,
                        help="the app's voice webhook, e.g. http://127.0.0.1:5000/voice/incoming")
    parser.add_argument("--auth-token", required=True,
                        help="token used to sign webhooks and to check REST Basic auth")
    parser.add_argument("--account-sid", required=True, help="AC… account SID")
    parser.add_argument("--port", type=int, default=0, help="port to serve on (default: free)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--voice-method", default="POST", choices=["POST", "GET"])
    parser.add_argument("--keypad-tones-in-stream", default="yes", choices=["yes", "no"],
                        help="put the caller's keypad tones into streamed audio (TWILIO.md §2.2)")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="multiply Say/Play/Pause durations (0 = instantaneous)")
    parser.add_argument("--seed", type=int, default=None, help="seed for noise and tone jitter")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if not args.account_sid.startswith("AC"):
        parser.error("--account-sid must start with AC")
    return args


async def run(args: argparse.Namespace) -> None:
    config = SimConfig(
        voice_url=args.voice_url, account_sid=args.account_sid, auth_token=args.auth_token,
        voice_method=args.voice_method, host=args.host, port=args.port,
        keypad_tones_in_stream=args.keypad_tones_in_stream == "yes",
        media_time_scale=args.time_scale, seed=args.seed)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with Simulator(config) as sim:
        base = sim.base_url
        print(f"handraise sim listening on {base}", flush=True)
        print(f"  Twilio REST:  {base}/2010-04-01/Accounts/{args.account_sid}/…", flush=True)
        print(f"  place a call: curl -X POST {base}/sim/calls -d from=+15550100001", flush=True)
        print(f"  press keys:   curl -X POST {base}/sim/calls/CA…/digits -d digits=*1",
              flush=True)
        print(f"  events (SSE): curl -N {base}/sim/events/stream", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
