"""G.711 mu-law codec against the standard's bit-level definition."""

from __future__ import annotations

import numpy as np
import pytest

from handraise.dsp import mulaw, synth


def reference_decode(byte: int) -> int:
    """G.711 mu-law expansion written out from the standard, one code at a time."""
    u = ~byte & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = ((2 * mantissa + 33) << (exponent + 2)) - 132
    return -magnitude if sign else magnitude


def test_every_code_decodes_to_the_value_g711_defines() -> None:
    expected = np.array([reference_decode(b) for b in range(256)]) / 32768.0
    np.testing.assert_array_equal(mulaw.decode(bytes(range(256))), expected.astype(np.float32))


def test_decoding_bytes_and_arrays_of_any_shape_agree() -> None:
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 256, size=(3, 161), dtype=np.uint8)
    table = mulaw.decode_table()
    np.testing.assert_array_equal(mulaw.decode(codes), table[codes])
    np.testing.assert_array_equal(mulaw.decode(codes[0].tobytes()), table[codes[0]])
    np.testing.assert_array_equal(mulaw.decode(codes[:, :160]), table[codes[:, :160]])
    assert mulaw.decode(b"").shape == (0,)


def test_encoding_a_decoded_code_gives_the_code_back() -> None:
    codes = bytes(range(256))
    again = mulaw.encode(mulaw.decode(codes))
    # 0x7F is negative zero, which G.711 encoders write as positive zero (0xFF).
    assert [c for c, a in zip(codes, again, strict=True) if c != a] == [0x7F]
    assert again[0x7F] == 0xFF


def test_encoding_stays_within_half_a_quantisation_step_and_clips() -> None:
    levels = np.unique(mulaw.decode(bytes(range(256))).astype(np.float64))
    rng = np.random.default_rng(2)
    x = rng.uniform(-0.97, 0.97, 5000)
    y = mulaw.decode(mulaw.encode(x)).astype(np.float64)
    i = np.searchsorted(levels, y)
    step = np.maximum(levels[np.minimum(i + 1, levels.size - 1)] - y, y - levels[np.maximum(i - 1, 0)])
    assert np.all(np.abs(y - x) <= step / 2 + 1.0 / 32768)
    assert mulaw.encode([5.0, -5.0]) == bytes([0x80, 0x00])


def test_the_digital_milliwatt_sequence_is_0_dbm0() -> None:
    milliwatt = bytes([0x1E, 0x0B, 0x0B, 0x1E, 0x9E, 0x8B, 0x8B, 0x9E]) * 100
    assert mulaw.level_dbm0(mulaw.decode(milliwatt)) == pytest.approx(0.0, abs=0.05)


@pytest.mark.parametrize("level", [0.0, -10.0, -30.0])
def test_a_sine_keeps_its_level_and_35_db_snr_through_the_codec(level: float) -> None:
    x = synth.tone(1004.0, 1000.0, level)
    y = mulaw.decode(mulaw.encode(x)).astype(np.float64)
    assert mulaw.level_dbm0(x) == pytest.approx(level, abs=0.01)
    assert mulaw.level_dbm0(y) == pytest.approx(level, abs=0.1)
    assert 10 * np.log10(np.mean(x**2) / np.mean((y - x) ** 2)) > 35.0


def test_a_0_dbm0_sine_peaks_3_17_db_below_the_largest_sine() -> None:
    assert 20 * np.log10(mulaw.dbm0_to_peak(0.0) / (8159 / 8192)) == pytest.approx(-3.17)
