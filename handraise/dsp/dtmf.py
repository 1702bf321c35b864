"""Streaming DTMF detector (ITU-T Q.23/Q.24) for 8 kHz telephone audio.

Method
------
Audio is cut into 5 ms sub-blocks (40 samples). For each sub-block a Goertzel bank
(:class:`~handraise.dsp.goertzel.GoertzelBank`, one matrix product for all streams)
gives the complex DFT at the eight DTMF frequencies, with its phase referred to absolute
time, and the sub-block energy. Every 5 ms a 20 ms analysis window (four sub-blocks,
160 samples) is formed by adding the last four results, so the window slides by 5 ms at
the cost of a 5 ms block.

A window holds a key when all of these hold for the strongest tone of each group:

* **frequency**: the phase advance of the tone between the two 10 ms halves of the
  window measures its frequency; it must be within 2.2 % of nominal (Q.24: accept
  1.5 %, reject 3.5 %), and the pair must not be a 2:1 or 3:2 harmonic pair (within
  0.8 %), which a single musical note makes and a real key cannot (its ratios stay at
  least 1.3 % away even with both tones 1.5 % off);
* **level**: knowing the frequency error, the window's attenuation of an off-nominal
  tone is undone, giving each tone's true power; both must be above -38 dBm0;
* **twist**: high minus low group between -9.5 and +5.5 dB (must accept -8..+4);
* **balance**: each tone is present in both halves (power ratio at least 0.3);
* **purity**: the two tones carry at least 90 % of the window's energy, not counting
  the window's mean (rumble and DC are outside the voice band; pink noise puts much of
  its power there). This rejects speech and music, white noise beyond about 11 dB SNR,
  and windows only partly filled by a tone, which is what makes the duration rules
  exact.

Harmonic series
---------------
A voice or an instrument can pass all of the above: when two of its harmonics n and m
fall on a key's pair and the formants put nearly all the energy there. This is what let
``*`` through: its tones (941, 1209 Hz) are 3.8 % off the 4:3 ratio and 2.8 % off 5:4,
both within reach of the 2.2 % frequency tolerance on each tone, so harmonics 3 and 4 of
a child's or a high female voice at 308 Hz (924 + 1232 Hz), or 4 and 5 of a soprano at
240 Hz (960 + 1200 Hz), are a ``*``; the other false keys were 4:7 pairs (``5``, ``9``,
``D``: 1.735 is 0.9 % off 7:4; so is ``1``). The ratio cannot be rejected outright as
2:1 and 3:2 are: a real ``*`` with its tones 1.5 % off inwards is at 5:4 itself. So a
window whose measured ratio is within 1.2 % of some m:n (coprime, n < m <= 8) is a
*suspect*; if it would start a key, one Hann-windowed FFT of it measures the power on
the other multiples k f0 of the implied fundamental in the telephone band, and the power
halfway between them, (k + 1/2) f0. It is a harmonic sound, not a key, if the series
holds at least -20 dB of the weaker tone's power and 12 dB more than the midpoints
(white and pink noise put about as much between harmonics as on them: keys at 12-30 dB
SNR had the series at -10 to -41 dB but never more than 9 dB above the midpoints; the
false keys had it at -14 to -1 dB and 16 to 35 dB above). Only a window that would start
a key is looked at, so a held key costs nothing more; the samples of the window come
from the current frame and a per-stream tail of the last 15 ms.

Measured on :func:`handraise.dsp.corpus.wide_corpus` (240 min each of seeds 7 and 8: 216
min speech in 12 languages and English accents, a third child-like pitch, a third at
330-450 words/min; 72 min speech over music; 73 min singing; 120 min music), before ->
after the check: speech 6 false keys (1.7/h: ``*`` x 2, ``5``, ``9`` x 3 from one
Mandarin take) -> 0; speech over music 1 (``D``) -> 0; singing 107 (88/h, all ``*``) ->
0; music 0 -> 0; false commands 0 -> 0. Seed 9, not looked at while choosing the
thresholds: 47 false keys (speech ``D``, speech over music ``A``, singing 45 ``*``) ->
0. The Q.24 table passes unchanged, and so does the bench's detection-vs-SNR curve.
Keys over the caller's own speech lose a little (bench ``talk_down``, speech 15 dB
under the tones: 100 -> 95 %), when the voice's harmonics happen to line up with the
series a key's pair implies. Cost (bench/dtmf.py workload, 1000 streams, one core):
about +9 % per stream-frame through :meth:`DetectorBank.feed`, +13-15 % through
:meth:`DetectorBank.feed_rows`, which also copies each stream's 15 ms tail.

Timing: a key starts once three windows hold it (three windows 5 ms apart are all
90 % full only for a tone of about 26 ms or more: measured, tones up to 24 ms are never
accepted, tones of 33 ms and more always); up to six windows without it may fall
between those three, so a dropout does not restart the count. It ends after
eight consecutive windows without it (a 10 ms dropout spoils at most six, a 40 ms pause
at least eleven). A different key confirmed in the meantime ends the current one.

Cheap screening keeps a bank fast: windows whose two strongest bins hold less than a
third of the energy, or that are too quiet, are rejected before the per-window checks,
and the state machine runs only for streams with something going on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from handraise.dsp import mulaw
from handraise.dsp.goertzel import GoertzelBank
from handraise.dsp.tones import HIGH_FREQS, KEYPAD, LOW_FREQS

__all__ = [
    "DetectorBank",
    "DigitEvent",
    "DigitStart",
    "DtmfDetector",
    "Event",
    "detect",
]

SAMPLE_RATE = 8000
SUB_BLOCK = 40
"""Samples per sub-block (5 ms): the hop of the analysis window."""
WINDOW_BLOCKS = 4
WINDOW = SUB_BLOCK * WINDOW_BLOCKS
"""Samples per analysis window (20 ms)."""
START_HITS = 3
"""Windows holding a key (up to ``CAND_BRIDGE`` misses apart) before it is started."""
END_MISSES = 8
"""Consecutive windows without the key before it is reported as ended."""
SCALAR_STREAMS = 16
"""Up to this many active streams, the state machine runs in plain Python."""
CAND_BRIDGE = 6
"""Windows without the key that a not-yet-confirmed key may span (a 10 ms dropout)."""
FREQ_TOLERANCE = 0.022
"""Largest accepted relative frequency error of each tone."""
MIN_TONE_DBM0 = -38.0
"""Weakest accepted tone (each of the pair), dBm0."""
TWIST_MIN_DB = -9.5
TWIST_MAX_DB = 5.5
PURITY = 0.9
"""Least fraction of the window energy the two tones must carry."""
HARMONIC_GUARD = 0.008
"""Pairs whose measured ratio is this close to 2:1 or 3:2 are one harmonic sound."""
BALANCE = 0.3
"""Least power ratio between the window's two halves, for each tone."""
SCREEN = 0.33
"""Least fraction of energy in the two strongest bins (uncorrected) to look closer."""
SERIES_MATCH = 0.012
"""A pair whose measured ratio is this close to m:n (n < m <= 8) may be harmonics n, m."""
SERIES_LEVEL_DB = -20.0
"""Power on the other harmonics of such a pair, relative to its weaker tone, from which
it is taken for a voice or an instrument (Hann-windowed powers)..."""
SERIES_CONTRAST_DB = 12.0
"""... if that power is also this much above the power halfway between the harmonics
(white or pink noise has as much there as on them)."""
SERIES_MAX = 8
"""Highest harmonic number of the pairs the harmonic-series check considers."""
SERIES_LOW_HZ = 300.0
SERIES_TOP_HZ = 3500.0
"""The band in which the check looks for the other harmonics (the telephone band: below
300 Hz a line may carry hum, and pink noise much of its power)."""

_FREQS = np.array(LOW_FREQS + HIGH_FREQS, dtype=np.float64)
_FREQ_INT = np.array([round(f) for f in _FREQS], dtype=np.int64)
_KEYS = "".join(KEYPAD)  # code = 4 * row + col
_P_MIN = float(mulaw.DBM0_RMS**2 * 10.0 ** (MIN_TONE_DBM0 / 10.0))
_HALF = WINDOW // 2
_TAIL = WINDOW - SUB_BLOCK
"""Samples of a stream kept from one call to the next: the harmonic-series check needs
the samples of a whole window, which may begin three sub-blocks back."""


def _series_tables() -> tuple[
    npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]
]:
    """The harmonic pairs worth checking, and for each which harmonics count.

    Pairs (n, m): coprime, n < m <= 8, except 2:1 and 3:2, which the ratio guard
    rejects outright. Masks, shape (pairs, 72): the first 36 columns weigh harmonics
    k = 1 .. 36 (all but n and m), the last 36 the midpoints k + 1/2 (all but those next
    to n and m: for a low fundamental they are inside a tone's main lobe). The second
    masks, for clipped windows, also leave out the third-order products of the pair,
    2n - m, 2m - n, 3n, 3m, 2n + m and 2m + n.
    """
    pairs = [
        (n, m, m / n)
        for n in range(1, SERIES_MAX)
        for m in range(n + 1, SERIES_MAX + 1)
        if np.gcd(n, m) == 1 and (n, m) not in ((1, 2), (2, 3))
    ]
    table = np.array(pairs, dtype=np.float64)
    k = np.arange(1, _HARMONICS + 1)[None, :]
    n, m = table[:, :1], table[:, 1:2]
    on = (k != n) & (k != m)
    mid = on & (k != n - 1) & (k != m - 1)
    # A key loud enough to be clipped by the codec has third-order products, which fall
    # on the series too: in a clipped window those harmonics are left out of it.
    on_clipped = on.copy()
    for a, b in ((2, -1), (-1, 2), (3, 0), (0, 3), (2, 1), (1, 2)):
        on_clipped &= k != a * n + b * m
    masks = np.concatenate([on, mid], axis=1).astype(np.float64)
    return table, masks, np.concatenate([on_clipped, mid], axis=1).astype(np.float64)


_HARMONICS = 36
"""Harmonics looked at: enough to reach 3.5 kHz from the lowest fundamental, 697 Hz / 7."""
_SERIES, _SERIES_MASKS, _SERIES_MASKS_CLIPPED = _series_tables()
_CLIPPED = 0.9 * float(mulaw.decode(b"\x80")[0])
"""A window with a sample this close to mu-law's largest value is taken as clipped."""
_SERIES_INV = 1.0 / _SERIES[:, 2]
_KK = np.concatenate([np.arange(1, _HARMONICS + 1), np.arange(1, _HARMONICS + 1) + 0.5])
_HANN = np.hanning(WINDOW + 2)[1:-1]
_NFFT = 512
_BAND_BINS = (
    round(SERIES_LOW_HZ * _NFFT / SAMPLE_RATE),
    round(SERIES_TOP_HZ * _NFFT / SAMPLE_RATE) + 1,
)
_SERIES_LEVEL = 10.0 ** (SERIES_LEVEL_DB / 10.0)
_SUSPECT = 16
"""Added to a window's key code when the harmonic-series check must see it."""
_NO_SUSPECTS = (np.zeros(0, dtype=np.intp), np.zeros((0, 2)))
_SERIES_CONTRAST = 10.0 ** (SERIES_CONTRAST_DB / 10.0)


@dataclass(frozen=True, slots=True)
class DigitStart:
    """A key has been confirmed and is still sounding (low-latency notice).

    Attributes
    ----------
    digit : str
        ``0-9``, ``*``, ``#`` or ``A-D``.
    start_ms : float
        When the tone began, in ms from the start of the stream (±10 ms).
    """

    digit: str
    start_ms: float


@dataclass(frozen=True, slots=True)
class DigitEvent:
    """A complete key press.

    Attributes
    ----------
    digit : str
        ``0-9``, ``*``, ``#`` or ``A-D``.
    start_ms, end_ms : float
        When the tone began and ended, in ms from the start of the stream (±10 ms).
    """

    digit: str
    start_ms: float
    end_ms: float

    @property
    def duration_ms(self) -> float:
        """``end_ms - start_ms``."""
        return self.end_ms - self.start_ms


Event = DigitStart | DigitEvent


def _bases() -> npt.NDArray[np.float32]:
    """Goertzel bases with absolute phase for every sub-block position in one second.

    DTMF frequencies are whole hertz, so the phase pattern repeats every 8000 samples
    (200 sub-blocks) however long a stream runs: shape (200, 40, 17), the last column
    summing the samples.
    """
    bank = GoertzelBank(_FREQS, SUB_BLOCK, SAMPLE_RATE, dtype=np.float64)
    period = SAMPLE_RATE // SUB_BLOCK
    table = np.stack([bank.basis_at(SUB_BLOCK * k) for k in range(period)])
    # A 17th column of ones gives each sub-block's sum, to take the DC out of energies.
    ones = np.ones((period, SUB_BLOCK, 1))
    return np.ascontiguousarray(np.concatenate([table, ones], axis=2).astype(np.float32))


_BASES = _bases()
_PERIOD = _BASES.shape[0]
_COLS = _BASES.shape[2]


def _rotations() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """cos and sin of each frequency's phase advance over k sub-blocks, k = 0 .. 199.

    Moving a stream's stored sub-block DFTs k sub-blocks later in the phase pattern
    multiplies them by ``exp(-j w 40 k)``: shape (200, 8) each.
    """
    k = np.arange(_PERIOD, dtype=np.float64)[:, None]
    angle = 2.0 * np.pi * _FREQS[None, :] * SUB_BLOCK * k / SAMPLE_RATE
    return np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)


_ROT_COS, _ROT_SIN = _rotations()


class DetectorBank:
    """DTMF detectors for many independent streams, advanced together.

    :meth:`feed` advances every stream by the same number of samples; :meth:`feed_rows`
    advances only some of them (a media server's tick: the streams whose frame has
    arrived), so a late or missing frame of one stream holds back no other. Each stream
    keeps its own state and its own clock, and gets the same events as a
    :class:`DtmfDetector` fed the same samples. A slot can be reused for a new call with
    :meth:`reset`, and the bank can :meth:`grow`.

    Parameters
    ----------
    n_streams : int
        Number of streams.
    """

    def __init__(self, n_streams: int) -> None:
        if n_streams < 1:
            raise ValueError("n_streams must be at least 1")
        self.n_streams = n_streams
        s = n_streams
        # Per stream: the phase-pattern index (in samples) its next sub-block is
        # evaluated at; everything stored about a stream is in that frame of reference.
        self._next = np.zeros(s, dtype=np.int64)
        self._pending = np.zeros((s, 0), dtype=np.float32)
        self._hist_x = np.zeros((WINDOW_BLOCKS - 1, s, _COLS), dtype=np.float32)
        self._hist_e = np.zeros((WINDOW_BLOCKS - 1, s), dtype=np.float32)
        # The last _TAIL samples of each stream; may be a view of the last call's
        # decoded samples (which nothing else holds), to spare a copy per tick.
        self._hist_a = np.zeros((s, _TAIL), dtype=np.float32)
        self._t0 = np.zeros(s, dtype=np.int64)
        self._cur = np.full(s, -1, dtype=np.int16)
        self._cand = np.full(s, -1, dtype=np.int16)
        self._run = np.zeros(s, dtype=np.int16)
        self._miss = np.zeros(s, dtype=np.int16)
        self._cmiss = np.zeros(s, dtype=np.int16)
        self._cand_start = np.zeros(s, dtype=np.int64)
        self._start = np.zeros(s, dtype=np.int64)
        self._last_end = np.zeros(s, dtype=np.int64)
        self._busy = False  # any stream mid-key or counting a candidate

    # -- public API ---------------------------------------------------------------

    def feed(self, frames: npt.ArrayLike) -> list[tuple[int, Event]]:
        """Advance every stream by the same number of mu-law samples.

        Parameters
        ----------
        frames : array_like of uint8, shape (n_streams, n)
            Mu-law bytes, one row per stream; ``n`` may be any length, including 0.

        Returns
        -------
        events : list of (int, DigitStart or DigitEvent)
            ``(stream index, event)`` in time order within each stream.
        """
        codes = np.asarray(frames, dtype=np.uint8)
        if codes.ndim != 2 or codes.shape[0] != self.n_streams:
            raise ValueError(f"frames must have shape ({self.n_streams}, n)")
        return self._feed_owned(mulaw.decode(codes))

    def feed_linear(self, x: npt.ArrayLike) -> list[tuple[int, Event]]:
        """Advance every stream by the same number of linear samples.

        Parameters
        ----------
        x : array_like of float, shape (n_streams, n)
            Samples at 8 kHz, full scale 1.0.

        Returns
        -------
        events : list of (int, DigitStart or DigitEvent)
        """
        # A copy: the bank keeps a view of its input, which the caller might change.
        a = np.array(x, dtype=np.float32)
        if a.ndim != 2 or a.shape[0] != self.n_streams:
            raise ValueError(f"samples must have shape ({self.n_streams}, n)")
        return self._feed_owned(a)

    def _feed_owned(self, a: npt.NDArray[np.float32]) -> list[tuple[int, Event]]:
        if self._pending.shape[1]:
            a = np.concatenate([self._pending, a], axis=1)
        usable = a.shape[1] - a.shape[1] % SUB_BLOCK
        self._pending = a[:, usable:].copy()
        if usable == 0:
            return []
        rows = np.arange(self.n_streams)
        return self._process(a[:, :usable], rows, self._align(rows, None))

    def feed_rows(
        self, rows: npt.ArrayLike, frames: npt.ArrayLike, *, clock: int | None = None
    ) -> list[tuple[int, Event]]:
        """Advance some streams by the same number of mu-law samples; the others wait.

        Parameters
        ----------
        rows : array_like of int, shape (r,)
            Distinct stream indices.
        frames : array_like of uint8, shape (r, n)
            Mu-law bytes, one row per entry of ``rows``; ``n`` a multiple of 40 (5 ms).
        clock : int, optional
            Sample index of the phase pattern to evaluate these samples at. Streams fed
            at one clock share one matrix product; a stream whose own clock differs (it
            missed a call, or had an extra one) is moved to it, exactly. A media server
            passes ``160 * tick``; omitted, the first row's clock is used.

        Returns
        -------
        events : list of (int, DigitStart or DigitEvent)
            ``(stream index, event)`` in time order within each stream.

        Raises
        ------
        ValueError
            If shapes do not match, ``n`` is not a multiple of 40, or partial samples
            from :meth:`feed` are pending.
        """
        idx = np.asarray(rows, dtype=np.intp).reshape(-1)
        codes = np.asarray(frames, dtype=np.uint8)
        if codes.ndim != 2 or codes.shape[0] != idx.size:
            raise ValueError(f"frames must have shape ({idx.size}, n)")
        if codes.shape[1] % SUB_BLOCK or self._pending.shape[1]:
            raise ValueError("feed_rows needs whole 5 ms sub-blocks and nothing pending")
        if idx.size == 0 or codes.shape[1] == 0:
            return []
        return self._process(mulaw.decode(codes), idx, self._align(idx, clock))

    def flush(self, rows: npt.ArrayLike | None = None) -> list[tuple[int, Event]]:
        """End every key still sounding (call at the end of the audio).

        Parameters
        ----------
        rows : array_like of int, optional
            Only these streams (a call that ended); default all.

        Returns
        -------
        events : list of (int, DigitEvent)
        """
        idx = np.arange(self.n_streams) if rows is None else np.asarray(rows, dtype=np.intp)
        events: list[tuple[int, Event]] = []
        for s in idx[self._cur[idx] >= 0]:
            events.append((int(s), self._end_event(int(s))))
        self._cur[idx] = -1
        self._run[idx] = 0
        self._cand[idx] = -1
        self._miss[idx] = 0
        self._cmiss[idx] = 0
        self._busy = bool((self._cur >= 0).any() or (self._run > 0).any())
        return events

    def grow(self, n_streams: int) -> None:
        """Make room for ``n_streams`` streams in all; the new ones start idle at 0 ms.

        Parameters
        ----------
        n_streams : int
            New number of streams (not fewer than now).
        """
        extra = n_streams - self.n_streams
        if extra < 0:
            raise ValueError("a bank cannot shrink")
        if extra == 0:
            return
        if self._pending.shape[1]:
            raise ValueError("cannot grow while partial samples are pending")
        clock = int(self._next.max()) if self.n_streams else 0

        def more(a: npt.NDArray[Any], fill: float, axis: int = 0) -> npt.NDArray[Any]:
            shape = list(a.shape)
            shape[axis] = extra
            return np.concatenate([a, np.full(shape, fill, dtype=a.dtype)], axis=axis)

        self._pending = more(self._pending, 0.0)
        self._hist_x = more(self._hist_x, 0.0, axis=1)
        self._hist_e = more(self._hist_e, 0.0, axis=1)
        self._hist_a = more(self._hist_a, 0.0)
        self._next = more(self._next, clock)
        self._t0 = more(self._t0, clock)
        for name, fill in (("_cur", -1), ("_cand", -1), ("_run", 0), ("_miss", 0),
                           ("_cmiss", 0), ("_cand_start", 0), ("_start", 0),
                           ("_last_end", 0)):
            setattr(self, name, more(getattr(self, name), fill))
        self.n_streams = n_streams

    def reset(self, stream: int) -> None:
        """Forget one stream's state; its clock restarts at 0 ms (for a new call)."""
        self._hist_x[:, stream] = 0
        self._hist_e[:, stream] = 0
        self._hist_a[stream] = 0
        self._pending[stream] = 0
        self._t0[stream] = self._next[stream] + self._pending.shape[1]
        self._cur[stream] = -1
        self._cand[stream] = -1
        self._run[stream] = 0
        self._miss[stream] = 0
        self._cmiss[stream] = 0

    # -- internals ----------------------------------------------------------------

    def _ms(self, stream: int, n: int) -> float:
        # A first window may reach a few samples before the stream began.
        return max(0, n - int(self._t0[stream])) * 1000.0 / SAMPLE_RATE

    def _end_event(self, s: int) -> DigitEvent:
        return DigitEvent(
            _KEYS[int(self._cur[s])],
            self._ms(s, int(self._start[s])),
            self._ms(s, int(self._last_end[s])),
        )

    def _align(self, rows: npt.NDArray[np.intp], clock: int | None) -> int:
        """Bring ``rows`` to one clock (samples) and return it.

        A stream's stored sub-block DFTs carry the phase of the pattern index they were
        evaluated at; moving the stream by ``d`` samples rotates them by ``exp(-j w d)``
        and shifts its time origin and marks by ``d``, so its events do not change.
        """
        nxt = self._next[rows]
        g = int(nxt[0]) if clock is None else int(clock)
        if g % SUB_BLOCK:
            raise ValueError("clock must be a multiple of 40 samples")
        d = g - nxt
        off = np.flatnonzero(d)
        if off.size == 0:
            return g
        r, dd = rows[off], d[off]
        k = (dd // SUB_BLOCK) % _PERIOD
        c, sn = _ROT_COS[k], _ROT_SIN[k]  # (o, 8)
        h = self._hist_x[:, r]  # (3, o, 17), a copy
        re = h[..., :8].copy()
        im = h[..., 8:16].copy()
        h[..., :8] = re * c + im * sn
        h[..., 8:16] = im * c - re * sn
        self._hist_x[:, r] = h
        for arr in (self._t0, self._cand_start, self._start, self._last_end):
            arr[r] += dd
        self._next[r] = g
        return g

    def _process(
        self, a: npt.NDArray[np.float32], rows: npt.NDArray[np.intp], g: int
    ) -> list[tuple[int, Event]]:
        # Time-major layout (sub-block, stream, 16): window slices stay contiguous.
        s, usable = a.shape
        m = usable // SUB_BLOCK
        k = WINDOW_BLOCKS - 1
        whole = s == self.n_streams
        blocks = a.reshape(s, m, SUB_BLOCK).transpose(1, 0, 2)  # (m, s, 40)
        first = (g // SUB_BLOCK) % _PERIOD
        wraps = first + m > _PERIOD
        # (m, 40, 17); a view unless the one-second phase pattern wraps around.
        bases = _BASES[(first + np.arange(m)) % _PERIOD] if wraps else _BASES[first : first + m]
        xc = np.empty((m + k, s, _COLS), dtype=np.float32)
        xc[:k] = self._hist_x if whole else self._hist_x[:, rows]
        np.matmul(blocks, bases, out=xc[k:])
        ec = np.empty((m + k, s), dtype=np.float32)
        ec[:k] = self._hist_e if whole else self._hist_e[:, rows]
        ec[k:] = np.einsum("msn,msn->ms", blocks, blocks)
        if whole:
            self._hist_x = xc[m:].copy()
            self._hist_e = ec[m:].copy()
        else:
            self._hist_x[:, rows] = xc[m:]
            self._hist_e[:, rows] = ec[m:]
        # Windows of four sub-blocks are two pairs: the pairs are the window's halves.
        pairs = xc[:-1] + xc[1:]
        y = pairs[:m] + pairs[2:]
        epairs = ec[:-1] + ec[1:]
        ew = epairs[:m] + epairs[2:]

        def windows(flat: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
            # The 160 samples of windows (flat index j * s + r): the first ones may be
            # in the stored tail of the stream, which moves on only after this call.
            out = np.empty((flat.size, WINDOW))
            for i, f in enumerate(flat.tolist()):
                j, r = divmod(f, s)
                cut = _TAIL - SUB_BLOCK * j  # samples from the tail, if positive
                if cut > 0:
                    out[i, :cut] = self._hist_a[rows[r], _TAIL - cut :]
                    out[i, cut:] = a[r, : WINDOW - cut]
                else:
                    out[i] = a[r, -cut : WINDOW - cut]
            return out

        codes, (sus_flat, sus_est) = _classify(y, pairs[:m], pairs[2:], ew)

        def harmonic(flat: npt.NDArray[np.intp]) -> npt.NDArray[np.bool_]:
            # Suspect windows (flat index j * s + r) about to start a key.
            est = sus_est[np.searchsorted(sus_flat, flat)]
            return _harmonic_series(windows(flat), est)

        n0 = g
        self._next[rows] = g + usable
        events: list[tuple[int, Event]] = []
        # codes is None in the common case: nothing key-like anywhere, nobody mid-key.
        if codes is not None or self._busy:
            if codes is None:
                codes = np.full((m, s), -1, dtype=np.int16)
            events = self._advance(np.ascontiguousarray(codes.T), n0, rows, harmonic)
            self._busy = bool((self._cur >= 0).any() or (self._run > 0).any())
        # Only now: the harmonic check above reads the samples before this call's.
        if usable >= _TAIL:
            tail = a[:, usable - _TAIL :]
        else:
            old = self._hist_a if whole else self._hist_a[rows]
            tail = np.concatenate([old, a], axis=1)[:, -_TAIL:]
        if whole:
            self._hist_a = tail
        else:
            self._hist_a[rows] = tail
        return events

    def _advance(
        self,
        codes: npt.NDArray[np.int16],
        n0: int,
        rows: npt.NDArray[np.intp],
        harmonic: Callable[[npt.NDArray[np.intp]], npt.NDArray[np.bool_]],
    ) -> list[tuple[int, Event]]:
        """Run the state machine over ``codes`` (one row per entry of ``rows``, one
        column per window); ``harmonic`` checks suspect windows (``_SUSPECT + code``)
        that would start a key, by flat index ``j * len(rows) + row``."""
        busy = (self._cur[rows] >= 0) | (self._run[rows] > 0)
        loc = np.flatnonzero(busy | (codes >= 0).any(axis=1))
        if loc.size == 0:
            return []
        act = rows[loc]
        s = rows.size
        if act.size <= SCALAR_STREAMS:
            return self._advance_scalar(codes[loc], n0, act, loc, s, harmonic)
        events: list[tuple[int, Event]] = []
        cur = self._cur[act]
        cand = self._cand[act]
        run = self._run[act]
        miss = self._miss[act]
        cmiss = self._cmiss[act]
        cand_start = self._cand_start[act]
        start = self._start[act]
        last_end = self._last_end[act]
        sub = codes[loc]
        for j in range(sub.shape[1]):
            w_start = n0 + SUB_BLOCK * (j - (WINDOW_BLOCKS - 1))
            w_end = n0 + SUB_BLOCK * (j + 1)
            d = sub[:, j]
            flagged = d >= _SUSPECT
            if flagged.any():
                d = np.where(flagged, d - _SUSPECT, d).astype(np.int16)
                would = flagged & (d == cand) & (run + 1 >= START_HITS) & (d != cur)
                if would.any():
                    w_i = np.flatnonzero(would)
                    d[w_i[harmonic(j * s + loc[w_i])]] = -1
            valid = d >= 0
            in_digit = cur >= 0
            same = valid & (d == cand)
            fresh = valid & ~same
            cmiss = np.where(valid, 0, np.minimum(cmiss + 1, CAND_BRIDGE + 1)).astype(np.int16)
            lapsed = cmiss > CAND_BRIDGE
            grown = np.minimum(run + 1, START_HITS)
            run = np.where(same, grown, np.where(fresh, 1, np.where(lapsed, 0, run)))
            run = run.astype(np.int16)
            cand_start = np.where(fresh, w_start, cand_start)
            cand = np.where(fresh, d, np.where(lapsed, -1, cand)).astype(np.int16)
            cont = in_digit & valid & (d == cur)
            missed = np.minimum(miss + 1, END_MISSES)
            miss = np.where(cont, 0, np.where(in_digit, missed, 0)).astype(np.int16)
            last_end = np.where(cont, w_end, last_end)
            confirm = valid & (run >= START_HITS) & (d != cur)
            ending = in_digit & ((miss >= END_MISSES) | confirm)
            if ending.any() or confirm.any():
                for i in np.flatnonzero(ending):
                    st = int(act[i])
                    events.append(
                        (
                            st,
                            DigitEvent(
                                _KEYS[int(cur[i])],
                                self._ms(st, int(start[i])),
                                self._ms(st, int(last_end[i])),
                            ),
                        )
                    )
                cur = np.where(ending, -1, cur).astype(np.int16)
                for i in np.flatnonzero(confirm):
                    st = int(act[i])
                    notice = DigitStart(_KEYS[int(d[i])], self._ms(st, int(cand_start[i])))
                    events.append((st, notice))
                cur = np.where(confirm, d, cur).astype(np.int16)
                start = np.where(confirm, cand_start, start)
                last_end = np.where(confirm, w_end, last_end)
                miss = np.where(confirm, 0, miss).astype(np.int16)
        self._cur[act] = cur
        self._cand[act] = cand
        self._run[act] = run
        self._miss[act] = miss
        self._cmiss[act] = cmiss
        self._cand_start[act] = cand_start
        self._start[act] = start
        self._last_end[act] = last_end
        return events

    def _advance_scalar(
        self,
        codes: npt.NDArray[np.int16],
        n0: int,
        act: npt.NDArray[np.intp],
        loc: npt.NDArray[np.intp],
        s: int,
        harmonic: Callable[[npt.NDArray[np.intp]], npt.NDArray[np.bool_]],
    ) -> list[tuple[int, Event]]:
        """The same state machine as :meth:`_advance`, one stream at a time in plain
        Python: cheaper than numpy calls when only a few streams are active. ``codes``
        has one row per entry of ``act``, which is ``rows[loc]`` of ``s`` rows."""
        events: list[tuple[int, Event]] = []
        for row, (st, r) in enumerate(zip(act.tolist(), loc.tolist(), strict=True)):
            cur, cand = int(self._cur[st]), int(self._cand[st])
            run, miss, cmiss = int(self._run[st]), int(self._miss[st]), int(self._cmiss[st])
            cand_start, start = int(self._cand_start[st]), int(self._start[st])
            last_end = int(self._last_end[st])
            for j, d in enumerate(codes[row].tolist()):
                if d >= _SUSPECT:
                    d -= _SUSPECT
                    if (d == cand and run + 1 >= START_HITS and d != cur
                            and harmonic(np.array([j * s + r]))[0]):
                        d = -1
                w_start = n0 + SUB_BLOCK * (j - (WINDOW_BLOCKS - 1))
                w_end = n0 + SUB_BLOCK * (j + 1)
                valid = d >= 0
                in_digit = cur >= 0
                same = valid and d == cand
                fresh = valid and not same
                cmiss = 0 if valid else min(cmiss + 1, CAND_BRIDGE + 1)
                lapsed = cmiss > CAND_BRIDGE
                if same:
                    run = min(run + 1, START_HITS)
                elif fresh:
                    run, cand, cand_start = 1, d, w_start
                elif lapsed:
                    run, cand = 0, -1
                cont = in_digit and valid and d == cur
                if cont:
                    miss, last_end = 0, w_end
                else:
                    miss = min(miss + 1, END_MISSES) if in_digit else 0
                confirm = valid and run >= START_HITS and d != cur
                if in_digit and (miss >= END_MISSES or confirm):
                    ended = DigitEvent(_KEYS[cur], self._ms(st, start), self._ms(st, last_end))
                    events.append((st, ended))
                    cur = -1
                if confirm:
                    events.append((st, DigitStart(_KEYS[d], self._ms(st, cand_start))))
                    cur, start, last_end, miss = d, cand_start, w_end, 0
            self._cur[st], self._cand[st] = cur, cand
            self._run[st], self._miss[st], self._cmiss[st] = run, miss, cmiss
            self._cand_start[st], self._start[st], self._last_end[st] = cand_start, start, last_end
        return events


def _classify(
    y: npt.NDArray[np.float32],
    h1: npt.NDArray[np.float32],
    h2: npt.NDArray[np.float32],
    ew: npt.NDArray[np.float32],
) -> tuple[npt.NDArray[np.int16] | None, tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]]:
    """Key code (4 row + col) held by each window, or -1; None when no window holds one.

    A window whose pair could be two harmonics of one sound gets ``_SUSPECT + code``:
    the state machine has :func:`_harmonic_series` look at it if it would start a key.

    Parameters
    ----------
    y, h1, h2 : ndarray of float32, shape (m, s, 17)
        Window DFT and its two halves' DFTs (absolute phase) at the eight frequencies:
        real parts in ``[..., :8]``, imaginary parts in ``[..., 8:16]``; ``[..., 16]``
        is the sum of the samples.
    ew : ndarray of float32, shape (m, s)
        Window energy (sum of squares).

    Returns
    -------
    codes : ndarray of int16, shape (m, s), or None
    suspects : (ndarray of intp, shape (k,); ndarray of float64, shape (k, 2))
        Flat indices into ``(m, s)`` of the suspect windows, ascending, and their
        measured low and high frequencies in Hz.
    """
    sq = y * y
    p = sq[..., :8]
    p += sq[..., 8:16]
    # Energy without the window's mean: rumble and DC are not in the voice band and
    # must not count against a key's purity (pink noise puts much of its power there).
    ew = ew - sq[..., 16] * (1.0 / WINDOW)
    # Pairwise maxima: numpy reductions along a short last axis are slow.
    mx = np.maximum
    top = mx(mx(p[..., 0], p[..., 1]), mx(p[..., 2], p[..., 3]))
    top += mx(mx(p[..., 4], p[..., 5]), mx(p[..., 6], p[..., 7]))
    # rho_raw = 2 (|Y_lo|^2 + |Y_hi|^2) / (L E): screen before the costly checks.
    screen = (top >= (SCREEN * WINDOW / 2) * ew) & (ew >= WINDOW * 2 * _P_MIN)
    idx = np.flatnonzero(screen)
    if idx.size == 0:
        return None, _NO_SUSPECTS
    pc = p.reshape(-1, 8)[idx]
    k_lo = pc[:, :4].argmax(axis=1)
    k_hi = pc[:, 4:].argmax(axis=1) + 4
    rows = np.arange(idx.size)[:, None]
    kk = np.stack([k_lo, k_hi], axis=1)  # (c, 2)
    h1c = h1.reshape(-1, _COLS)[idx].astype(np.float64)
    h2c = h2.reshape(-1, _COLS)[idx].astype(np.float64)
    a = h1c[rows, kk] + 1j * h1c[rows, kk + 8]
    b = h2c[rows, kk] + 1j * h2c[rows, kk + 8]
    mag2 = pc[rows, kk].astype(np.float64)
    # Both halves of the window must hold each tone: a tone filling only the end of a
    # window has a meaningless phase in the other half and must not be "corrected".
    pa = a.real * a.real + a.imag * a.imag
    pb = b.real * b.real + b.imag * b.imag
    balanced = (np.minimum(pa, pb) >= BALANCE * np.maximum(pa, pb)).all(axis=1)
    # Phase advance over half a window -> frequency error in rad/sample.
    delta = np.angle(b * np.conj(a)) / _HALF
    rel = delta * SAMPLE_RATE / (2.0 * np.pi * _FREQS[kk])
    # Gain of the window at that error (Dirichlet kernel, 1 at 0).
    half = delta / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        gain = np.where(
            np.abs(half) < 1e-9, 1.0, np.sin(WINDOW * half) / (WINDOW * np.sin(half))
        )
    gain2 = np.maximum(gain * gain, 1e-6)
    tone_p = 2.0 * mag2 / (WINDOW * WINDOW * gain2)  # power of each tone
    e = ew.reshape(-1)[idx].astype(np.float64)
    purity = (tone_p[:, 0] + tone_p[:, 1]) * WINDOW / np.maximum(e, 1e-30)
    twist = 10.0 * np.log10(np.maximum(tone_p[:, 1], 1e-30) / np.maximum(tone_p[:, 0], 1e-30))
    # A single musical note's fundamental and octave (or its 2nd and 3rd harmonics) can
    # land near a key's pair; true keys are never that close to 2:1 or 3:2.
    est = _FREQS[kk] * (1.0 + rel)
    ratio = est[:, 1] / est[:, 0]
    harmonic = (np.abs(ratio / 2.0 - 1.0) < HARMONIC_GUARD) | (
        np.abs(ratio / 1.5 - 1.0) < HARMONIC_GUARD
    )
    ok = (
        (np.abs(rel) <= FREQ_TOLERANCE).all(axis=1)
        & ~harmonic
        & (tone_p >= _P_MIN).all(axis=1)
        & (twist >= TWIST_MIN_DB)
        & (twist <= TWIST_MAX_DB)
        & (purity >= PURITY)
        & (purity <= 1.25)
        & balanced
    )
    passed = np.flatnonzero(ok)
    if passed.size == 0:
        return None, _NO_SUSPECTS
    # A voice or an instrument whose harmonics n and m hold nearly all the window's
    # energy passes every check above; the harmonics around them give it away, but
    # looking costs an FFT, so only windows that would start a key are looked at.
    near = (np.abs(ratio[passed, None] * _SERIES_INV - 1.0) < SERIES_MATCH).any(axis=1)
    code = 4 * k_lo[passed] + (k_hi[passed] - 4) + np.where(near, _SUSPECT, 0)
    codes = np.full(ew.shape, -1, dtype=np.int16)
    codes.reshape(-1)[idx[passed]] = code.astype(np.int16)
    return codes, (idx[passed[near]], est[passed[near]])


def _series_powers(
    w: npt.NDArray[np.float64], est: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """For each window: the weaker tone's power, the power on the other harmonics of the
    implied fundamental, and the power halfway between them (Hann window; see
    :func:`_harmonic_series`). Shape (c, 3).

    A loop over the windows: there are one or two per call (a window about to start a
    key), and plain Python is cheaper than numpy on such small sizes.
    """
    x = (w - w.mean(axis=1, keepdims=True)) * _HANN
    spec = np.fft.rfft(x, _NFFT, axis=1)
    power = spec.real**2 + spec.imag**2
    out = np.empty((w.shape[0], 3))
    scale = _NFFT / SAMPLE_RATE
    for i, (lo, hi) in enumerate(est.tolist()):
        ratio = hi / lo
        q = min(range(len(_SERIES_INV)), key=lambda k: abs(ratio * _SERIES_INV[k] - 1.0))
        n, m = _SERIES[q, 0], _SERIES[q, 1]
        f0 = 0.5 * (lo / n + hi / m)
        # Harmonics k f0 and midpoints (k + 1/2) f0 above 3.5 kHz fall on the top bin,
        # and with everything outside the telephone band they weigh nothing.
        bins = np.minimum(np.rint(_KK * (f0 * scale)).astype(np.intp), _NFFT // 2)
        row = power[i]
        tones = min(row[round(lo * scale)], row[round(hi * scale)])
        row[: _BAND_BINS[0]] = 0.0
        row[_BAND_BINS[1] :] = 0.0
        clipped = float(np.abs(w[i]).max()) >= _CLIPPED
        at = row[bins] * (_SERIES_MASKS_CLIPPED if clipped else _SERIES_MASKS)[q]
        out[i] = tones, at[: _HARMONICS].sum(), at[_HARMONICS:].sum()
    return out


def _harmonic_series(
    w: npt.NDArray[np.float64], est: npt.NDArray[np.float64]
) -> npt.NDArray[np.bool_]:
    """Whether each window's pair is two harmonics of one sound (a voice, a note).

    Parameters
    ----------
    w : ndarray of float64, shape (c, 160)
        Window samples.
    est : ndarray of float64, shape (c, 2)
        Measured low and high tone frequencies, Hz; their ratio is within
        ``SERIES_MATCH`` of some m:n in ``_SERIES``.

    Returns
    -------
    harmonic : ndarray of bool, shape (c,)
        True where the other multiples of the implied fundamental f0 (in the telephone
        band) hold at least ``SERIES_LEVEL_DB`` of the weaker tone's power, and
        ``SERIES_CONTRAST_DB`` more than the points halfway between them: a harmonic
        series. A key has next to nothing there; noise has as much between as on them.
    """
    weaker, on, mid = _series_powers(w, est).T
    return np.asarray((on >= _SERIES_LEVEL * weaker) & (on >= _SERIES_CONTRAST * mid))


class DtmfDetector:
    """Streaming DTMF detector for one stream.

    Feed it mu-law frames of any length (Twilio sends 160 bytes, but nothing here
    depends on it); it returns :class:`DigitStart` as soon as a key is confirmed and
    :class:`DigitEvent` when it ends. State carries across frame boundaries, so the
    events do not depend on how the audio is cut.

    Examples
    --------
    >>> from handraise.dsp import synth
    >>> det = DtmfDetector()
    >>> events = [e for f in synth.to_frames(synth.dtmf("*1")) for e in det.feed(f)]
    >>> [e.digit for e in events + det.flush() if isinstance(e, DigitEvent)]
    ['*', '1']
    """

    def __init__(self) -> None:
        self._bank = DetectorBank(1)

    def feed(self, frame: bytes | bytearray | memoryview) -> list[Event]:
        """Process mu-law bytes (any length).

        Parameters
        ----------
        frame : bytes-like, shape (n,)
            Mu-law samples at 8 kHz.

        Returns
        -------
        events : list of DigitStart or DigitEvent
            In time order.
        """
        codes = np.frombuffer(frame, dtype=np.uint8)[None, :]
        return [ev for _, ev in self._bank.feed(codes)]

    def feed_linear(self, x: npt.ArrayLike) -> list[Event]:
        """Process linear samples (any length).

        Parameters
        ----------
        x : array_like of float, shape (n,)
            Samples at 8 kHz, full scale 1.0.

        Returns
        -------
        events : list of DigitStart or DigitEvent
        """
        a = np.asarray(x, dtype=np.float32).reshape(1, -1)
        return [ev for _, ev in self._bank.feed_linear(a)]

    def flush(self) -> list[Event]:
        """End a key still sounding (at the end of the audio)."""
        return [ev for _, ev in self._bank.flush()]


def detect(audio: bytes | npt.ArrayLike) -> list[DigitEvent]:
    """Detect every key press in a complete recording.

    Parameters
    ----------
    audio : bytes or array_like of float, shape (n,)
        Mu-law bytes, or linear samples at 8 kHz (full scale 1.0).

    Returns
    -------
    events : list of DigitEvent
        In time order.
    """
    det = DtmfDetector()
    is_mulaw = isinstance(audio, bytes | bytearray | memoryview)
    out = det.feed(audio) if is_mulaw else det.feed_linear(audio)  # type: ignore[arg-type]
    out += det.flush()
    return [e for e in out if isinstance(e, DigitEvent)]
