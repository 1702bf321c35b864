"""The ``handraise`` command: serve, demo, rooms."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from .config import ConfigError, Settings
from .errors import HandraiseError
from .events import REDIS_ERRORS
from .store import RedisNotFound, connect

log = logging.getLogger("handraise")

#: The one place the server is chosen: hypercorn for HTTP, picows (on uvloop) for the
#: media-stream WebSocket, on one port (see handraise/phone/fastmedia.py for the figures).
ASGI_SERVER = "hypercorn+picows"


def _settings(required: tuple[str, ...] = ()) -> Settings:
    return Settings.from_env(required=required)


# --- rooms --------------------------------------------------------------------------------

def _fmt_wait(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


async def _rooms_create(settings: Settings, args: argparse.Namespace) -> int:
    from .rooms import create_room

    async with connect(settings) as redis:
        created = await create_room(
            redis, args.name, keypad_mode=args.keypad_mode,
            end_on_host_exit=not args.keep_running_after_host, announce_web=args.announce_web_raises,
            maxlen=settings.events_maxlen,
        )
    room = created.room
    if args.json:
        print(json.dumps({**room.to_dict(), "host_code": created.host_code}, indent=2))
    else:
        print(f"Room {room.id} created: {room.name}")
        print(f"  participant access code: {room.access_code}")
        print(f"  host code:               {created.host_code}   (shown only now; keep it)")
        print(f"  keypad mode: {room.keypad_mode}")
    return 0


async def _rooms_list(settings: Settings, args: argparse.Namespace) -> int:
    from .queue import Queue
    from .rooms import list_rooms

    async with connect(settings) as redis:
        rooms = await list_rooms(redis, include_closed=args.all)
        q = Queue(redis)
        states = {r.id: await q.snapshot(r.id) for r in rooms}
    if args.json:
        print(json.dumps([
            {**r.to_dict(), "participants": len(states[r.id].participants),
             "hands": len(states[r.id].queue)} for r in rooms
        ], indent=2))
        return 0
    if not rooms:
        print("No rooms yet. Create one with: handraise rooms create --name NAME")
        return 0
    print(f"{'ROOM':<13} {'CODE':<7} {'STATUS':<7} {'PEOPLE':>6} {'HANDS':>5}  NAME")
    for r in rooms:
        s = states[r.id]
        print(f"{r.id:<13} {r.access_code:<7} {r.status:<7} {len(s.participants):>6} "
              f"{len(s.queue):>5}  {r.name}")
    return 0


async def _rooms_show(settings: Settings, args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .phone.streams import keypad_checks
    from .queue import Queue
    from .rooms import get_room

    async with connect(settings) as redis:
        room = await get_room(redis, args.room)
        state = await Queue(redis).snapshot(room.id)
        checks = await keypad_checks(redis, room.id)
    people = {p.id: p for p in state.participants}
    if args.json:
        print(json.dumps({
            "room": room.to_dict(),
            "participants": [p.to_dict(host_view=True) for p in state.participants],
            "queue": [
                {"participant": h.participant, "position": h.position,
                 "raised_at": h.raised_at, "wait_s": h.wait_s, "source": h.source}
                for h in state.queue
            ],
            "speaker": state.speaker,
            "last_event_id": state.last_event_id,
            "keypad_check": [asdict(c) for c in checks],
        }, indent=2))
        return 0
    print(f"{room.name}  ({room.id}, {room.status})")
    print(f"  access code {room.access_code}, keypad mode {room.keypad_mode}, "
          f"raise {room.raise_keys} / lower {room.lower_keys}")
    speaker = people.get(state.speaker) if state.speaker else None
    print(f"  speaker: {speaker.display_name if speaker else '(nobody)'}")
    print(f"  hands ({len(state.queue)}):")
    for h in state.queue:
        p = people.get(h.participant)
        name = p.display_name if p else h.participant
        print(f"    {h.position:>3}. {name:<28} waiting {_fmt_wait(h.wait_s):>7}  via {h.source}")
    print(f"  participants ({len(state.participants)}):")
    for p in state.participants:
        flags = ", ".join(f for f, on in (("host", p.role == "host"), ("muted", p.muted),
                                          ("on hold", p.hold)) if on)
        print(f"    {p.id}  {p.display_name:<28} {p.number or '':<16} {flags}")
    if checks:
        print("  keypad self-test (stream mode), latest first:")
        for c in checks:
            print(f"    {c.participant}  keypad tones seen in stream: {c.verdict:<3} "
                  f"({c.digits} keys, {c.frames} frames, "
                  f"{'stopped' if c.stopped else 'still streaming'})")
    return 0


async def _rooms_close(settings: Settings, args: argparse.Namespace) -> int:
    from .rooms import close_room

    async with connect(settings) as redis:
        closed = await close_room(redis, args.room, maxlen=settings.events_maxlen)
    print(f"Room {args.room} closed." if closed else f"Room {args.room} was already closed.")
    return 0


# --- serve / demo ------------------------------------------------------------------------

def serve(settings: Settings, host: str, port: int, workers: int) -> int:
    """Run the app until SIGINT/SIGTERM: hypercorn for HTTP, picows for media streams.

    One port serves both (:mod:`handraise.phone.fastmedia` sorts connections by their
    request line); ``workers`` processes share it through ``SO_REUSEPORT``.
    """
    if ASGI_SERVER != "hypercorn+picows":  # pragma: no cover - the single switch point
        raise SystemExit(f"unknown ASGI server {ASGI_SERVER}")
    from .phone.fastmedia import serve_workers

    return serve_workers(settings, host, port, workers)


# --- entry point --------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="handraise", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p_serve = sub.add_parser("serve", help="run the web app and Twilio webhooks")
    p_serve.add_argument("--host", default="127.0.0.1")
    p_serve.add_argument("--port", type=int, default=8000)
    p_serve.add_argument("--workers", type=int, default=1)

    p_demo = sub.add_parser("demo", help="run everything locally with the Twilio emulator")
    p_demo.add_argument("--host", default="127.0.0.1")
    p_demo.add_argument("--port", type=int, default=8000)
    p_demo.add_argument("--no-callers", action="store_true",
                        help="do not act out the opening scene (a host and a caller who presses *1)")

    p_rooms = sub.add_parser("rooms", help="create, list, show and close rooms")
    rsub = p_rooms.add_subparsers(dest="rooms_command", required=True)
    p_create = rsub.add_parser("create", help="create a room and print its codes")
    p_create.add_argument("--name", required=True)
    p_create.add_argument(
        "--keypad-mode", choices=["stream", "star"], default="stream",
        help="stream: tones detected in the forked call audio (needs the media-stream endpoint); "
             "star: * steps the caller out of the conference to read 1 or 2 (works everywhere)",
    )
    p_create.add_argument("--keep-running-after-host", action="store_true",
                          help="do not end the conference when the host hangs up")
    p_create.add_argument("--announce-web-raises", action="store_true",
                          help="confirm on the phone a hand raised from the companion page "
                               "(by default the page alone says so)")
    p_create.add_argument("--json", action="store_true")
    p_list = rsub.add_parser("list", help="list rooms")
    p_list.add_argument("--all", action="store_true", help="include closed rooms")
    p_list.add_argument("--json", action="store_true")
    p_show = rsub.add_parser("show", help="participants, hand queue and speaker of a room")
    p_show.add_argument("room")
    p_show.add_argument("--json", action="store_true")
    p_close = rsub.add_parser("close", help="close a room: its codes stop working")
    p_close.add_argument("room")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(
            ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "HANDRAISE_PUBLIC_URL",
             "HANDRAISE_SECRET_KEY", "HANDRAISE_HOST_PASSWORD")
            if args.command == "serve" else ()
        )
        quiet = args.command == "rooms" and "HANDRAISE_LOG_LEVEL" not in os.environ
        logging.basicConfig(
            level="WARNING" if quiet else settings.log_level,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
        if args.command == "serve":
            return serve(settings, args.host, args.port, args.workers)
        if args.command == "demo":
            from .demo import run_demo

            asyncio.run(run_demo(settings, host=args.host, port=args.port,
                                 callers=not args.no_callers))
            return 0
        handlers: dict[str, Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]] = {
            "create": _rooms_create, "list": _rooms_list, "show": _rooms_show,
            "close": _rooms_close,
        }
        handler = handlers[args.rooms_command]
        started = time.monotonic()
        code = asyncio.run(handler(settings, args))
        log.debug("rooms %s took %.2fs", args.rooms_command, time.monotonic() - started)
        return code
    except ConfigError as exc:
        print(f"handraise: {exc}", file=sys.stderr)
        return 2
    except RedisNotFound as exc:
        print(f"handraise: {exc}", file=sys.stderr)
        return 2
    except REDIS_ERRORS as exc:
        where = settings.redis_url or "the embedded server"
        print(f"handraise: cannot reach Redis at {where} ({exc}); is it running?", file=sys.stderr)
        return 1
    except HandraiseError as exc:
        print(f"handraise: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
