"""DTMF detector benchmark: the Q.24 table, detection against SNR and level, talk-off,
and CPU cost. Prints figures; asserts nothing.

    .venv/bin/python bench/dtmf.py            # full run (an hour each of speech and music,
                                              # 8 h of the wide corpus; first run renders
                                              # it with espeak-ng, a few minutes, cached)
    .venv/bin/python bench/dtmf.py --quick    # a short run while developing

CPU figures are process CPU time on one core (OpenBLAS limited to one thread), so other
load on the machine does not inflate them much; they are measured, not asserted.
"""

from __future__ import annotations

import os

# One BLAS thread: the figures are per core. Must be set before numpy loads OpenBLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import ctypes
import glob
import platform
import time
from collections.abc import Callable

import numpy as np

from handraise.dsp import corpus, mulaw, synth
from handraise.dsp.dtmf import DetectorBank, DigitEvent, DtmfDetector, detect
from handraise.dsp.tones import KEYS
from handraise.phone.keys import KeyDecoder

FRAME = synth.FRAME_BYTES


def keys_in(x: np.ndarray) -> str:
    return "".join(e.digit for e in detect(mulaw.encode(x)))


def lead(rng: np.random.Generator) -> np.ndarray:
    return synth.silence(float(rng.uniform(0.0, 60.0)))


# -- the table --------------------------------------------------------------------------


def table(trials: int) -> None:
    """Each row over all 16 keys x ``trials`` random alignments and phases."""
    rng = np.random.default_rng(1)
    print("\n== ITU-T Q.24 (AT&T) / Bell table: all 16 keys, "
          f"{trials} random alignments each ==")
    print(f"{'condition':58s} {'expect':8s} {'result':>13s}  verdict")

    def row(name: str, must: bool, make: Callable[[str], np.ndarray], presses: int = 1,
            ratio: float = 1.0) -> None:
        good = total = 0
        for key in KEYS:
            for _ in range(trials):
                found = keys_in(synth.concat(lead(rng), make(key)))
                total += presses
                if must:
                    good += min(found.count(key), presses) if set(found) <= {key} else 0
                    good -= max(0, len(found) - presses)
                else:
                    good += presses if found == "" else 0
        ok = good >= ratio * total if ratio < 1 else good == total
        word = "detect" if must else "reject"
        print(f"{name:58s} {word:8s} {good:6d}/{total:<6d}  {'PASS' if ok else 'FAIL'}")

    for lo, hi in [(0.015, 0.015), (-0.015, -0.015), (0.015, -0.015), (-0.015, 0.015)]:
        row(f"frequency low {lo:+.1%} high {hi:+.1%}", True,
            lambda k, lo=lo, hi=hi: synth.dtmf(k, low_offset=lo, high_offset=hi, rng=rng))
    for lo, hi in [(0.035, 0.035), (-0.035, -0.035), (0.035, 0.0), (-0.035, 0.0), (0.0, 0.035),
                   (0.0, -0.035)]:
        row(f"frequency low {lo:+.1%} high {hi:+.1%} (200 ms)", False,
            lambda k, lo=lo, hi=hi: synth.dtmf(k, tone_ms=200, low_offset=lo, high_offset=hi,
                                               rng=rng))
    row("tone 40 ms", True, lambda k: synth.dtmf(k, tone_ms=40, rng=rng))
    row("tone 23 ms", False, lambda k: synth.dtmf(k, tone_ms=23, rng=rng))
    row("three presses, 40 ms tones, 40 ms pauses", True,
        lambda k: synth.dtmf(k * 3, tone_ms=40, gap_ms=40, rng=rng), presses=3)
    row("80 ms tone with a 10 ms dropout (random place)", True,
        lambda k: synth.with_dropout(synth.dtmf(k, rng=rng), float(rng.uniform(10, 60)), 10))
    for level in (-3.0, -25.0):
        row(f"level {level:+.0f} dBm0 per tone", True,
            lambda k, level=level: synth.dtmf(k, level_dbm0=level, rng=rng))
    row("level -55 dBm0 per tone (500 ms)", False,
        lambda k: synth.dtmf(k, tone_ms=500, level_dbm0=-55, rng=rng))
    for twist in (-8.0, 4.0):
        row(f"twist {twist:+.0f} dB (low tone -12 dBm0)", True,
            lambda k, twist=twist: synth.dtmf(k, level_dbm0=-12, twist_db=twist, rng=rng))
    for twist in (-8.0, 4.0):
        for off in (0.015, -0.015):
            row(f"twist {twist:+.0f} dB and both tones {off:+.1%} together", True,
                lambda k, twist=twist, off=off: synth.dtmf(
                    k, level_dbm0=-12, twist_db=twist, freq_offset=off, rng=rng))
    for color in ("white", "pink"):
        row(f"{color} noise, SNR 15 dB, 20 presses at 10/s (>= 99 %)", True,
            lambda k, color=color: synth.add_noise(
                synth.dtmf(k * 20, tone_ms=50, gap_ms=50, level_dbm0=-20, rng=rng), 15.0,
                color=color, rng=rng),
            presses=20, ratio=0.99)
    seq = KEYS * 2
    got = keys_in(synth.dtmf(seq, tone_ms=50, gap_ms=50, rng=rng))
    print(f"{'all 16 keys at 10 digits/s (50 ms on, 50 ms off), in order':58s} {'detect':8s} "
          f"{sum(a == b for a, b in zip(got, seq, strict=False)):6d}/{len(seq):<6d}  "
          f"{'PASS' if got == seq else 'FAIL'}")


# -- curves -----------------------------------------------------------------------------


def curves(presses_per_key: int) -> None:
    rng = np.random.default_rng(2)
    seq = KEYS * presses_per_key
    print(f"\n== detection rate vs SNR (white noise in 3 kHz, tones -20 dBm0, 40 ms on / "
          f"60 ms off, {len(seq)} presses) ==")
    print("SNR dB   detected   wrong/extra")
    for snr in (0, 3, 6, 8, 9, 10, 11, 12, 13, 14, 15, 18, 21, 24, 27, 30):
        clean = synth.dtmf(seq, tone_ms=40, gap_ms=60, level_dbm0=-20, rng=rng)
        events = detect(mulaw.encode(synth.add_noise(clean, float(snr), rng=rng)))
        right, wrong = score(events, seq, 100.0)
        print(f"{snr:6d}   {right / len(seq):7.1%}   {wrong:5d}")
    print(f"\n== detection rate vs level per tone (no noise, 40 ms on / 60 ms off, "
          f"{len(seq)} presses) ==")
    print("dBm0     detected   wrong/extra")
    for level in range(0, -61, -5):
        clean = synth.dtmf(seq, tone_ms=40, gap_ms=60, level_dbm0=float(level), rng=rng)
        events = detect(mulaw.encode(clean))
        right, wrong = score(events, seq, 100.0)
        print(f"{level:6d}   {right / len(seq):7.1%}   {wrong:5d}")


def talk_down(presses_per_key: int) -> None:
    """Keys pressed while the caller talks (not in the table; for information)."""
    rng = np.random.default_rng(4)
    seq = KEYS * presses_per_key
    print(f"\n== keys over the caller's own speech (tones -10 dBm0 each, 60 ms on / 40 ms off, "
          f"{len(seq)} presses; speech-like voice, active level) ==")
    print("speech dBm0   detected   wrong/extra")
    for level in (-40, -35, -30, -25, -20, -15):
        keys = synth.dtmf(seq, tone_ms=60, gap_ms=40, level_dbm0=-10, rng=rng)
        talk = synth.speech_like(keys.size / 8.0, level_dbm0=float(level), rng=rng)
        right, wrong = score(detect(mulaw.encode(keys + talk)), seq, 100.0)
        print(f"{level:11d}   {right / len(seq):7.1%}   {wrong:5d}")


def score(events: list[DigitEvent], seq: str, period_ms: float) -> tuple[int, int]:
    """Match events to presses by time slot; count right ones and wrong or extra ones."""
    slots: dict[int, list[str]] = {}
    for e in events:
        slots.setdefault(int((e.start_ms + 20) // period_ms), []).append(e.digit)
    right = sum(1 for i, k in enumerate(seq) if slots.get(i) == [k])
    wrong = sum(len(v) for v in slots.values()) - right
    return right, wrong


# -- talk-off ---------------------------------------------------------------------------


def talkoff(minutes: float) -> None:
    print(f"\n== talk-off (mu-law, {minutes:g} min of each corpus, no keys in any) ==")
    print(f"{'corpus':50s} {'minutes':>7s} {'false keys':>10s} {'per hour':>8s} "
          f"{'false *1/*2':>11s} {'per hour':>8s}")
    sets: list[tuple[str, Callable[[], list[np.ndarray]]]] = []
    if corpus.espeak_available():
        sets.append(("speech, espeak-ng (10 voices, 4 rates, 300 sent.)",
                     lambda: corpus.speech_corpus(minutes, seed=21)))
    else:
        print("  (espeak-ng missing: speech corpus skipped; apt-get install espeak-ng)")
    sets.append(("speech-like synthetic voices",
                 lambda: [synth.speech_like(60_000, level_dbm0=float(r.uniform(-28, -10)), rng=r)
                          for r in [np.random.default_rng(100 + i) for i in range(int(minutes))]]))
    sets.append(("music (chords, harmonic melodies, sung vowels)",
                 lambda: corpus.music_corpus(minutes, seed=22)))
    for name, make in sets:
        pieces = make()
        found = [false_keys(x) for x in pieces]
        samples = sum(x.size for x in pieces)
        print_row(name, samples, sum(len(k) for k, _ in found), sum(c for _, c in found))


def false_keys(x: np.ndarray) -> tuple[list[DigitEvent], int]:
    """Keys detected in audio that has none, and the commands they make."""
    events = detect(mulaw.encode(x))
    return events, len(KeyDecoder().feed_all(events))


def print_row(name: str, samples: int, n_keys: int, n_cmds: int) -> None:
    hours = samples / synth.SAMPLE_RATE / 3600
    print(f"{name:50s} {hours * 60:7.1f} {n_keys:10d} {n_keys / hours:8.2f} {n_cmds:11d} "
          f"{n_cmds / hours:8.2f}")


WIDE_NAMES = {
    "speech": "speech: 12 languages, child pitch, fast",
    "speech+music": "speech over background music",
    "singing": "singing (espeak-ng, sopranos, children)",
    "music": "music (music_corpus, other seeds)",
}


def wide_talkoff(minutes: float, seeds: list[int]) -> None:
    """The wide corpus (corpus.wide_corpus), by kind; every false key is listed."""
    print(f"\n== talk-off, wide corpus ({minutes:g} min per seed, seeds "
          f"{', '.join(map(str, seeds))}; goal: <= 1 false key per hour of speech and of "
          "music, no false command) ==")
    if not corpus.espeak_available():
        print("  (espeak-ng missing: skipped; apt-get install espeak-ng)")
        return
    print(f"{'corpus':50s} {'minutes':>7s} {'false keys':>10s} {'per hour':>8s} "
          f"{'false *1/*2':>11s} {'per hour':>8s}")
    totals = {kind: [0, 0, 0] for kind in corpus.WIDE_KINDS}
    listed: list[str] = []
    for seed in seeds:
        for i, clip in enumerate(corpus.wide_corpus(minutes, seed=seed)):
            events, n_cmds = false_keys(clip.x)
            t = totals[clip.kind]
            t[0] += clip.x.size
            t[1] += len(events)
            t[2] += n_cmds
            listed += [f"  {e.digit!r} at {e.start_ms / 1000:6.2f} s of seed {seed} clip {i} "
                       f"({clip.kind}: {clip.label})" for e in events]
    for kind in corpus.WIDE_KINDS:
        print_row(f"wide: {WIDE_NAMES[kind]}", *totals[kind])
    verdicts = []
    for name, kinds in (("speech", ("speech", "speech+music")), ("music", ("singing", "music"))):
        samples, keys, cmds = (sum(totals[k][i] for k in kinds) for i in range(3))
        print_row(f"wide: all {name} ({' + '.join(kinds)})", samples, keys, cmds)
        hours = samples / synth.SAMPLE_RATE / 3600
        verdicts.append(keys / hours <= 1.0 and cmds == 0)
    print("goal met" if all(verdicts) else "GOAL NOT MET")
    print("\n".join(listed) if listed else "  (no false key)")


# -- CPU --------------------------------------------------------------------------------


def workload(streams: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Mu-law audio for ``streams`` calls: speech, pauses, line noise, a *1 now and then."""
    pool = synth.concat(
        synth.speech_like(12_000, rng=rng),
        synth.noise(4_000, -55, rng=rng),
        synth.dtmf("*1", rng=rng),
        synth.speech_like(10_000, level_dbm0=-25, rng=rng),
        synth.silence(3_680),
    )
    codes = np.frombuffer(mulaw.encode(pool), dtype=np.uint8)
    n = int(seconds * synth.SAMPLE_RATE) // FRAME * FRAME
    starts = rng.integers(0, codes.size, streams)
    idx = (starts[:, None] + np.arange(n)[None, :]) % codes.size
    return codes[idx]


def cpu(quick: bool) -> None:
    rng = np.random.default_rng(3)
    print("\n== CPU (process time, one core, OpenBLAS threads="
          f"{os.environ.get('OPENBLAS_NUM_THREADS')}) ==")
    print(f"machine: {platform.machine()} {cpu_model()}; numpy {np.__version__}; "
          f"OpenBLAS core: {openblas_core()} (OPENBLAS_CORETYPE="
          f"{os.environ.get('OPENBLAS_CORETYPE', 'unset')})")
    repeats = 3 if quick else 7
    print(f"median of {repeats} runs (best in brackets); workload: speech, pauses, line noise, "
          "a *1 every 30 s")
    seconds = 4.0 if quick else 10.0
    audio = workload(1, seconds, rng)[0].tobytes()
    frames = [audio[i : i + FRAME] for i in range(0, len(audio), FRAME)]
    runs = []
    for _ in range(repeats):
        det = DtmfDetector()
        t = time.process_time()
        for f in frames:
            det.feed(f)
        runs.append((time.process_time() - t) / len(frames) * 1e6)
    single, best = float(np.median(runs)), min(runs)
    print(f"single stream (DtmfDetector.feed, 160-byte frames): {single:7.1f} us per 20 ms frame "
          f"[{best:.1f}]  -> {20_000 / single:6.0f} streams per core")
    for streams in (100, 1000):
        secs = (4.0 if quick else 10.0) if streams == 100 else (1.0 if quick else 3.0)
        data = workload(streams, secs, rng)
        n_frames = data.shape[1] // FRAME
        runs = []
        for _ in range(repeats):
            bank = DetectorBank(streams)
            t = time.process_time()
            for i in range(n_frames):
                bank.feed(data[:, i * FRAME : (i + 1) * FRAME])
            runs.append((time.process_time() - t) / (n_frames * streams) * 1e6)
        per, best = float(np.median(runs)), min(runs)
        print(f"bank of {streams:4d} streams: {per:7.3f} us per stream-frame [{best:.3f}]"
              f"  -> {20_000 / per:6.0f} streams per core in real time [{20_000 / best:.0f}]")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def openblas_core() -> str:
    for lib in glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*")):
        if "openblas" not in lib:
            continue
        try:
            handle = ctypes.CDLL(lib)
        except OSError:
            continue
        for name in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename",
                     "openblas_get_corename64_", "openblas_get_corename"):
            fn = getattr(handle, name, None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                return str(fn().decode())
    return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (about a minute)")
    parser.add_argument("--minutes", type=float, help="minutes of each talk-off corpus")
    parser.add_argument("--wide-minutes", type=float,
                        help="minutes of the wide talk-off corpus per seed (default 240)")
    parser.add_argument("--wide-seeds", default="7,8",
                        help="seeds of the wide corpus, comma-separated (default 7,8)")
    parser.add_argument("--only", choices=["table", "curves", "talkoff", "cpu"],
                        help="run one section")
    args = parser.parse_args()
    minutes = args.minutes or (5.0 if args.quick else 60.0)
    started = time.time()
    if args.only in (None, "table"):
        table(trials=2 if args.quick else 10)
    if args.only in (None, "curves"):
        curves(presses_per_key=2 if args.quick else 10)
    if args.only in (None, "curves"):
        talk_down(presses_per_key=2 if args.quick else 10)
    if args.only in (None, "talkoff"):
        talkoff(minutes)
        wide = args.wide_minutes or (20.0 if args.quick else 240.0)
        seeds = [int(x) for x in args.wide_seeds.split(",")]
        wide_talkoff(wide, seeds[:1] if args.quick else seeds)
    if args.only in (None, "cpu"):
        cpu(args.quick)
    print(f"\n(bench ran {time.time() - started:.0f} s wall)")


if __name__ == "__main__":
    main()
