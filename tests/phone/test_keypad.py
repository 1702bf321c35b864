"""The per-process keypad bank: one detector call per tick, the events of one detector per stream."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from handraise.dsp import mulaw, synth
from handraise.dsp.dtmf import DigitEvent, DigitStart, DtmfDetector
from handraise.dsp.tones import KEYS
from handraise.phone.keypad import MAX_QUEUED, KeypadBank, KeypadListener

Events = list[DigitStart | DigitEvent]


class Recording(KeypadListener):
    """A listener that keeps every event the bank hands it."""

    def __init__(self) -> None:
        super().__init__(label="test")
        self.events: Events = []

    def take(self, events: Events) -> tuple[list, bool]:  # type: ignore[type-arg]
        self.events += events
        return super().take(events)


def reference(frames: list[bytes]) -> Events:
    det = DtmfDetector()
    out: Events = []
    for frame in frames:
        out += det.feed(frame)
    return out + det.flush()


def keyed_signal(rng: np.random.Generator) -> npt.NDArray[np.float64]:
    keys = "".join(rng.choice(list(KEYS), 5))
    return np.asarray(synth.add_noise(
        synth.concat(
            synth.silence(float(rng.uniform(0, 100))),
            synth.dtmf(keys, tone_ms=float(rng.uniform(40, 120)),
                       gap_ms=float(rng.uniform(40, 90)), rng=rng),
            synth.with_dropout(synth.dtmf("5", tone_ms=600, rng=rng), 300.0, 8.0),
        ),
        float(rng.uniform(16, 30)), rng=rng), dtype=np.float64)


def test_streams_joining_leaving_and_skipping_ticks_get_the_events_of_one_detector_each() -> None:
    rng = np.random.default_rng(21)
    n = 30  # over 16 streams busy at once: the vectorised state machine runs too
    frames = [synth.to_frames(keyed_signal(rng)) for _ in range(n)]
    joins = rng.integers(0, 40, size=n)
    bank = KeypadBank(capacity=4)  # grows while streams join
    listeners = [Recording() for _ in range(n)]
    slots: dict[int, int] = {}
    sent = [0] * n
    tick = 0
    while any(sent[i] < len(frames[i]) for i in range(n)) or slots:
        for i in range(n):
            if joins[i] == tick:
                slots[i] = bank.join(listeners[i])
            if i not in slots:
                continue
            # 0, 1 or 2 frames this tick: late, on time, or bunched up after a late one.
            for _ in range(int(rng.choice([0, 1, 1, 1, 2]))):
                if sent[i] < len(frames[i]):
                    bank.push(slots[i], frames[i][sent[i]])
                    sent[i] += 1
            if sent[i] == len(frames[i]) and rng.random() < 0.3:
                bank.leave(slots.pop(i))  # mid-tick, with frames possibly still queued
        bank.tick()
        tick += 1
    assert bank.streams == 0
    for i in range(n):
        assert listeners[i].events == reference(frames[i]), f"stream {i}"
    assert all(sum(isinstance(e, DigitEvent) for e in r.events) == 6 for r in listeners)


def test_a_slot_reused_by_a_new_stream_starts_its_clock_at_0_ms() -> None:
    tone = synth.to_frames(synth.dtmf("5", tone_ms=100, gap_ms=100))
    bank = KeypadBank(capacity=1)
    first, second = Recording(), Recording()
    slot = bank.join(first)
    for frame in tone:
        bank.push(slot, frame)
        bank.tick()
    bank.leave(slot)
    for _ in range(7):
        bank.tick()  # time passes with no stream at all
    assert bank.join(second) == slot
    for frame in tone:
        bank.push(slot, frame)
        bank.tick()
    bank.leave(slot)
    assert first.events == second.events == reference(tone)


def test_a_flooding_stream_changes_nothing_for_the_others() -> None:
    rng = np.random.default_rng(22)
    calm = [synth.to_frames(keyed_signal(rng)) for _ in range(3)]
    flood = synth.to_frames(synth.noise(4000, -20, rng=rng))
    bank = KeypadBank()
    listeners = [Recording() for _ in calm]
    slots = [bank.join(r) for r in listeners]
    noisy = bank.join(KeypadListener(label="flood"))
    for t in range(max(len(f) for f in calm)):
        for frames, slot in zip(calm, slots, strict=True):
            if t < len(frames):
                bank.push(slot, frames[t])
        for frame in flood:  # a whole 4 s of audio every 20 ms
            bank.push(noisy, frame)
        bank.tick()
    for frames, r, slot in zip(calm, listeners, slots, strict=True):
        bank.leave(slot)
        assert r.events == reference(frames)
    assert bank.queued <= MAX_QUEUED


def test_frames_of_another_size_are_cut_into_20_ms_frames() -> None:
    audio = mulaw.encode(synth.concat(synth.silence(40), synth.dtmf("*1", tone_ms=90, gap_ms=90),
                                      synth.silence(200)))
    audio = audio[: len(audio) - len(audio) % 160]
    bank = KeypadBank()
    listener = Recording()
    slot = bank.join(listener)
    for a in range(0, len(audio), 100):
        bank.push(slot, audio[a:a + 100])
        bank.tick()
    commands, _ = bank.leave(slot)
    assert [c.name for c in commands] == [] and listener.decoder is not None
    assert listener.events == reference([audio[a:a + 160] for a in range(0, len(audio), 160)])
    assert [e.digit for e in listener.events if isinstance(e, DigitEvent)] == ["*", "1"]
