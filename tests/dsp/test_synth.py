"""Test-signal synthesis: levels, frequencies, timing and framing are what they claim."""

from __future__ import annotations

import numpy as np
import pytest

from handraise.dsp import mulaw, synth
from handraise.dsp.goertzel import GoertzelBank, power
from handraise.dsp.tones import KEYS, key_freqs


def tone_level_dbm0(x: np.ndarray, freq: float) -> float:
    """Level of the component at ``freq`` (Goertzel over the whole signal), dBm0."""
    bank = GoertzelBank([freq], x.size, 8000, dtype=np.float64)
    amp = 2 * np.sqrt(power(bank.dft(x))[0]) / x.size
    return float(20 * np.log10(amp / mulaw.DBM0_PEAK))


@pytest.mark.parametrize("key", list(KEYS))
def test_each_key_is_its_two_tones_at_the_asked_levels(key: str) -> None:
    x = synth.dtmf(key, tone_ms=1000, gap_ms=0, low_dbm0=-7, high_dbm0=-12)
    low, high = key_freqs(key)
    assert x.size == 8000
    assert tone_level_dbm0(x, low) == pytest.approx(-7, abs=0.05)
    assert tone_level_dbm0(x, high) == pytest.approx(-12, abs=0.05)


def test_twist_raises_the_high_tone_over_the_low_one() -> None:
    x = synth.dtmf("1", tone_ms=100, gap_ms=0, level_dbm0=-10, twist_db=4)
    assert tone_level_dbm0(x, 1209) - tone_level_dbm0(x, 697) == pytest.approx(4, abs=0.05)


def test_a_frequency_offset_moves_both_tones() -> None:
    x = synth.dtmf("D", tone_ms=1000, gap_ms=0, freq_offset=0.02)
    assert tone_level_dbm0(x, 941 * 1.02) > tone_level_dbm0(x, 941) + 20
    assert tone_level_dbm0(x, 1633 * 1.02) == pytest.approx(-10, abs=0.05)


def test_timing_follows_tone_gap_and_pauses() -> None:
    x = synth.dtmf("1w2", tone_ms=50, gap_ms=30)
    assert x.size == (50 + 30 + 500 + 50 + 30) * 8
    assert np.all(x[400:4640] == 0)
    assert np.all(x[:400] != 0) or np.count_nonzero(x[:400]) > 390
    with pytest.raises(ValueError):
        synth.dtmf("1x")


def test_a_dropout_silences_exactly_the_asked_span() -> None:
    x = synth.dtmf("5", tone_ms=80, gap_ms=0, dropout_ms=10, rng=np.random.default_rng(1))
    silent = np.flatnonzero(x == 0)
    assert silent.min() == 280 and silent.max() == 359 and silent.size == 80


@pytest.mark.parametrize("color", ["white", "pink", "brown"])
def test_noise_has_the_asked_level(color: str) -> None:
    x = synth.noise(2000, -30, color=color, rng=np.random.default_rng(2))
    assert mulaw.level_dbm0(x) == pytest.approx(-30, abs=0.01)


def test_pink_noise_falls_3_db_per_octave() -> None:
    x = synth.noise(20000, -20, color="pink", rng=np.random.default_rng(3))
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.size, 1 / 8000)
    band = [spec[(f >= a) & (f < 2 * a)].sum() for a in (250.0, 500.0, 1000.0)]
    assert np.allclose(10 * np.log10(band), 10 * np.log10(band[0]), atol=0.5)


@pytest.mark.parametrize("snr", [0.0, 15.0, 30.0])
def test_add_noise_sets_the_snr_in_a_3_khz_band(snr: float) -> None:
    clean = synth.dtmf("*1", tone_ms=100, gap_ms=100, rng=np.random.default_rng(4))
    noisy = synth.add_noise(clean, snr, rng=np.random.default_rng(5))
    n = noisy - clean
    spec = np.abs(np.fft.rfft(n)) ** 2
    f = np.fft.rfftfreq(n.size, 1 / 8000)
    in_band = 2 * spec[f <= 3000].sum() / n.size**2
    signal = np.mean(clean[clean != 0] ** 2)
    assert 10 * np.log10(signal / in_band) == pytest.approx(snr, abs=0.1)


def test_speech_like_sound_is_deterministic_voiced_and_at_its_level() -> None:
    a = synth.speech_like(3000, level_dbm0=-18, rng=np.random.default_rng(6))
    b = synth.speech_like(3000, level_dbm0=-18, rng=np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert a.size == 24000
    spec = np.abs(np.fft.rfft(a)) ** 2
    f = np.fft.rfftfreq(a.size, 1 / 8000)
    # Most energy in the voice band, and pauses make the average below the active level.
    assert spec[(f > 80) & (f < 3400)].sum() > 0.95 * spec.sum()
    assert -30 < mulaw.level_dbm0(a) < -18


def test_frames_are_160_bytes_with_the_last_padded_with_mulaw_silence() -> None:
    x = synth.dtmf("1", tone_ms=50, gap_ms=0)  # 400 samples
    frames = synth.to_frames(x)
    assert [len(f) for f in frames] == [160, 160, 160]
    assert frames[-1][80:] == bytes([0xFF]) * 80
    assert b"".join(frames)[:400] == mulaw.encode(x)
