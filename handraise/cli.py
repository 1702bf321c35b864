"""The ``handraise`` command: serve, demo, rooms, tokens, hooks."""

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

#: The one place the server is chosen: hypercorn for HTTP, our own reader (C, polled at the
#: detection tick, on uvloop) for the media-stream WebSocket, on one port (see
#: handraise/phone/fastmedia.py for the figures).
ASGI_SERVER = "hypercorn+wsread"


def _settings(required: tuple[str, ...] = ()) -> Settings:
    return Settings.from_env(required=required)


# --- rooms --------------------------------------------------------------------------------

def _fmt_wait(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _set_pairs(pairs: list[str] | None) -> dict[str, str]:
    """``--set NAME=VALUE`` options as a dict; a malformed one is a clear error."""
    from .errors import Invalid

    out: dict[str, str] = {}
    for pair in pairs or []:
        name, eq, value = pair.partition("=")
        if not eq or not name.strip():
            raise Invalid(f"--set needs NAME=VALUE, such as --set keypad_mode=star (got {pair!r}).")
        out[name.strip().replace("-", "_")] = value
    return out


def _print_settings(room: Any) -> None:
    from .rooms import ROOM_SETTINGS

    for s in ROOM_SETTINGS:
        value = getattr(room, s.name)
        shown = ("yes" if value else "no") if s.kind == "bool" else \
            ("off" if s.kind == "seconds" and not value else str(value))
        print(f"    {s.name:<20} {shown}")


async def _rooms_create(settings: Settings, args: argparse.Namespace) -> int:
    from .rooms import create_room

    chosen: dict[str, Any] = {"keypad_mode": args.keypad_mode}
    if args.keep_running_after_host:
        chosen["end_on_host_exit"] = False
    if args.announce_web_raises:
        chosen["announce_web"] = True
    chosen.update(_set_pairs(args.set))
    async with connect(settings) as redis:
        created = await create_room(redis, args.name, maxlen=settings.events_maxlen, **chosen)
    room = created.room
    if args.json:
        print(json.dumps({**room.to_dict(), "host_code": created.host_code}, indent=2))
    else:
        print(f"Room {room.id} created: {room.name}")
        print(f"  participant access code: {room.access_code}")
        print(f"  host code:               {created.host_code}   (shown only now; keep it)")
        print("  settings:")
        _print_settings(room)
    return 0


async def _rooms_update(settings: Settings, args: argparse.Namespace) -> int:
    from .rooms import get_room, update_room

    changes = _set_pairs(args.set)
    if args.name is None and not changes:
        print("handraise: nothing to change; give --name or --set NAME=VALUE "
              "(`handraise rooms settings` lists them)", file=sys.stderr)
        return 2
    async with connect(settings) as redis:
        changed = await update_room(redis, args.room, name=args.name, maxlen=settings.events_maxlen,
                                    **changes)
        room = await get_room(redis, args.room)
    if args.json:
        print(json.dumps(room.to_dict(), indent=2))
    else:
        print(f"Room {room.id} {'updated' if changed else 'unchanged'}: {room.name}")
        _print_settings(room)
    return 0


async def _rooms_settings(settings: Settings, args: argparse.Namespace) -> int:
    from .rooms import ROOM_SETTINGS

    for s in ROOM_SETTINGS:
        if s.kind == "choice":
            values = " | ".join(s.choices)
        elif s.kind == "bool":
            values = "yes | no"
        elif s.kind == "seconds":
            values = f"0 (off) .. {s.maximum} seconds"
        else:
            values = "a key, optionally after * or #"
        default = ("yes" if s.default else "no") if s.kind == "bool" else s.default
        print(f"{s.name}  ({values}; default {default})")
        print(f"    {s.label}. {s.help}")
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
                 "raised_at": h.raised_at, "wait_s": h.wait_s, "source": h.source,
                 "kind": h.kind, "reply_to": h.reply_to}
                for h in state.queue
            ],
            "speaker": state.speaker,
            "last_event_id": state.last_event_id,
            "keypad_check": [asdict(c) for c in checks],
        }, indent=2))
        return 0
    print(f"{room.name}  ({room.id}, {room.status})")
    print(f"  access code {room.access_code}")
    print("  settings:")
    _print_settings(room)
    print(f"  host keys on the phone: {room.host_call_next_keys} calls on next, "
          f"{room.host_done_keys} done, {room.host_queue_keys} hears the queue, "
          f"{room.host_lower_all_keys} lowers all, {room.host_mute_all_keys} mutes all")
    speaker = people.get(state.speaker) if state.speaker else None
    print(f"  speaker: {speaker.display_name if speaker else '(nobody)'}")
    print(f"  hands ({len(state.queue)}):")
    for h in state.queue:
        p = people.get(h.participant)
        name = p.display_name if p else h.participant
        to = people.get(h.reply_to) if h.reply_to else None
        reply = f"  reply to {to.display_name if to else h.reply_to}" if h.kind == "reply" else ""
        print(f"    {h.position:>3}. {name:<28} waiting {_fmt_wait(h.wait_s):>7}  via {h.source}{reply}")
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


# --- tokens and hooks ---------------------------------------------------------------------

def _when(ms: int | None) -> str:
    from .hooks import rfc3339

    return rfc3339(ms) if ms else "never"


async def _tokens_create(settings: Settings, args: argparse.Namespace) -> int:
    from .tokens import create_token

    async with connect(settings) as redis:
        secret, token = await create_token(redis, args.name, room=args.room, rate_per_min=args.rate)
    if args.json:
        print(json.dumps({**token.to_dict(), "token": secret}, indent=2))
        return 0
    scope = f" (room {token.room} only)" if token.room else ""
    print(f"Token {token.id} created: {token.name}{scope}")
    print(f"  {secret}")
    print("  Shown only now: keep it (only its hash is stored). Send it as:")
    print(f"  Authorization: Bearer {secret}")
    return 0


async def _tokens_list(settings: Settings, args: argparse.Namespace) -> int:
    from .tokens import list_tokens

    async with connect(settings) as redis:
        tokens = await list_tokens(redis)
    if args.json:
        print(json.dumps([t.to_dict() for t in tokens], indent=2))
        return 0
    if not tokens:
        print("No tokens yet. Create one with: handraise tokens create --name NAME [--room ROOM]")
        return 0
    print(f"{'TOKEN':<10} {'ROOM':<13} {'RATE/MIN':>8}  {'LAST USED':<24} NAME")
    for t in tokens:
        print(f"{t.id:<10} {t.room or '(all)':<13} {t.rate_per_min:>8}  {_when(t.last_used_at):<24} {t.name}")
    return 0


async def _tokens_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from .tokens import revoke_token

    async with connect(settings) as redis:
        token = await revoke_token(redis, args.token)
    print(f"Token {token.id} ({token.name}) revoked: it stops working now.")
    return 0


async def _hooks_add(settings: Settings, args: argparse.Namespace) -> int:
    from .hooks import add_hook, check_events

    async with connect(settings) as redis:
        hook = await add_hook(redis, args.url, room=args.room, events=check_events(args.events or []))
    if args.json:
        print(json.dumps({**hook.to_dict(), "secret": hook.secret}, indent=2))
        return 0
    print(f"Hook {hook.id} added: {hook.url}")
    print(f"  room: {hook.room or '(all rooms)'}; events: {','.join(hook.events) or '(all)'}")
    print(f"  signing secret: {hook.secret}   (shown only now; the receiver checks")
    print("  the Handraise-Signature header with it: see the README)")
    return 0


async def _hooks_list(settings: Settings, args: argparse.Namespace) -> int:
    from .hooks import list_hooks, pending

    async with connect(settings) as redis:
        hooks = await list_hooks(redis)
        waiting = {h.id: await pending(redis, h.id) for h in hooks}
    if args.json:
        print(json.dumps([{**h.to_dict(), "pending": waiting[h.id]} for h in hooks], indent=2))
        return 0
    if not hooks:
        print("No hooks yet. Add one with: handraise hooks add URL [--room ROOM] [--events ...]")
        return 0
    from .hooks import describe_status

    for h in hooks:
        print(f"{h.id}  {h.url}")
        print(f"    room: {h.room or '(all rooms)'}; events: {','.join(h.events) or '(all)'}; "
              f"pending: {waiting[h.id]}; delivered: {h.status.get('delivered', '0')}; "
              f"dropped: {h.status.get('dropped', '0')}")
        print(f"    last delivery: {describe_status(h.status)}")
    return 0


async def _hooks_remove(settings: Settings, args: argparse.Namespace) -> int:
    from .hooks import remove_hook

    async with connect(settings) as redis:
        hook = await remove_hook(redis, args.hook)
    print(f"Hook {hook.id} removed ({hook.url}); its pending deliveries are dropped.")
    return 0


# --- serve / demo ------------------------------------------------------------------------

def serve(settings: Settings, host: str, port: int, workers: int) -> int:
    """Run the app until SIGINT/SIGTERM: hypercorn for HTTP, our C reader for media streams.

    One port serves both (:mod:`handraise.phone.fastmedia` sorts connections by their
    request line); ``workers`` processes share it through ``SO_REUSEPORT``.
    """
    if ASGI_SERVER != "hypercorn+wsread":  # pragma: no cover - the single switch point
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

    p_rooms = sub.add_parser("rooms", help="create, list, show, update and close rooms")
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
    p_create.add_argument("--set", action="append", metavar="NAME=VALUE",
                          help="any room setting, repeatable (`handraise rooms settings` lists them)")
    p_create.add_argument("--json", action="store_true")
    p_update = rsub.add_parser("update", help="rename a room or change its settings")
    p_update.add_argument("room")
    p_update.add_argument("--name")
    p_update.add_argument("--set", action="append", metavar="NAME=VALUE",
                          help="a room setting, repeatable, e.g. --set keypad_mode=star")
    p_update.add_argument("--json", action="store_true")
    rsub.add_parser("settings", help="the room settings, their values and defaults")
    p_list = rsub.add_parser("list", help="list rooms")
    p_list.add_argument("--all", action="store_true", help="include closed rooms")
    p_list.add_argument("--json", action="store_true")
    p_show = rsub.add_parser("show", help="participants, hand queue and speaker of a room")
    p_show.add_argument("room")
    p_show.add_argument("--json", action="store_true")
    p_close = rsub.add_parser("close", help="close a room: its codes stop working")
    p_close.add_argument("room")

    p_tokens = sub.add_parser("tokens", help="create, list and revoke JSON API tokens")
    tsub = p_tokens.add_subparsers(dest="tokens_command", required=True)
    p_tcreate = tsub.add_parser("create", help="create a bearer token and print it (once)")
    p_tcreate.add_argument("--name", required=True, help="who or what uses it, e.g. chat-bridge")
    p_tcreate.add_argument("--room", help="limit the token to this room")
    p_tcreate.add_argument("--rate", type=int, default=600, help="requests per minute (default 600)")
    p_tcreate.add_argument("--json", action="store_true")
    p_tlist = tsub.add_parser("list", help="list tokens (never the secrets)")
    p_tlist.add_argument("--json", action="store_true")
    p_trevoke = tsub.add_parser("revoke", help="revoke a token: it stops working at once")
    p_trevoke.add_argument("token", help="the token's id (or its name)")

    p_hooks = sub.add_parser("hooks", help="add, list and remove outbound event receivers (webhooks)")
    hsub = p_hooks.add_subparsers(dest="hooks_command", required=True)
    p_hadd = hsub.add_parser("add", help="POST each room event, signed, to URL")
    p_hadd.add_argument("url")
    p_hadd.add_argument("--room", help="only this room's events")
    p_hadd.add_argument("--events", nargs="+", metavar="TYPE",
                        help="only these event types, e.g. hand_raised hand_lowered speaker_called")
    p_hadd.add_argument("--json", action="store_true")
    p_hlist = hsub.add_parser("list", help="hooks with their last delivery and what is pending")
    p_hlist.add_argument("--json", action="store_true")
    p_hremove = hsub.add_parser("remove", help="stop sending to a hook")
    p_hremove.add_argument("hook")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(
            ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "HANDRAISE_PUBLIC_URL",
             "HANDRAISE_SECRET_KEY", "HANDRAISE_HOST_PASSWORD")
            if args.command == "serve" else ()
        )
        quiet = args.command in {"rooms", "tokens", "hooks"} and "HANDRAISE_LOG_LEVEL" not in os.environ
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
        handlers: dict[tuple[str, str], Callable[[Settings, argparse.Namespace],
                                                  Coroutine[Any, Any, int]]] = {
            ("rooms", "create"): _rooms_create, ("rooms", "list"): _rooms_list,
            ("rooms", "show"): _rooms_show, ("rooms", "close"): _rooms_close,
            ("rooms", "update"): _rooms_update, ("rooms", "settings"): _rooms_settings,
            ("tokens", "create"): _tokens_create, ("tokens", "list"): _tokens_list,
            ("tokens", "revoke"): _tokens_revoke,
            ("hooks", "add"): _hooks_add, ("hooks", "list"): _hooks_list,
            ("hooks", "remove"): _hooks_remove,
        }
        subcommand = getattr(args, f"{args.command}_command")
        handler = handlers[(args.command, subcommand)]
        started = time.monotonic()
        code = asyncio.run(handler(settings, args))
        log.debug("%s %s took %.2fs", args.command, subcommand, time.monotonic() - started)
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
