"""G.711 mu-law codec (ITU-T G.711, North American / Twilio Media Streams audio).

Both directions are table driven and vectorised with numpy; ``audioop`` is not used
(Python 3.13 removed it).

Scale: floats are normalised so that full scale of a 16-bit linear PCM word is 1.0
(``int16 / 32768``). The largest mu-law code decodes to ``32124 / 32768 = 0.9803``.
The level reference of G.711 is in :data:`DBM0_PEAK`: a 0 dBm0 sine is 3.17 dB below
the largest sine the mu-law coder can carry (peak 8159 of 8192 in 14-bit units).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "DBM0_PEAK",
    "DBM0_RMS",
    "SILENCE_BYTE",
    "dbm0_to_peak",
    "decode",
    "decode_table",
    "encode",
    "level_dbm0",
]

SILENCE_BYTE = 0xFF
"""The mu-law byte for 0 (positive zero), used to pad frames."""

_BIAS = 0x84
_CLIP = 32635

# Peak of a 0 dBm0 sine: 3.17 dB below the mu-law overload sine (G.711 table 2a,
# peak 8159 in the 14-bit coder scale, i.e. 8159/8192 of our full scale).
DBM0_PEAK: float = (8159.0 / 8192.0) * 10.0 ** (-3.17 / 20.0)
"""Peak amplitude (full scale 1.0) of a sine at 0 dBm0 (about 0.6912)."""

DBM0_RMS: float = DBM0_PEAK / np.sqrt(2.0)
"""RMS value (full scale 1.0) of any signal at 0 dBm0 (about 0.4888)."""


def _build_decode_table() -> npt.NDArray[np.int16]:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def _build_encode_table() -> npt.NDArray[np.uint8]:
    # One entry per int16 value: 64 KiB, and encoding becomes a single gather.
    pcm = np.arange(-32768, 32768, dtype=np.int32)
    sign = np.where(pcm < 0, 0x80, 0x00)
    magnitude = np.minimum(np.abs(pcm), _CLIP) + _BIAS
    # Segment = position of the highest set bit above bit 7 (0..7).
    exponent = np.zeros_like(magnitude)
    for seg in range(1, 8):
        exponent[magnitude >= (0x100 << (seg - 1))] = seg
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    code = ~(sign | (exponent << 4) | mantissa) & 0xFF
    return code.astype(np.uint8)


_DECODE_INT16 = _build_decode_table()
_DECODE_FLOAT = _DECODE_INT16.astype(np.float32) / np.float32(32768.0)
_ENCODE = _build_encode_table()
# Two bytes at a time: a 64 Ki-entry table of float32 pairs, read as one uint64 per
# pair, halves the gathers of the hot path. Built from native-order uint16 views, so it
# is right on either endianness.
_PAIR_CODES = np.arange(65536, dtype=np.uint16).view(np.uint8).reshape(-1, 2)
_DECODE_PAIRS = np.ascontiguousarray(_DECODE_FLOAT[_PAIR_CODES]).view(np.uint64).reshape(-1)
_DECODE_INT16.setflags(write=False)
_DECODE_PAIRS.setflags(write=False)
_DECODE_FLOAT.setflags(write=False)
_ENCODE.setflags(write=False)


def decode_table() -> npt.NDArray[np.float32]:
    """Return the 256-entry decode table.

    Returns
    -------
    table : ndarray of float32, shape (256,)
        ``table[b]`` is the linear value (full scale 1.0) of mu-law byte ``b``.
        Read-only.
    """
    return _DECODE_FLOAT


def decode(data: bytes | bytearray | memoryview | npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """Decode G.711 mu-law bytes to linear samples.

    Parameters
    ----------
    data : bytes-like or ndarray of uint8, shape (n,) or (streams, n)
        Mu-law encoded samples, one byte each (8 kHz for telephone audio).

    Returns
    -------
    samples : ndarray of float32, same shape as ``data`` (1-D for bytes)
        Linear samples, full scale 1.0 (``int16 / 32768``), in ``[-0.9803, 0.9803]``.
    """
    if isinstance(data, np.ndarray):
        codes = np.ascontiguousarray(data, dtype=np.uint8)
    else:
        codes = np.frombuffer(data, dtype=np.uint8)
    if codes.size >= 64 and codes.size % 2 == 0:
        pairs = np.take(_DECODE_PAIRS, codes.reshape(-1).view(np.uint16))
        return pairs.view(np.float32).reshape(codes.shape)
    return _DECODE_FLOAT[codes]


def encode(x: npt.ArrayLike) -> bytes:
    """Encode linear samples to G.711 mu-law bytes.

    Parameters
    ----------
    x : array_like of float, shape (n,)
        Linear samples, full scale 1.0; values outside ``[-1, 1)`` are clipped.
        Multi-dimensional input is flattened in C order.

    Returns
    -------
    data : bytes, length n
        Mu-law bytes. Zero encodes to ``0xFF``.
    """
    return encode_array(x).tobytes()


def encode_array(x: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """Encode linear samples to mu-law codes, keeping the array shape.

    Parameters
    ----------
    x : array_like of float, any shape
        Linear samples, full scale 1.0; clipped to the int16 range.

    Returns
    -------
    codes : ndarray of uint8, same shape as ``x``
    """
    a = np.asarray(x, dtype=np.float64)
    pcm = np.clip(np.rint(a * 32768.0), -32768, 32767).astype(np.int32)
    return _ENCODE[pcm + 32768]


def dbm0_to_peak(level_dbm0: float) -> float:
    """Peak amplitude of a sine at ``level_dbm0``.

    Parameters
    ----------
    level_dbm0 : float
        Level in dBm0 (G.711 reference).

    Returns
    -------
    peak : float
        Sine peak amplitude on the full-scale-1.0 scale.
    """
    return float(DBM0_PEAK * 10.0 ** (level_dbm0 / 20.0))


def level_dbm0(x: npt.ArrayLike) -> float:
    """Measure the level (mean power) of a signal in dBm0.

    Parameters
    ----------
    x : array_like of float, shape (n,)
        Linear samples, full scale 1.0.

    Returns
    -------
    level : float
        ``10 log10(mean(x**2) / DBM0_RMS**2)``; ``-inf`` for digital silence.
    """
    a = np.asarray(x, dtype=np.float64)
    power = float(np.mean(a * a)) if a.size else 0.0
    if power <= 0.0:
        return float("-inf")
    return float(10.0 * np.log10(power / DBM0_RMS**2))
