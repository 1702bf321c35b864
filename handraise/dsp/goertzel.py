"""Goertzel filter bank: single-bin DFTs at chosen frequencies, over blocks of samples.

Two implementations of the same quantity,

    X(f) = sum_n x[n] exp(-2j pi f n / fs),   n = 0 .. N-1,

the complex output of a Goertzel filter run over one block (Goertzel's recursion followed
by its final complex step). :func:`goertzel` runs the recursion itself and is the
reference. :class:`GoertzelBank` precomputes the ``cos``/``sin`` basis once and evaluates
every block of every stream with one matrix product, which is what makes a bank of
hundreds of streams cheap in numpy (BLAS does the inner loop).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["GoertzelBank", "goertzel", "power"]


def goertzel(
    x: npt.ArrayLike, freqs: Sequence[float] | npt.ArrayLike, sample_rate: float
) -> npt.NDArray[np.complex128]:
    """Run Goertzel's recursion over the last axis of ``x``.

    Parameters
    ----------
    x : array_like of float, shape (..., n)
        Blocks of samples (any leading shape, e.g. ``(streams, n)``).
    freqs : sequence of float, shape (f,)
        Frequencies in Hz (need not fall on DFT bins).
    sample_rate : float
        Samples per second.

    Returns
    -------
    X : ndarray of complex128, shape (..., f)
        ``X[..., i] = sum_n x[..., n] * exp(-2j pi freqs[i] n / sample_rate)``.
    """
    a = np.asarray(x, dtype=np.float64)
    w = 2.0 * np.pi * np.asarray(freqs, dtype=np.float64) / sample_rate
    coeff = 2.0 * np.cos(w)
    s1 = np.zeros((*a.shape[:-1], w.size))
    s2 = np.zeros_like(s1)
    for n in range(a.shape[-1]):
        s0 = a[..., n, None] + coeff * s1 - s2
        s2 = s1
        s1 = s0
    n_total = a.shape[-1]
    # y[N-1] = s1 - e^{-jw} s2 is the DFT up to a phase of e^{jw(N-1)}.
    y = s1 - np.exp(-1j * w) * s2
    return np.asarray(y * np.exp(-1j * w * (n_total - 1)), dtype=np.complex128)


def power(X: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Squared magnitude ``|X|**2`` of Goertzel outputs (same shape, float)."""
    z = np.asarray(X)
    return np.asarray(z.real**2 + z.imag**2, dtype=np.float64)


class GoertzelBank:
    """A bank of Goertzel filters over fixed-length blocks, evaluated as a matrix product.

    Parameters
    ----------
    freqs : sequence of float, shape (f,)
        Frequencies in Hz.
    block : int
        Samples per block, ``n``.
    sample_rate : float
        Samples per second.
    dtype : numpy dtype, optional
        ``float32`` (default, fast) or ``float64``.

    Notes
    -----
    ``dft`` of a block equals :func:`goertzel` of it to rounding (about ``1e-6``
    relative in float32). The phase is referred to the first sample of each block;
    pass ``start`` to refer it to an absolute sample index instead.
    """

    def __init__(
        self,
        freqs: Sequence[float] | npt.ArrayLike,
        block: int,
        sample_rate: float,
        *,
        dtype: npt.DTypeLike = np.float32,
    ) -> None:
        self.freqs = np.asarray(freqs, dtype=np.float64)
        self.block = int(block)
        self.sample_rate = float(sample_rate)
        self.dtype = np.dtype(dtype)
        n = np.arange(self.block, dtype=np.float64)[:, None]
        angle = 2.0 * np.pi * self.freqs[None, :] * n / self.sample_rate
        # Columns: cos for every frequency, then -sin: X = x @ B -> [re..., im...].
        self.basis = np.ascontiguousarray(
            np.concatenate([np.cos(angle), -np.sin(angle)], axis=1).astype(self.dtype)
        )

    def basis_at(self, start: int) -> npt.NDArray[np.floating]:
        """The basis for a block whose first sample has absolute index ``start``.

        Parameters
        ----------
        start : int
            Absolute sample index of the block's first sample.

        Returns
        -------
        basis : ndarray of ``self.dtype``, shape (n, 2 f)
            ``x @ basis`` gives the real and imaginary parts (side by side) of
            ``sum_n x[n] exp(-2j pi f (start + n) / fs)``.
        """
        n = start + np.arange(self.block, dtype=np.float64)[:, None]
        angle = 2.0 * np.pi * self.freqs[None, :] * n / self.sample_rate
        return np.ascontiguousarray(
            np.concatenate([np.cos(angle), -np.sin(angle)], axis=1).astype(self.dtype)
        )

    @property
    def n_freqs(self) -> int:
        """Number of filters, ``f``."""
        return int(self.freqs.size)

    def dft_parts(self, blocks: npt.ArrayLike) -> npt.NDArray[np.floating]:
        """Real and imaginary parts of every filter output, side by side.

        Parameters
        ----------
        blocks : array_like of float, shape (..., n)
            Blocks of ``n = self.block`` samples.

        Returns
        -------
        parts : ndarray of ``self.dtype``, shape (..., 2 f)
            ``parts[..., :f]`` real parts, ``parts[..., f:]`` imaginary parts.
        """
        b = np.asarray(blocks, dtype=self.dtype)
        if b.shape[-1] != self.block:
            raise ValueError(f"blocks must have {self.block} samples, not {b.shape[-1]}")
        flat = b.reshape(-1, self.block)
        out = flat @ self.basis
        return out.reshape(*b.shape[:-1], 2 * self.n_freqs)

    def dft(
        self, blocks: npt.ArrayLike, start: npt.ArrayLike | None = None
    ) -> npt.NDArray[np.complexfloating]:
        """Complex output of every filter for every block.

        Parameters
        ----------
        blocks : array_like of float, shape (..., n)
            Blocks of ``n = self.block`` samples.
        start : array_like of int, shape broadcastable to ``blocks.shape[:-1]``, optional
            Absolute index of each block's first sample; the phase is then that of
            ``exp(-2j pi f (start + n) / fs)``.

        Returns
        -------
        X : ndarray of complex, shape (..., f)
        """
        parts = self.dft_parts(blocks)
        f = self.n_freqs
        ctype = np.complex64 if self.dtype == np.float32 else np.complex128
        X = np.empty((*parts.shape[:-1], f), dtype=ctype)
        X.real = parts[..., :f]
        X.imag = parts[..., f:]
        if start is not None:
            s = np.asarray(start, dtype=np.float64)[..., None]
            X *= np.exp(-2j * np.pi * self.freqs * s / self.sample_rate).astype(ctype)
        return X
