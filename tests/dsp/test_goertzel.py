"""The Goertzel bank against a direct DFT and Goertzel's own recursion."""

from __future__ import annotations

import numpy as np
import pytest

from handraise.dsp.goertzel import GoertzelBank, goertzel, power

FREQS = [697.0, 941.0, 1209.0, 1633.0, 123.4]


def direct_dft(x: np.ndarray, freqs: list[float], start: int = 0) -> np.ndarray:
    n = start + np.arange(x.shape[-1])
    return x @ np.exp(-2j * np.pi * np.outer(n, freqs) / 8000.0)


def test_the_recursion_equals_the_direct_dft_over_many_streams() -> None:
    x = np.random.default_rng(1).standard_normal((5, 205))
    np.testing.assert_allclose(goertzel(x, FREQS, 8000), direct_dft(x, FREQS), atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_bank_equals_the_recursion_within_float_precision(dtype: type) -> None:
    x = np.random.default_rng(2).standard_normal((7, 3, 102))
    bank = GoertzelBank(FREQS, 102, 8000, dtype=dtype)
    tol = 2e-4 if dtype is np.float32 else 1e-9
    got = bank.dft(x)
    assert got.shape == (7, 3, len(FREQS))
    np.testing.assert_allclose(got, goertzel(x, FREQS, 8000), atol=tol * 102)


def test_absolute_phase_follows_the_block_start() -> None:
    x = np.random.default_rng(3).standard_normal((4, 40))
    starts = np.array([0, 40, 123456, 8_000_040])
    bank = GoertzelBank(FREQS, 40, 8000, dtype=np.float64)
    want = np.stack([direct_dft(x[i], FREQS, int(s)) for i, s in enumerate(starts)])
    np.testing.assert_allclose(bank.dft(x, start=starts), want, atol=1e-6)
    np.testing.assert_allclose(x[2] @ bank.basis_at(123456)[:, :5], want[2].real, atol=1e-6)


def test_a_sine_at_a_filter_frequency_gives_half_its_amplitude_times_the_block() -> None:
    # 1000 Hz makes whole cycles in 160 samples, so the negative-frequency image is zero.
    n = np.arange(160)
    x = 0.3 * np.cos(2 * np.pi * 1000.0 * n / 8000 + 0.7)
    p = power(GoertzelBank([1000.0, 697.0], 160, 8000, dtype=np.float64).dft(x))
    assert p[0] == pytest.approx((0.3 * 160 / 2) ** 2, rel=1e-9)
    assert p[1] < p[0] * 1e-2


def test_blocks_of_the_wrong_length_are_refused() -> None:
    with pytest.raises(ValueError, match="160"):
        GoertzelBank(FREQS, 160, 8000).dft(np.zeros(100))
