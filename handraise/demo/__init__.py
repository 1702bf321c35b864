"""``handraise demo``: the whole product on one machine, no Twilio account.

Starts the app (with the embedded Redis), the Twilio emulator pointed at the app's voice
URL, and a fresh demo room; mounts the demo-only Phones page (:mod:`.phones`) on the app;
then, while it runs, prints what happens in the room.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import socket
from dataclasses import replace

from quart import Quart

from ..app import create_app, services
from ..config import Settings
from ..errors import HandraiseError
from ..events import Event
from ..rooms import CreatedRoom, close_room, create_room, list_rooms
from ..sim import ServedApp, SimConfig, Simulator
from .phones import mount_phones, set_phones_room

__all__ = ["DEMO_ROOM", "act_out", "banner", "describe", "mount_phones", "port_is_free", "run_demo",
           "set_phones_room"]

DEMO_ROOM = "Demo room"


async def act_out(sim: Simulator, host_code: str, access_code: str) -> None:
    """The scene the demo opens with: the host dials in, then a caller who presses *1."""
    host_call = sim.place_call("+15550100000", "+15550109999")
    await sim.wait_event("gather-start", call_sid=host_call, num_digits=6, timeout=60)
    sim.press(host_call, host_code)
    print("  (simulated) the host dialled in with the host code", flush=True)
    caller = sim.place_call("+15550104821", "+15550109999")
    await sim.wait_event("gather-start", call_sid=caller, num_digits=6, timeout=60)
    sim.press(caller, access_code)
    print("  (simulated) a caller dialled in with the access code", flush=True)
    await sim.wait_event("gather-start", call_sid=caller, num_digits=2, timeout=60)
    sim.press(caller, "*1")
    print("  (simulated) the caller pressed *1", flush=True)


def port_is_free(host: str, port: int) -> bool:
    """Nothing listens on ``host:port`` yet."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def banner(app: Quart, created: CreatedRoom, *, public_url: str, sim_url: str,
           password: str | None) -> str:
    """What the demo prints once it runs: where to sign in, with what, and the room's codes."""
    urls = app.url_map.bind(public_url.split("://", 1)[-1])
    room = created.room

    def at(endpoint: str, **values: str) -> str:
        return public_url + urls.build(endpoint, values)

    return f"""
handraise demo is running (Ctrl-C stops it).

  ==> Open these in your browser (sign in, then open the Phones page in a second tab):
      Sign in:    {at("auth.get_login")}
      Password:   {password}
      Dashboard:  {at("host.get_dashboard", room=room.id)}   (the room's live hand queue)
      Phones:     {at("phones.get_phones")}   (virtual phones: dial in, press *1)

  room:  {room.name} ({room.id})
    participant access code: {room.access_code}
    host code:               {created.host_code}
  app health: {at("get_healthz")}
  Twilio emulator: {sim_url}   (control API under /sim, events at /sim/events/stream)

A simulated host and caller dial in now; the caller presses *1 and the hand shows below
and on the dashboard. On the Phones page, dial in as another caller, press *1, then call
on them from the dashboard and read "You are live" in their transcript. From a shell:
  curl -s -X POST {sim_url}/sim/calls -d from=+15550100001      # -> {{"sid": "CA..."}}
  curl -s -X POST {sim_url}/sim/calls/CA.../digits -d digits={room.access_code}
  curl -s -X POST {sim_url}/sim/calls/CA.../digits -d 'digits=*1'
  handraise rooms show {room.id}                                    # the hand queue
"""


async def run_demo(settings: Settings, *, host: str, port: int, callers: bool = True) -> None:
    """Run the demo until Ctrl-C: app, emulator, the demo room, the opening scene, the log."""
    if not port_is_free(host, port):
        raise HandraiseError(f"Port {port} on {host} is in use; pick another with --port.")
    account_sid = "AC" + secrets.token_hex(16)
    auth_token = secrets.token_hex(16)
    public_url = f"http://{host}:{port}"
    sim = Simulator(SimConfig(
        voice_url=f"{public_url}/voice/incoming", account_sid=account_sid, auth_token=auth_token,
        host=host,
    ))
    await sim.start()
    settings = replace(
        settings,
        public_url=public_url,
        twilio_account_sid=account_sid,
        twilio_auth_token=auth_token,
        twilio_api_url=sim.base_url,
        secret_key=settings.secret_key or secrets.token_hex(32),
        host_password=settings.host_password or "handraise-demo",
    )
    app = create_app(settings)
    mount_phones(app, sim)  # the demo's alone: `handraise serve` never has this page
    served = ServedApp(app, host=host, port=port, health_path="/healthz")
    try:
        await served.start()
        svc = services(app)
        for old in await list_rooms(svc.redis):
            if old.name == DEMO_ROOM:
                await close_room(svc.redis, old.id)
        # Stream mode: *1 / *2 pressed in the conference are heard in the forked audio
        # (/voice/stream); the emulator puts keypad tones in it.
        created = await create_room(svc.redis, DEMO_ROOM, keypad_mode="stream")
        room = created.room
        set_phones_room(app, room, created.host_code)
        print(banner(app, created, public_url=public_url, sim_url=sim.base_url,
                     password=settings.host_password), flush=True)
        async with svc.hub.subscribe(room.id) as events:
            scene = asyncio.create_task(act_out(sim, created.host_code, room.access_code)) \
                if callers else None
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError):
                    loop.add_signal_handler(sig, stop.set)
            waiter = asyncio.create_task(stop.wait())
            while not stop.is_set():
                getter = asyncio.create_task(events.get())
                done, _ = await asyncio.wait({getter, waiter}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    print(describe(getter.result()), flush=True)
                else:
                    getter.cancel()
            if scene is not None:
                scene.cancel()
    finally:
        # The emulator first: its calls end and their media streams close while the app
        # still serves them (an open WebSocket would be cut at the app's shutdown).
        await sim.stop()
        await served.stop()


def describe(event: Event) -> str:
    """One human line for the demo's running log."""
    who = event.participant or ""
    details = ", ".join(f"{k}={v}" for k, v in event.data.items())
    return f"  [{event.type}] {who} {details}".rstrip()
