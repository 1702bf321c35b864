"""The media hub's detection tick (handraise/phone/media.py) when its ticks cost more than
the tick itself: the process must go on serving everything else."""

from __future__ import annotations

import asyncio
import time

from handraise.phone.media import TICK_S, MediaHub


class OverrunningSource:
    """A media source (the hub's ``source``) whose every read costs more than a tick of CPU,
    as a process with too many streams for its core; busy for ``reads`` reads."""

    def __init__(self, reads: int) -> None:
        self.left = reads
        self.reads = 0

    def busy(self) -> bool:
        return self.left > 0

    def poll(self) -> None:
        self.reads += 1
        self.left -= 1
        end = time.perf_counter() + TICK_S * 1.25
        while time.perf_counter() < end:
            pass


async def test_ticks_that_overrun_still_let_the_rest_of_the_process_run() -> None:
    hub = MediaHub()
    source = OverrunningSource(reads=150)  # 150 reads of 25 ms: about 4 s of ticks
    hub.source = source
    hub.ticking()
    # Anything else in the process (a webhook, a stream's job, the signal to stop) gets
    # its turn while the ticks still overrun, not once they are over; and the ticks go on.
    # Here: a timer due three ticks from now, and what the source had done when it fired.
    reads_when_fired: list[tuple[int, int]] = []
    fired = asyncio.Event()

    def timer() -> None:
        reads_when_fired.append((source.reads, source.left))
        fired.set()

    asyncio.get_running_loop().call_later(3 * TICK_S, timer)
    await fired.wait()
    [(reads, left)] = reads_when_fired
    assert left > 0, "nothing else ran until the overrunning ticks ended"
    assert 0 < reads < 20
    source.left = 0
    await hub.drain()
