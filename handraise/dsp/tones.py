"""The DTMF keypad: frequencies and key layout (ITU-T Q.23)."""

from __future__ import annotations

__all__ = ["HIGH_FREQS", "KEYPAD", "KEYS", "LOW_FREQS", "key_freqs"]

LOW_FREQS: tuple[float, ...] = (697.0, 770.0, 852.0, 941.0)
"""Row (low group) frequencies in Hz."""

HIGH_FREQS: tuple[float, ...] = (1209.0, 1336.0, 1477.0, 1633.0)
"""Column (high group) frequencies in Hz."""

KEYPAD: tuple[str, ...] = ("123A", "456B", "789C", "*0#D")
"""``KEYPAD[row][col]`` is the key sounding ``LOW_FREQS[row]`` + ``HIGH_FREQS[col]``."""

KEYS: str = "0123456789*#ABCD"
"""All 16 keys."""

_POSITION = {key: (r, c) for r, line in enumerate(KEYPAD) for c, key in enumerate(line)}


def key_freqs(key: str) -> tuple[float, float]:
    """Return the ``(low, high)`` frequencies in Hz of one key.

    Parameters
    ----------
    key : str
        One of ``0-9 * # A-D`` (lower-case ``a-d`` accepted).

    Returns
    -------
    low, high : float
        Frequencies in Hz.

    Raises
    ------
    ValueError
        If ``key`` is not a DTMF key.
    """
    try:
        row, col = _POSITION[key.upper()]
    except KeyError:
        raise ValueError(f"not a DTMF key: {key!r}") from None
    return LOW_FREQS[row], HIGH_FREQS[col]


def key_position(key: str) -> tuple[int, int]:
    """Return ``(row, col)`` of ``key`` in :data:`KEYPAD`."""
    try:
        return _POSITION[key.upper()]
    except KeyError:
        raise ValueError(f"not a DTMF key: {key!r}") from None
