"""The host's hand log of a meeting: every hand raised, how it ended, written as CSV.

Built from the room's event stream alone (:func:`build_hand_log` is pure), so it shows
hands that are long gone from the live queue. The stream is capped, so the log says so
when the start of the meeting was trimmed away instead of silently showing a part of it.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from .events import Event, read_events
from .store import Redis

CALLED_ON = "called on"
LOWERED_BY_CALLER = "lowered by the caller"
LOWERED_BY_HOST = "lowered by the host"
LEFT = "left"

#: Where a caller lowers their own hand; any other ``by`` (host, api, ...) is not the caller.
_CALLER_SOURCES = frozenset({"keypad", "web", "prompt"})

CSV_HEADER = (
    "display_name", "number_masked", "source", "raised_at", "ended_at", "how_ended", "waited_s", "spoke_s",
)

#: First characters a spreadsheet may run as a formula (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

_BATCH = 1000


@dataclass(frozen=True)
class HandRow:
    """One hand raised in the meeting. Times in ms (Redis clock); durations in seconds."""

    display_name: str
    number_masked: str
    source: str
    raised_at: int
    ended_at: int | None
    how_ended: str
    waited_s: float
    spoke_s: float | None


@dataclass(frozen=True)
class HandLog:
    """The hands of one meeting; ``note`` says what is missing when ``complete`` is False."""

    rows: list[HandRow]
    complete: bool
    note: str = ""


def display_name(name: str | None, number_masked: str | None) -> str:
    """The name, else ``Caller`` and the last 4 digits of the masked number, else ``Caller``."""
    if name and name.strip():
        return name.strip()
    digits = re.findall(r"\d", number_masked or "")
    return "Caller " + "".join(digits[-4:]) if len(digits) >= 4 else "Caller"


@dataclass
class _Hand:
    participant: str
    source: str
    raised_at: int
    ended_at: int | None = None
    how_ended: str = ""
    turn_ended_at: int | None = None

    def end(self, at: int, how: str) -> None:
        self.ended_at, self.how_ended = at, how

    def row(self, people: dict[str, tuple[str | None, str]], now: int) -> HandRow:
        name, masked = people.get(self.participant, (None, ""))
        end = self.ended_at if self.ended_at is not None else now
        spoke = None
        if self.how_ended == CALLED_ON and self.ended_at is not None and self.turn_ended_at is not None:
            spoke = _seconds(self.turn_ended_at - self.ended_at)
        return HandRow(
            display_name=display_name(name, masked),
            number_masked=masked,
            source=self.source,
            raised_at=self.raised_at,
            ended_at=self.ended_at,
            how_ended=self.how_ended,
            waited_s=_seconds(end - self.raised_at),
            spoke_s=spoke,
        )


def _seconds(ms: int) -> float:
    # Raise times come from a microsecond score and event times from a second TIME call,
    # so a few hundred µs of apparent negative wait can occur: never show it.
    return round(max(0, ms) / 1000, 1)


def _is_meeting_end(event: Event) -> bool:
    return event.type == "room.closed" or (
        event.type == "room.updated" and event.data.get("conference_sid") == ""
    )


def _is_meeting(events: Sequence[Event]) -> bool:
    """A segment with a hand or a conference start; otherwise just the tail of an ending."""
    return any(
        e.type == "hand.raised" or (e.type == "room.updated" and e.data.get("conference_sid"))
        for e in events
    )


def _choose_meeting(events: Sequence[Event]) -> tuple[int, int]:
    """(start, stop) indices of the meeting to log; ``events[stop]``, if any, is its end."""
    segments, start = [], 0
    for i, event in enumerate(events):
        if _is_meeting_end(event):
            segments.append((start, i))
            start = i + 1
    current = (start, len(events))
    if any(e.type == "hand.raised" for e in events[start:]):
        return current
    # Right after a meeting ended: log that one. Segments without a hand or a conference
    # start are skipped, e.g. between a conference end and the room.closed that follows.
    for seg in reversed(segments):
        if _is_meeting(events[seg[0]:seg[1]]):
            return seg
    return current


def _people(events: Iterable[Event]) -> dict[str, tuple[str | None, str]]:
    """Latest (name, masked number) of every participant: a later rename wins everywhere."""
    people: dict[str, tuple[str | None, str]] = {}
    for e in events:
        if e.participant is None:
            continue
        name, masked = people.get(e.participant, (None, ""))
        if e.type == "participant.joined":
            name, masked = e.data.get("name") or None, str(e.data.get("number_masked") or "")
        elif e.type == "participant.updated" and "name" in e.data:
            name = e.data["name"] or None
        else:
            continue
        people[e.participant] = (name, masked)
    return people


def _replay(events: Sequence[Event], end: Event | None) -> list[_Hand]:
    """Every hand raised in ``events``; anything about a hand raised before them is ignored."""
    hands: list[_Hand] = []
    up: dict[str, _Hand] = {}
    cleared: dict[str, _Hand] = {}  # what the last "lower all" took down (it may be undone)
    turn: _Hand | None = None  # the hand whose caller speaks now, if they were called on

    def end_turn(at: int) -> None:
        nonlocal turn
        if turn is not None:
            turn.turn_ended_at = at
            turn = None

    for e in events:
        pid = e.participant
        if e.type == "hand.raised" and pid is not None and pid not in up:
            hand = _Hand(pid, str(e.data.get("source") or ""), int(e.data.get("raised_at", e.at)))
            hands.append(hand)
            up[pid] = hand
        elif e.type == "hand.lowered" and pid in up:
            how = LOWERED_BY_CALLER if e.data.get("by") in _CALLER_SOURCES else LOWERED_BY_HOST
            up.pop(pid).end(e.at, how)
        elif e.type == "hands.cleared":
            lowered = e.data.get("participants")
            cleared = {}
            for p in lowered if isinstance(lowered, list) else []:
                if p in up:
                    cleared[p] = up.pop(p)
                    cleared[p].end(e.at, LOWERED_BY_HOST)
        elif e.type == "hands.restored":
            # Undone: the same hands again, as if never lowered (a raise meanwhile merges in).
            restored = e.data.get("participants")
            for p in restored if isinstance(restored, list) else []:
                if p in cleared:
                    if p in up:
                        hands.remove(up.pop(p))
                    hand = cleared.pop(p)
                    hand.ended_at, hand.how_ended = None, ""
                    up[p] = hand
        elif e.type == "speaker.called":
            # One speaker at a time: a new one ends the turn of whoever spoke.
            if turn is not None and turn.participant != pid:
                end_turn(e.at)
            if pid in up:
                turn = up.pop(pid)
                turn.end(e.at, CALLED_ON)
        elif e.type == "speaker.done":
            if turn is not None and turn.participant == pid:
                end_turn(e.at)
        elif e.type == "participant.left":
            if pid in up:
                up.pop(pid).end(e.at, LEFT)
            if turn is not None and turn.participant == pid:
                end_turn(e.at)
    if end is not None:
        for hand in up.values():
            hand.end(end.at, LEFT)
        end_turn(end.at)
    return hands


def build_hand_log(events: Iterable[Event]) -> HandLog:
    """The hand log of the room's current meeting (or the one just ended) from its events."""
    evs = list(events)
    start, stop = _choose_meeting(evs)
    hands = _replay(evs[start:stop], evs[stop] if stop < len(evs) else None)
    now = evs[-1].at if evs else 0
    people = _people(evs)
    rows = [h.row(people, now) for h in hands]
    # A meeting that starts at a kept end marker, or at the room's creation, is whole.
    if start > 0 or not evs or evs[0].type == "room.created":
        return HandLog(rows, complete=True)
    note = (
        f"Events before {_utc(evs[0].at):%H:%M:%S} UTC were trimmed from the room's history "
        "(HANDRAISE_EVENTS_MAXLEN); hands raised before then are missing."
    )
    return HandLog(rows, complete=False, note=note)


async def load_hand_log(redis: Redis, room: str) -> HandLog:
    """Read every event of ``room`` (in batches) and build its hand log."""
    events: list[Event] = []
    cursor = "0-0"
    while True:
        batch = await read_events(redis, room, cursor, count=_BATCH)
        events.extend(batch)
        if len(batch) < _BATCH:
            return build_hand_log(events)
        cursor = batch[-1].id


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _time(ms: int | None) -> str:
    return "" if ms is None else f"{_utc(ms):%Y-%m-%dT%H:%M:%SZ}"


def _safe(cell: str) -> str:
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


def to_csv(log: HandLog) -> str:
    """The log as CSV; an incomplete log starts with a ``# note`` line."""
    out = io.StringIO()
    if not log.complete:
        # Kept on one line so it stays a single comment line above the header.
        out.write("# " + " ".join(log.note.splitlines()) + "\r\n")
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    for r in log.rows:
        cells = [
            r.display_name, r.number_masked, r.source, _time(r.raised_at), _time(r.ended_at),
            r.how_ended, f"{r.waited_s:.1f}", "" if r.spoke_s is None else f"{r.spoke_s:.1f}",
        ]
        writer.writerow([_safe(c) for c in cells])
    return out.getvalue()
