"""Keypad listening for every stream of a process: one detector call per 20 ms tick.

Pure: no Quart, no Redis, no clock (the caller calls :meth:`KeypadBank.tick` every 20 ms).

A :class:`KeypadListener` is one stream's key decoder and self-test counts. A
:class:`KeypadBank` holds the listeners of every open stream in one
:class:`~handraise.dsp.dtmf.DetectorBank`: a frame that arrives is only queued
(:meth:`~KeypadBank.push`: bytes copied into the stream's row of one array; a C reader
writes there directly), and each tick feeds one frame of every stream that
has one to a single :meth:`~handraise.dsp.dtmf.DetectorBank.feed_rows` call (streams with
several frames waiting, as batched reads deliver them, take them all in one call per
number of frames: one call of 480-sample rows costs about half of three calls of 160). So:

* a stream whose frame is late or missing is simply not in this tick; the others go on,
  and its own audio stays contiguous (the bank moves it to the tick's clock exactly);
* a stream that is behind (frames bunched up by the network or read in a batch) advances
  by up to 1 + :data:`CATCH_UP` frames per tick;
* a stream that floods keeps at most :data:`MAX_QUEUED` frames (1 s): older ones are
  dropped and counted, so it cannot slow the others down;
* a stream joining or leaving mid-tick takes or frees a slot; :meth:`~KeypadBank.leave`
  feeds what the stream still had queued and ends a key still sounding;
* the events of each stream are those a :class:`~handraise.dsp.dtmf.DtmfDetector` gives
  for the same frames (tests/phone/test_keypad.py checks it).

Frames of another size than 160 bytes (Twilio's is 160; the detector needs none) are cut
into 160-byte frames per stream; at most 159 bytes (under 20 ms) at the very end of such
a stream are never fed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from ..dsp.dtmf import DetectorBank, DigitEvent, DigitStart, DtmfDetector
from .frames import FRAME_BYTES
from .keys import ANSWER_COMMANDS, DEFAULT_COMMANDS, KeyCommand, KeyDecoder

__all__ = ["CATCH_UP", "MAX_QUEUED", "QUEUE_BYTES", "KeypadBank", "KeypadListener", "Outcome"]

log = logging.getLogger(__name__)

MAX_QUEUED = 50
"""Frames (1 s) a stream may have waiting; beyond, its oldest are dropped."""
CATCH_UP = 4
"""Extra frames per tick a stream with frames bunched up may take (so it catches up in time)."""
QUEUE_BYTES = MAX_QUEUED * FRAME_BYTES
"""Bytes of one stream's queue (a row of :attr:`KeypadBank.audio`)."""

Outcome = tuple[list[KeyCommand], bool]
"""(commands completed, True if this was the first key tone of the stream)."""


class KeypadListener:
    """Key decoder of one stream, plus its self-test counts.

    Parameters
    ----------
    commands : mapping of str to str
        Key sequence -> command name (the room's ``raise_keys``/``lower_keys``).
    answers : mapping of str to str
        Answer mode's keys (the room's ``accept_keys``/``decline_keys``).
    label : str
        Names the stream in log lines (room and participant ids).

    Notes
    -----
    :meth:`feed` runs a detector of its own (one stream, one frame at a time: the
    reference the bank is tested against); in a :class:`KeypadBank` the bank detects and
    calls :meth:`take`.
    """

    def __init__(self, commands: Mapping[str, str] = DEFAULT_COMMANDS, *, label: str = "",
                 answers: Mapping[str, str] = ANSWER_COMMANDS) -> None:
        self.label = label
        try:
            self.decoder = KeyDecoder(commands, answers=answers, label=label)
        except ValueError as exc:
            log.warning("keypad %s: room key mapping unusable (%s); using *1 / *2", label, exc)
            self.decoder = KeyDecoder(DEFAULT_COMMANDS, label=label)
        self.detector: DtmfDetector | None = None
        self.frames = 0
        self.dropped = 0
        self.digits = 0
        self.tones_seen = False

    def feed(self, payload: bytes) -> Outcome:
        """One frame of mu-law through this listener's own detector."""
        if self.detector is None:
            self.detector = DtmfDetector()
        self.frames += 1
        return self.take(self.detector.feed(payload))

    def flush(self) -> Outcome:
        """End of the stream (own detector): a key still sounding ends here."""
        if self.detector is None:
            return [], False
        return self.take(self.detector.flush())

    def take(self, events: list[DigitStart | DigitEvent]) -> Outcome:
        """Decode detector events of this stream, in order."""
        first = bool(events) and not self.tones_seen
        commands = []
        for event in events:
            self.tones_seen = True
            if isinstance(event, DigitEvent):
                self.digits += 1
            command = self.decoder.feed(event)
            if command is not None:
                commands.append(command)
        return commands, first


class KeypadBank:
    """The listeners of every open stream, detected together once per tick.

    Each stream's queue is a row of :attr:`audio` holding :attr:`fill` bytes of mu-law, so a
    reader in C (:mod:`.fastmedia`) can append decoded frames with no Python object per
    frame: it keeps to the rules of :meth:`push_frames`, the one writer in Python.

    Parameters
    ----------
    capacity : int
        Slots to start with; the bank doubles when full.
    """

    def __init__(self, capacity: int = 64) -> None:
        self._bank = DetectorBank(capacity)
        self._listeners: list[KeypadListener | None] = [None] * capacity
        #: The queues: ``audio[slot, :fill[slot]]`` waits for ticks; ``frames`` and
        #: ``dropped`` count each slot's frames (media messages) taken and dropped.
        self.audio = np.zeros((capacity, QUEUE_BYTES), dtype=np.uint8)
        self.fill = np.zeros(capacity, dtype=np.int64)
        self.frames = np.zeros(capacity, dtype=np.int64)
        self.dropped = np.zeros(capacity, dtype=np.int64)
        self._free = list(range(capacity - 1, -1, -1))
        self._views()
        self.ticks = 0

    def _views(self) -> None:
        # memoryviews of the arrays: what push_frames touches per frame, without numpy's
        # per-call overhead (one memoryview store costs a tenth of a numpy slice store)
        self._audio_mv = self.audio.data.cast("B")
        self._fill_mv = self.fill.data
        self._frames_mv = self.frames.data

    @property
    def streams(self) -> int:
        """Open streams."""
        return len(self._listeners) - len(self._free)

    @property
    def queued(self) -> int:
        """Whole frames waiting for a tick, over all streams (the backlog)."""
        return int((self.fill // FRAME_BYTES).sum())

    def join(self, listener: KeypadListener) -> int:
        """Give ``listener`` a slot; returns it (the handle for push and leave)."""
        if not self._free:
            old = len(self._listeners)
            self._bank.grow(2 * old)
            self._listeners += [None] * old
            self.audio = np.concatenate([self.audio, np.zeros_like(self.audio)])
            self.fill, self.frames, self.dropped = (
                np.concatenate([a, np.zeros_like(a)]) for a in (self.fill, self.frames, self.dropped))
            self._free = list(range(2 * old - 1, old - 1, -1))
            self._views()
        slot = self._free.pop()
        self._bank.reset(slot)
        self._listeners[slot] = listener
        self.fill[slot] = self.frames[slot] = self.dropped[slot] = 0
        return slot

    def push(self, slot: int, payload: bytes) -> None:
        """Queue one frame of mu-law for ``slot`` (cheap: no detection here)."""
        self.push_frames(slot, payload, 1)

    def push_frames(self, slot: int, audio: bytes, count: int) -> None:
        """Queue ``count`` frames of mu-law for ``slot``, end to end in ``audio`` (what a
        read of several media messages brings). Beyond :data:`MAX_QUEUED` frames waiting,
        the oldest whole frames are dropped (and counted)."""
        if self._listeners[slot] is None or not audio:
            return
        self._frames_mv[slot] += count
        fill, n = self._fill_mv[slot], len(audio)
        if fill + n <= QUEUE_BYTES:
            at = slot * QUEUE_BYTES + fill
            self._audio_mv[at:at + n] = audio
            self._fill_mv[slot] = fill + n
            return
        row = self.audio[slot]  # full: the oldest whole frames go
        drop = min(fill, -(-(fill + n - QUEUE_BYTES) // FRAME_BYTES) * FRAME_BYTES)
        row[:fill - drop] = row[drop:fill].copy()
        fill -= drop
        self.dropped[slot] += drop // FRAME_BYTES
        if fill + n > QUEUE_BYTES:  # longer than the whole queue: its end
            audio, n = audio[fill + n - QUEUE_BYTES:], QUEUE_BYTES - fill
        row[fill:fill + n] = np.frombuffer(audio, dtype=np.uint8)
        self.fill[slot] = fill + n

    def tick(self) -> list[tuple[int, Outcome]]:
        """Detect the frames waiting, up to 1 + CATCH_UP per stream, of every stream.

        Returns
        -------
        outcomes : list of (int, (commands, first))
            Slot and outcome, only for streams whose events completed a command or held their first tone.
        """
        self.ticks += 1
        fill = self.fill
        waiting = fill // FRAME_BYTES
        rows = np.flatnonzero(waiting)
        if not rows.size:
            return []
        # Streams with the same number of frames waiting (batched reads deliver several at
        # once) advance together in one call, all their frames at once, at the tick's clock.
        clock = FRAME_BYTES * self.ticks
        take = np.minimum(waiting[rows], 1 + CATCH_UP)
        out: dict[int, list[DigitStart | DigitEvent]] = {}
        counts = np.unique(take).tolist()
        for k in counts:
            group = rows if len(counts) == 1 else rows[take == k]
            frames = self.audio[group, :k * FRAME_BYTES]
            for slot, event in self._bank.feed_rows(group, frames, clock=clock):
                out.setdefault(int(slot), []).append(event)
        used = take * FRAME_BYTES
        rest = fill[rows] - used
        fill[rows] = rest
        for i in np.flatnonzero(rest).tolist():  # bunched-up frames, or part of one
            slot, u, r = int(rows[i]), int(used[i]), int(rest[i])
            self.audio[slot, :r] = self.audio[slot, u:u + r].copy()
        return self._outcomes(out) if out else []

    def leave(self, slot: int) -> Outcome:
        """The stream ended: feed what it still had queued, end its key, free the slot."""
        listener = self._listeners[slot]
        if listener is None:
            return [], False
        events: list[DigitStart | DigitEvent] = []
        whole = int(self.fill[slot]) // FRAME_BYTES * FRAME_BYTES
        if whole:
            events += [e for _, e in self._bank.feed_rows([slot], self.audio[slot:slot + 1, :whole])]
        events += [e for _, e in self._bank.flush([slot])]
        self._count(slot, listener)
        self.fill[slot] = 0
        self._listeners[slot] = None
        self._free.append(slot)
        return listener.take(events)

    def _count(self, slot: int, listener: KeypadListener) -> None:
        listener.frames = int(self.frames[slot])
        listener.dropped = int(self.dropped[slot])

    def _outcomes(
        self, events: dict[int, list[DigitStart | DigitEvent]]
    ) -> list[tuple[int, Outcome]]:
        out = []
        for slot, evs in events.items():
            listener = self._listeners[slot]
            if listener is None:
                continue
            self._count(slot, listener)
            commands, first = listener.take(evs)
            if commands or first:
                out.append((slot, (commands, first)))
        return out
