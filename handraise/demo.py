"""``handraise demo``: the whole product on one machine, no Twilio account.

Starts the app (with the embedded Redis), the Twilio emulator pointed at the app's voice
URL, and a fresh demo room; then, while it runs, prints what happens in the room.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
from dataclasses import replace

from .app import create_app, services
from .config import Settings
from .events import Event
from .rooms import close_room, create_room, list_rooms
from .sim import ServedApp, SimConfig, Simulator

DEMO_ROOM = "Demo room"


async def run_demo(settings: Settings, *, host: str, port: int) -> None:
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
    served = ServedApp(app, host=host, port=port, health_path="/healthz")
    try:
        await served.start()
        svc = services(app)
        for old in await list_rooms(svc.redis):
            if old.name == DEMO_ROOM:
                await close_room(svc.redis, old.id)
        created = await create_room(svc.redis, DEMO_ROOM)
        room = created.room
        print(f"""
handraise demo is running (Ctrl-C stops it).

  app:            {public_url}   (health: {public_url}/healthz)
  host password:  {settings.host_password}
  Twilio emulator: {sim.base_url}   (control API under /sim, events at /sim/events/stream)
  room:           {room.name} ({room.id})
    participant access code: {room.access_code}
    host code:               {created.host_code}

Call in as a simulated phone, type the access code, press *1:
  curl -s -X POST {sim.base_url}/sim/calls -d from=+15550100001      # -> {{"sid": "CA..."}}
  curl -s -X POST {sim.base_url}/sim/calls/CA.../digits -d digits={room.access_code}
  curl -s -X POST {sim.base_url}/sim/calls/CA.../digits -d 'digits=*1'
  handraise rooms show {room.id}                                    # the hand queue
""", flush=True)
        async with svc.hub.subscribe(room.id) as events:
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
    finally:
        await served.stop()
        await sim.stop()


def describe(event: Event) -> str:
    """One human line for the demo's running log."""
    who = event.participant or ""
    details = ", ".join(f"{k}={v}" for k, v in event.data.items())
    return f"  [{event.type}] {who} {details}".rstrip()
