"""A local Twilio emulator: TwiML calls, conferences, Media Streams and the REST subset.

In tests::

    async with Simulator(SimConfig(voice_url=..., account_sid=..., auth_token=...,
                                   media_time_scale=0)) as sim:
        sid = sim.place_call("+15550100001", "+15550109999")
        await sim.wait_event("gather-start", call_sid=sid)
        sim.press(sid, "*1")

From a shell: ``python -m handraise.sim --voice-url URL --auth-token T --account-sid AC…``.
"""

from handraise.sim.engine import Engine, SimConfig, SimEvent
from handraise.sim.server import ServedApp, Simulator, free_port
from handraise.sim.twiml import TwimlError

__all__ = ["Engine", "ServedApp", "SimConfig", "SimEvent", "Simulator", "TwimlError",
           "free_port"]
