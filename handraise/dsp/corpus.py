"""Talk-off corpus: speech and music that contain no keys, at 8 kHz telephone quality.

Test and benchmark support, not used by the server. Unlike the rest of ``dsp`` it runs a
program: speech is rendered by Debian's ``espeak-ng`` (several voices, rates and pitches
reading a few hundred meeting-style sentences), band-limited to the telephone band
(300-3400 Hz) and resampled to 8 kHz; renderings are cached as ``.npy`` files, never
committed. Music comes from :func:`handraise.dsp.synth.music_like`.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

from handraise.dsp import mulaw, synth

__all__ = [
    "SENTENCES",
    "VOICES",
    "EspeakMissingError",
    "default_cache_dir",
    "espeak_available",
    "music_corpus",
    "render_speech",
    "speech_corpus",
    "telephone_band",
]

FloatArray = npt.NDArray[np.float64]

_OPENERS = (
    "Good morning everyone,",
    "Thanks for joining the call,",
    "Sorry, I was on mute,",
    "Can everyone hear me?",
    "Just a quick question,",
    "Before we move on,",
    "If I may add something,",
    "Hello, this is Maria from accounting,",
    "Right, so to summarise,",
    "I think,",
    "Honestly,",
    "Going back to the previous point,",
    "As I said in my email,",
    "Okay, next item,",
    "Hi all, it's Peter here,",
    "One more thing,",
    "Let me share what we found,",
    "Well, actually,",
    "To be fair,",
    "From the field team's side,",
    "Quick update from the warehouse,",
    "Hmm, let me check,",
    "Yes, absolutely,",
    "No, I don't think so,",
    "Could you repeat that please?",
    "Sorry to interrupt,",
    "On the budget question,",
    "For the record,",
    "Alright,",
    "Listen,",
)
_BODIES = (
    "the quarterly numbers look much better than we expected.",
    "we need to finish the migration before the end of the month.",
    "I would like to raise a concern about the delivery schedule.",
    "the new volunteers start training next Tuesday at nine thirty.",
    "can we move the review meeting to Thursday afternoon?",
    "the parish council approved the playground repairs.",
    "our customers keep asking about the mobile application.",
    "I have three points, and the first one is about safety.",
    "the shipment from Rotterdam arrived two days late again.",
    "please send me the slides after the call.",
    "the water pump on the north field failed over the weekend.",
    "we counted four hundred and twelve responses to the survey.",
    "the audit found nothing serious, just a few small issues.",
    "my connection is really bad today, I apologise.",
    "let's vote on the proposal at the next meeting.",
    "the school bus route will change from September.",
    "I agree with what Sarah just said about the contract.",
    "we should ask the lawyers before we sign anything.",
    "sales in the eastern region dropped by seven percent.",
    "the choir rehearsal is cancelled this week because of the snow.",
    "who is taking the minutes today?",
    "I can hear a lot of background noise, could someone mute?",
    "the hospital wants the report by Friday at noon.",
    "my phone number changed, I'll send the new one by email.",
    "we're still waiting for the permit from the city.",
    "the temperature in the server room reached thirty degrees.",
    "there's a fire drill at eleven, so we might have to stop early.",
    "the harvest was about twenty percent lower than last year.",
    "thank you all, that was a very productive discussion.",
    "I'm going to hand over to James for the technical part.",
)


def _sentences(count: int = 300) -> tuple[str, ...]:
    pairs = list(itertools.product(range(len(_OPENERS)), range(len(_BODIES))))
    order = np.random.default_rng(2024).permutation(len(pairs))[:count]
    return tuple(f"{_OPENERS[pairs[i][0]]} {_BODIES[pairs[i][1]]}" for i in order)


SENTENCES: tuple[str, ...] = _sentences()
"""300 distinct meeting-style sentences (no digits read as keys, obviously)."""

VOICES: tuple[str, ...] = (
    "en-us",
    "en-gb",
    "en-us+f3",
    "en-gb+f2",
    "en+m3",
    "en-us+f5",
    "en-gb-scotland",
    "en-029+f4",
    "en-gb-x-rp+m7",
    "en-us+f1",
)
"""espeak-ng voices with variants: male and female, several accents."""

_RATES = (130, 165, 200, 240)
_PITCHES = (25, 50, 75)
_SENTENCES_PER_TAKE = 10


class EspeakMissingError(RuntimeError):
    """``espeak-ng`` is not installed (Debian: ``apt-get install espeak-ng``)."""


def espeak_available() -> bool:
    """Whether the ``espeak-ng`` program is on ``PATH``."""
    return shutil.which("espeak-ng") is not None


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/handraise/talkoff`` (default ``~/.cache/handraise/talkoff``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "handraise" / "talkoff"


def telephone_band(x: npt.ArrayLike, sample_rate: float) -> FloatArray:
    """Resample to 8 kHz and band-limit to the telephone band (300-3400 Hz).

    Parameters
    ----------
    x : array_like of float, shape (n,)
        Samples at ``sample_rate``.
    sample_rate : float
        Input rate in Hz.

    Returns
    -------
    y : ndarray of float64, shape (round(n * 8000 / sample_rate),)
        Samples at 8 kHz (FFT resampling with raised-cosine band edges).
    """
    a = np.asarray(x, dtype=np.float64)
    n_out = round(a.size * synth.SAMPLE_RATE / sample_rate)
    if n_out == 0:
        return np.zeros(0)
    spec = np.fft.rfft(a)
    f = np.fft.rfftfreq(a.size, 1.0 / sample_rate)
    gain = np.clip((f - 200.0) / 100.0, 0.0, 1.0) * np.clip((3600.0 - f) / 200.0, 0.0, 1.0)
    gain = 0.5 - 0.5 * np.cos(np.pi * gain)
    keep = n_out // 2 + 1
    out = np.zeros(keep, dtype=complex)
    m = min(keep, spec.size)
    out[:m] = (spec * gain)[:m]
    return np.fft.irfft(out, n_out) * (n_out / a.size)


def _espeak_version() -> str:
    done = subprocess.run(
        ["espeak-ng", "--version"], capture_output=True, text=True, check=False, timeout=30
    )
    return done.stdout.strip()


def render_speech(text: str, voice: str, rate: int, pitch: int) -> FloatArray:
    """Speak ``text`` with espeak-ng and return telephone-band audio.

    Parameters
    ----------
    text : str
        What to say.
    voice : str
        espeak-ng voice, e.g. ``"en-us+f3"``.
    rate : int
        Words per minute.
    pitch : int
        espeak-ng pitch, 0-99.

    Returns
    -------
    x : ndarray of float64, shape (n,)
        8 kHz samples, full scale 1.0, at the level espeak-ng produced.

    Raises
    ------
    EspeakMissingError
        If espeak-ng is not installed.
    """
    if not espeak_available():
        raise EspeakMissingError("espeak-ng is not installed (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "say.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", str(path), text],
            check=True,
            capture_output=True,
            timeout=120,
        )
        with wave.open(str(path), "rb") as w:
            fs = w.getframerate()
            raw = w.readframes(w.getnframes())
    pcm = np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0
    return telephone_band(pcm, fs)


def _active_level(x: FloatArray) -> float:
    frames = x[: x.size - x.size % 160].reshape(-1, 160)
    power = np.mean(frames * frames, axis=1)
    active = power[power > mulaw.DBM0_RMS**2 * 10 ** (-50 / 10)]
    if active.size == 0:
        return float("-inf")
    return float(10 * np.log10(np.mean(active) / mulaw.DBM0_RMS**2))


def speech_corpus(
    minutes: float, *, cache_dir: Path | None = None, seed: int = 0
) -> list[FloatArray]:
    """Speech for talk-off tests: takes of ten sentences each, cycling voices and rates.

    Parameters
    ----------
    minutes : float
        Least total duration wanted.
    cache_dir : pathlib.Path, optional
        Where renderings are kept (default :func:`default_cache_dir`).
    seed : int
        Chooses sentences, pitches and levels.

    Returns
    -------
    takes : list of ndarray of float64, shape (n_i,)
        8 kHz telephone-band speech, each take at an active level between -28 and
        -10 dBm0.

    Raises
    ------
    EspeakMissingError
        If espeak-ng is not installed.
    """
    if not espeak_available():
        raise EspeakMissingError("espeak-ng is not installed (apt-get install espeak-ng)")
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    version = _espeak_version()
    rng = np.random.default_rng(seed)
    takes: list[FloatArray] = []
    total = 0
    want = minutes * 60 * synth.SAMPLE_RATE
    i = 0
    while total < want:
        voice = VOICES[i % len(VOICES)]
        rate = _RATES[(i // len(VOICES)) % len(_RATES)]
        pitch = _PITCHES[int(rng.integers(len(_PITCHES)))]
        chosen = rng.choice(len(SENTENCES), _SENTENCES_PER_TAKE, replace=False)
        text = " ".join(SENTENCES[int(k)] for k in chosen)
        key = hashlib.sha256(f"{version}|{voice}|{rate}|{pitch}|{text}".encode()).hexdigest()
        path = cache / f"{key[:24]}.npy"
        if path.exists():
            x = np.load(path)
        else:
            x = render_speech(text, voice, rate, pitch)
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, x)
            tmp.replace(path)
        level = rng.uniform(-28.0, -10.0)
        x = x * 10 ** ((level - _active_level(x)) / 20)
        takes.append(x)
        total += x.size
        i += 1
    return takes


def music_corpus(minutes: float, *, seed: int = 0) -> list[FloatArray]:
    """Music for talk-off tests: equal parts chords, harmonic melody and sung vowels.

    Parameters
    ----------
    minutes : float
        Total duration.
    seed : int
        Source of randomness.

    Returns
    -------
    pieces : list of ndarray of float64, shape (n_i,)
        One-minute pieces at 8 kHz, levels between -25 and -10 dBm0.
    """
    rng = np.random.default_rng(seed)
    kinds = ("chords", "harmonics", "sung")
    pieces = []
    for i in range(max(1, round(minutes))):
        pieces.append(
            synth.music_like(
                60_000, kind=kinds[i % 3], level_dbm0=rng.uniform(-25.0, -10.0), rng=rng
            )
        )
    return pieces
