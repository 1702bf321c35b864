"""Test-signal synthesis: DTMF digits, silence, noise, speech-like sound, mu-law frames.

Used by the tests, ``bench/dtmf.py`` and the Twilio emulator (``handraise/sim``).
All signals are 1-D float64 arrays at :data:`SAMPLE_RATE`, full scale 1.0 (see
:mod:`handraise.dsp.mulaw` for the dBm0 reference). Everything is deterministic for a
given ``rng``; with ``rng=None`` the functions that need randomness use a fixed seed.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from handraise.dsp import mulaw
from handraise.dsp.tones import key_freqs

__all__ = [
    "FRAME_BYTES",
    "PAUSE_MS",
    "SAMPLE_RATE",
    "add_noise",
    "concat",
    "dtmf",
    "harmonic_note",
    "music_like",
    "noise",
    "samples",
    "silence",
    "speech_like",
    "to_frames",
    "tone",
    "with_dropout",
]

SAMPLE_RATE = 8000
"""Samples per second (G.711 telephone audio)."""

FRAME_BYTES = 160
"""One Twilio Media Streams frame: 20 ms of 8 kHz mu-law."""

PAUSE_MS = 500.0
"""Length of a ``w`` in a digit string (Twilio ``<Play digits>`` convention)."""

FloatArray = npt.NDArray[np.float64]


def samples(duration_ms: float) -> int:
    """Number of samples in ``duration_ms`` milliseconds (rounded to nearest)."""
    return max(0, round(duration_ms * SAMPLE_RATE / 1000.0))


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng(0)


def silence(duration_ms: float) -> FloatArray:
    """Digital silence.

    Parameters
    ----------
    duration_ms : float
        Duration in milliseconds.

    Returns
    -------
    x : ndarray of float64, shape (round(duration_ms * 8),)
        Zeros.
    """
    return np.zeros(samples(duration_ms), dtype=np.float64)


def tone(
    freq_hz: float, duration_ms: float, level_dbm0: float, *, phase: float = 0.0
) -> FloatArray:
    """A pure sine.

    Parameters
    ----------
    freq_hz : float
        Frequency in Hz.
    duration_ms : float
        Duration in milliseconds.
    level_dbm0 : float
        Level of the sine in dBm0.
    phase : float, optional
        Starting phase in radians.

    Returns
    -------
    x : ndarray of float64, shape (round(duration_ms * 8),)
    """
    n = np.arange(samples(duration_ms), dtype=np.float64)
    return mulaw.dbm0_to_peak(level_dbm0) * np.sin(2.0 * np.pi * freq_hz / SAMPLE_RATE * n + phase)


def dtmf(
    digits: str,
    *,
    tone_ms: float = 80.0,
    gap_ms: float = 80.0,
    level_dbm0: float = -10.0,
    twist_db: float = 0.0,
    freq_offset: float = 0.0,
    rng: np.random.Generator | None = None,
    low_dbm0: float | None = None,
    high_dbm0: float | None = None,
    low_offset: float | None = None,
    high_offset: float | None = None,
    dropout_ms: float = 0.0,
) -> FloatArray:
    """Synthesize a string of DTMF digits.

    Each digit is ``tone_ms`` of its two tones followed by ``gap_ms`` of silence; a
    ``w`` is a 500 ms pause (as in Twilio's ``<Play digits>``). Spaces are ignored.

    Parameters
    ----------
    digits : str
        Keys ``0-9 * # A-D`` (``a-d`` accepted) and ``w``.
    tone_ms, gap_ms : float
        Tone and following silence per digit, in milliseconds.
    level_dbm0 : float
        Level of the low-group tone in dBm0.
    twist_db : float
        High-group level minus low-group level in dB (positive: high tone louder).
    freq_offset : float
        Relative frequency error applied to both tones (``0.015`` = +1.5 %).
    rng : numpy.random.Generator, optional
        When given, each tone starts at a random phase; otherwise at phase 0.
    low_dbm0, high_dbm0 : float, optional
        Per-tone levels in dBm0, overriding ``level_dbm0`` / ``twist_db``.
    low_offset, high_offset : float, optional
        Per-tone relative frequency errors, overriding ``freq_offset``.
    dropout_ms : float
        If positive, this much silence is cut into the middle of every tone (the tone
        keeps its phase across the dropout, as a line interruption would).

    Returns
    -------
    x : ndarray of float64, shape (n,)
        Samples at 8 kHz, full scale 1.0.

    Raises
    ------
    ValueError
        On a character that is neither a key, ``w`` nor a space.
    """
    lo_level = level_dbm0 if low_dbm0 is None else low_dbm0
    hi_level = level_dbm0 + twist_db if high_dbm0 is None else high_dbm0
    lo_off = freq_offset if low_offset is None else low_offset
    hi_off = freq_offset if high_offset is None else high_offset
    a_lo = mulaw.dbm0_to_peak(lo_level)
    a_hi = mulaw.dbm0_to_peak(hi_level)
    n_tone = samples(tone_ms)
    n = np.arange(n_tone, dtype=np.float64)
    parts: list[FloatArray] = []
    for ch in digits:
        if ch == " ":
            continue
        if ch in "wW":
            parts.append(silence(PAUSE_MS))
            continue
        f_lo, f_hi = key_freqs(ch)
        ph_lo, ph_hi = (0.0, 0.0) if rng is None else tuple(rng.uniform(0, 2 * np.pi, 2))
        x = a_lo * np.sin(2 * np.pi * f_lo * (1 + lo_off) / SAMPLE_RATE * n + ph_lo)
        x += a_hi * np.sin(2 * np.pi * f_hi * (1 + hi_off) / SAMPLE_RATE * n + ph_hi)
        if dropout_ms > 0:
            x = with_dropout(x, (tone_ms - dropout_ms) / 2.0, dropout_ms)
        parts.append(x)
        parts.append(silence(gap_ms))
    return concat(*parts)


def concat(*parts: npt.ArrayLike) -> FloatArray:
    """Join signals end to end.

    Parameters
    ----------
    *parts : array_like of float, shape (n_i,)

    Returns
    -------
    x : ndarray of float64, shape (sum n_i,)
    """
    if not parts:
        return np.zeros(0, dtype=np.float64)
    return np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in parts])


def with_dropout(x: npt.ArrayLike, start_ms: float, duration_ms: float) -> FloatArray:
    """Return a copy of ``x`` with ``duration_ms`` of silence from ``start_ms``.

    Parameters
    ----------
    x : array_like of float, shape (n,)
    start_ms, duration_ms : float
        Where the dropout begins and how long it lasts, in milliseconds.

    Returns
    -------
    y : ndarray of float64, shape (n,)
    """
    y = np.array(x, dtype=np.float64)
    a = samples(start_ms)
    y[a : a + samples(duration_ms)] = 0.0
    return y


def _shaped_noise(n: int, color: str, rng: np.random.Generator) -> FloatArray:
    white = rng.standard_normal(n)
    if color == "white" or n < 2:
        return white
    if color not in ("pink", "brown"):
        raise ValueError(f"unknown noise color {color!r}: use 'white', 'pink' or 'brown'")
    spectrum = np.fft.rfft(white)
    f = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    f[0] = f[1] if n > 1 else 1.0
    exponent = 0.5 if color == "pink" else 1.0
    spectrum /= f**exponent
    spectrum[0] = 0.0
    return np.fft.irfft(spectrum, n)


def _band_power(x: FloatArray, band_hz: float) -> float:
    """Mean power of the part of ``x`` below ``band_hz`` (Parseval on the rfft)."""
    n = x.size
    if n == 0:
        return 0.0
    spectrum = np.fft.rfft(x)
    f = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    weights = np.full(spectrum.size, 2.0)
    weights[0] = 1.0
    if n % 2 == 0:
        weights[-1] = 1.0
    keep = f <= band_hz
    return float(np.sum(weights[keep] * np.abs(spectrum[keep]) ** 2) / n**2)


def noise(
    duration_ms: float,
    level_dbm0: float,
    *,
    color: str = "white",
    rng: np.random.Generator | None = None,
) -> FloatArray:
    """Gaussian noise at a given level.

    Parameters
    ----------
    duration_ms : float
        Duration in milliseconds.
    level_dbm0 : float
        Mean power over the whole 0-4 kHz band, in dBm0.
    color : {"white", "pink", "brown"}
        Spectral slope: flat, -3 dB/octave, -6 dB/octave.
    rng : numpy.random.Generator, optional
        Source of randomness (default: fixed seed 0).

    Returns
    -------
    x : ndarray of float64, shape (round(duration_ms * 8),)
    """
    n = samples(duration_ms)
    x = _shaped_noise(n, color, _rng(rng))
    power = float(np.mean(x * x)) if n else 0.0
    if power > 0:
        x *= mulaw.DBM0_RMS * 10.0 ** (level_dbm0 / 20.0) / np.sqrt(power)
    return x


def add_noise(
    x: npt.ArrayLike,
    snr_db: float,
    *,
    color: str = "white",
    rng: np.random.Generator | None = None,
    signal_dbm0: float | None = None,
    band_hz: float = 3000.0,
) -> FloatArray:
    """Add noise at a signal-to-noise ratio.

    Parameters
    ----------
    x : array_like of float, shape (n,)
        The signal.
    snr_db : float
        Signal power over noise power, in dB. Noise power is counted in the band
        0..``band_hz`` only (the 3 kHz bandwidth of the Bell/Q.24 noise tests), so
        white noise carries 4/3 of that power over the whole 0-4 kHz channel.
    color : {"white", "pink", "brown"}
        Noise spectrum.
    rng : numpy.random.Generator, optional
        Source of randomness (default: fixed seed 0).
    signal_dbm0 : float, optional
        Signal power in dBm0. Default: measured over the non-zero samples of ``x``,
        so that gaps between digits do not lower it (for a DTMF pair this is the
        power of both tones together).
    band_hz : float
        Upper edge of the band in which noise power is measured, in Hz.

    Returns
    -------
    y : ndarray of float64, shape (n,)
        ``x`` plus noise.
    """
    y = np.array(x, dtype=np.float64)
    if signal_dbm0 is None:
        active = y[y != 0.0]
        if active.size == 0:
            raise ValueError("signal is silent: pass signal_dbm0 to set the noise level")
        signal_power = float(np.mean(active * active))
    else:
        signal_power = mulaw.DBM0_RMS**2 * 10.0 ** (signal_dbm0 / 10.0)
    n = _shaped_noise(y.size, color, _rng(rng))
    in_band = _band_power(n, min(band_hz, SAMPLE_RATE / 2))
    if in_band > 0:
        n *= np.sqrt(signal_power / 10.0 ** (snr_db / 10.0) / in_band)
    return y + n


# Vowel formants (F1, F2, F3 in Hz) of an adult voice, roughly after Peterson & Barney.
_VOWELS = np.array(
    [
        (730, 1090, 2440),
        (270, 2290, 3010),
        (530, 1840, 2480),
        (660, 1720, 2410),
        (570, 840, 2410),
        (300, 870, 2240),
        (440, 1020, 2240),
        (490, 1350, 1690),
        (390, 1990, 2550),
        (640, 1190, 2390),
    ],
    dtype=np.float64,
)
_FORMANT_BW = np.array([80.0, 110.0, 160.0])


def speech_like(
    duration_ms: float,
    *,
    level_dbm0: float = -20.0,
    rng: np.random.Generator | None = None,
) -> FloatArray:
    """A cheap synthetic voiced-speech-like signal.

    The sum of the harmonics of a gliding pitch (a glottal pulse train, -6 dB/octave
    after lip radiation) shaped by three formant resonances that move from vowel to
    vowel, under a syllable envelope (3-6 syllables per second, short pauses between
    phrases) with a little fricative noise at syllable onsets. Not intelligible, but
    its spectrum and rhythm resemble a talker's, which is what an emulated caller and
    a talk-off test need.

    Parameters
    ----------
    duration_ms : float
        Duration in milliseconds.
    level_dbm0 : float
        Active speech level (mean power while sounding), in dBm0.
    rng : numpy.random.Generator, optional
        Source of randomness (default: fixed seed 0).

    Returns
    -------
    x : ndarray of float64, shape (round(duration_ms * 8),)
    """
    gen = _rng(rng)
    n = samples(duration_ms)
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    fs = float(SAMPLE_RATE)

    # Syllable plan: (start, length, vowel) with pauses between phrases.
    envelope = np.zeros(n)
    formants = np.empty((n, 3))
    onset_noise = np.zeros(n)
    pos = int(gen.integers(0, samples(60) + 1))
    prev_vowel = _VOWELS[int(gen.integers(len(_VOWELS)))]
    formants[:] = prev_vowel
    in_phrase = 0
    while pos < n:
        length = samples(gen.uniform(110, 300))
        vowel = _VOWELS[int(gen.integers(len(_VOWELS)))]
        end = min(n, pos + length)
        seg = end - pos
        t = np.linspace(0.0, 1.0, seg, endpoint=False)
        envelope[pos:end] = np.sin(np.pi * t) ** 0.6
        glide = np.clip(t / 0.3, 0.0, 1.0)[:, None]
        formants[pos:end] = prev_vowel + (vowel - prev_vowel) * glide
        fric = min(seg, samples(gen.uniform(10, 50)))
        onset_noise[pos : pos + fric] = gen.uniform(0.05, 0.3)
        prev_vowel = vowel
        pos = end
        in_phrase += 1
        if in_phrase >= gen.integers(3, 9):
            pause = samples(gen.uniform(150, 600))
            formants[pos : pos + pause] = vowel
            pos += pause
            in_phrase = 0
        else:
            gap = samples(gen.uniform(0, 40))
            formants[pos : pos + gap] = vowel
            pos += gap

    # Pitch: a speaker's base, slow intonation, declination within the utterance.
    base = gen.uniform(90.0, 230.0)
    tt = np.arange(n) / fs
    f0 = base * (
        1.0
        + 0.12 * np.sin(2 * np.pi * gen.uniform(0.3, 0.9) * tt + gen.uniform(0, 2 * np.pi))
        + 0.05 * np.sin(2 * np.pi * gen.uniform(2.0, 5.0) * tt + gen.uniform(0, 2 * np.pi))
        - 0.1 * (tt / max(tt[-1], 1e-9))
    )
    f0 *= 1.0 + 0.004 * np.convolve(gen.standard_normal(n), np.ones(40) / 40, mode="same")
    phase = 2.0 * np.pi * np.cumsum(f0) / fs

    max_k = int(fs / 2 / f0.min())
    x = np.zeros(n)
    chunk = 4000
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        k = np.arange(1, max_k + 1, dtype=np.float64)[:, None]
        fk = k * f0[None, a:b]
        gain = 1.0 / k
        for j in range(3):
            fj = formants[None, a:b, j]
            bw = _FORMANT_BW[j]
            gain = gain * fj**2 / np.sqrt((fj**2 - fk**2) ** 2 + (fk * bw) ** 2)
        gain = np.where(fk < fs / 2 - 100.0, gain, 0.0)
        harm_phase = gen.uniform(0, 2 * np.pi, (max_k, 1))
        x[a:b] = np.sum(gain * np.sin(k * phase[None, a:b] + harm_phase), axis=0)
    x *= envelope

    hiss = np.diff(gen.standard_normal(n + 1)) * onset_noise
    voiced_power = float(np.mean(x[envelope > 0] ** 2)) if np.any(envelope > 0) else 0.0
    if voiced_power > 0:
        x += hiss * np.sqrt(voiced_power)
        active = envelope > 0
        x *= mulaw.DBM0_RMS * 10.0 ** (level_dbm0 / 20.0) / np.sqrt(np.mean(x[active] ** 2))
    return x


def to_frames(x: npt.ArrayLike, frame_bytes: int = FRAME_BYTES) -> list[bytes]:
    """Mu-law encode a signal and cut it into frames.

    Parameters
    ----------
    x : array_like of float, shape (n,)
        Samples at 8 kHz, full scale 1.0.
    frame_bytes : int
        Bytes (= samples) per frame; 160 is Twilio's 20 ms.

    Returns
    -------
    frames : list of bytes
        ``ceil(n / frame_bytes)`` frames; the last is padded with mu-law silence (0xFF).
    """
    if frame_bytes <= 0:
        raise ValueError("frame_bytes must be positive")
    data = mulaw.encode(np.asarray(x, dtype=np.float64).ravel())
    pad = (-len(data)) % frame_bytes
    data += bytes([mulaw.SILENCE_BYTE]) * pad
    return [data[i : i + frame_bytes] for i in range(0, len(data), frame_bytes)]


_CHORDS = ((0, 4, 7), (0, 3, 7), (0, 7), (0, 4, 7, 10), (0, 5, 9), (0, 12), (0, 4, 7, 11))


def _note_hz(semitones_from_a4: npt.ArrayLike) -> FloatArray:
    return np.asarray(440.0 * 2.0 ** (np.asarray(semitones_from_a4, dtype=np.float64) / 12.0))


def music_like(
    duration_ms: float,
    *,
    kind: str = "chords",
    level_dbm0: float = -18.0,
    rng: np.random.Generator | None = None,
) -> FloatArray:
    """Synthetic music for talk-off tests (hold music, a caller's radio, singing).

    Parameters
    ----------
    duration_ms : float
        Duration in milliseconds.
    kind : {"chords", "harmonics", "sung"}
        ``"chords"``: changing chords of two to four equal-tempered notes, each with a
        natural series of harmonics, plucked or held. ``"harmonics"``: a single melody
        line with a rich, slowly changing harmonic spectrum and vibrato.
        ``"sung"``: sung vowels, long notes with vibrato through vowel formants.
    level_dbm0 : float
        Mean level in dBm0.
    rng : numpy.random.Generator, optional
        Source of randomness (default: fixed seed 0).

    Returns
    -------
    x : ndarray of float64, shape (round(duration_ms * 8),)
    """
    gen = _rng(rng)
    n = samples(duration_ms)
    x = np.zeros(n)
    fs = float(SAMPLE_RATE)
    pos = 0
    while pos < n:
        length = min(n - pos, samples(gen.uniform(200, 1200)))
        t = np.arange(length) / fs
        if kind == "chords":
            root = gen.integers(-24, 10)
            intervals = _CHORDS[int(gen.integers(len(_CHORDS)))]
            notes = _note_hz(root + np.asarray(intervals))
            decay = gen.uniform(0.5, 6.0)
            env = np.exp(-decay * t) * (1 - np.exp(-t * 200))
            for f in notes:
                k = np.arange(1, int(3900 / f) + 1)
                amps = gen.uniform(0.3, 1.0, k.size) / k ** gen.uniform(0.7, 1.5)
                ph = gen.uniform(0, 2 * np.pi, k.size)
                x[pos : pos + length] += env * (
                    amps[:, None] * np.sin(2 * np.pi * f * k[:, None] * t + ph[:, None])
                ).sum(axis=0)
        elif kind in ("harmonics", "sung"):
            f0 = float(_note_hz(gen.integers(-24, 14 if kind == "sung" else 20)))
            vib = 1 + gen.uniform(0.003, 0.012) * np.sin(2 * np.pi * gen.uniform(4.5, 6.5) * t)
            phase = 2 * np.pi * np.cumsum(f0 * vib) / fs
            k = np.arange(1, int(3900 / f0) + 1)
            if kind == "sung":
                formants = _VOWELS[int(gen.integers(len(_VOWELS)))]
                fk = f0 * k
                gain = 1.0 / k
                for j in range(3):
                    gain = gain * formants[j] ** 2 / np.sqrt(
                        (formants[j] ** 2 - fk**2) ** 2 + (fk * _FORMANT_BW[j]) ** 2
                    )
            else:
                gain = gen.uniform(0.2, 1.0, k.size) / k ** gen.uniform(0.5, 1.2)
            env = np.minimum(1.0, t / 0.05) * np.minimum(1.0, (t[-1] - t + 1e-3) / 0.05)
            ph = gen.uniform(0, 2 * np.pi, k.size)
            x[pos : pos + length] += env * (
                gain[:, None] * np.sin(k[:, None] * phase[None, :] + ph[:, None])
            ).sum(axis=0)
        else:
            raise ValueError(f"unknown music kind {kind!r}: use 'chords', 'harmonics' or 'sung'")
        pos += length
    power = float(np.mean(x * x)) if n else 0.0
    if power > 0:
        x *= mulaw.DBM0_RMS * 10.0 ** (level_dbm0 / 20.0) / np.sqrt(power)
    return x


def harmonic_note(
    duration_ms: float,
    f0: float,
    harmonics_db: dict[int, float],
    *,
    vibrato: float = 0.0,
    level_dbm0: float = -16.0,
    rng: np.random.Generator | None = None,
) -> FloatArray:
    """A held note (sung vowel, voiced speech) with chosen harmonic levels.

    The talk-off probe for a detector: when two harmonics of one voice fall on a key's
    pair and carry nearly all the energy, only the rest of the series tells them apart.

    Parameters
    ----------
    duration_ms : float
        Duration in milliseconds.
    f0 : float
        Fundamental in Hz.
    harmonics_db : dict of int to float
        Harmonic number (1 = the fundamental) -> relative level in dB.
    vibrato : float
        Relative depth of a 5.5 Hz vibrato (0.01 = +-1 %).
    level_dbm0 : float
        Mean level in dBm0.
    rng : numpy.random.Generator, optional
        Chooses the harmonics' phases (default: fixed seed 0).

    Returns
    -------
    x : ndarray of float64, shape (round(duration_ms * 8),)
    """
    gen = _rng(rng)
    n = samples(duration_ms)
    t = np.arange(n) / SAMPLE_RATE
    phase = 2.0 * np.pi * np.cumsum(f0 * (1.0 + vibrato * np.sin(2 * np.pi * 5.5 * t)))
    phase /= SAMPLE_RATE
    x = np.zeros(n)
    for k, db in sorted(harmonics_db.items()):
        x += 10.0 ** (db / 20.0) * np.sin(k * phase + gen.uniform(0, 2 * np.pi))
    power = float(np.mean(x * x)) if n else 0.0
    if power > 0:
        x *= mulaw.DBM0_RMS * 10.0 ** (level_dbm0 / 20.0) / np.sqrt(power)
    return x
