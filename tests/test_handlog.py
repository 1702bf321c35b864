"""The host's hand log: built from hand-made events, written as CSV, and read from real Redis."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any

import pytest

from handraise.events import Event, read_events
from handraise.handlog import (
    CSV_HEADER,
    HandLog,
    HandRow,
    build_hand_log,
    display_name,
    load_hand_log,
    to_csv,
)
from handraise.queue import Queue
from handraise.rooms import close_room, create_room, update_room
from handraise.store import Redis

T0 = int(datetime(2026, 12, 1, 14, 0, 0, tzinfo=UTC).timestamp() * 1000)
ADA = "+1 ••• ••• 4821"
BOB = "+•• ••• 7305"


class Stream:
    """Builds a room's events in order; times are given in seconds after T0."""

    def __init__(self, *, created: bool = True) -> None:
        self.events: list[Event] = []
        if created:
            self.add(0, "room.created", name="Standup")

    def add(self, at_s: float, type: str, participant: str | None = None, **data: Any) -> Event:
        at = T0 + int(at_s * 1000)
        event = Event(f"{at}-{len(self.events)}", type, "r1", participant, at, data)
        self.events.append(event)
        return event

    def join(self, at_s: float, pid: str, name: str = "", number_masked: str = ADA) -> None:
        self.add(at_s, "participant.joined", pid, role="participant", label="", name=name,
                 number_masked=number_masked, muted=True, hold=False, channels=["phone"])

    def raise_(self, at_s: float, pid: str, source: str = "keypad") -> None:
        self.add(at_s, "hand.raised", pid, source=source, position=1, raised_at=T0 + int(at_s * 1000))

    def call(self, at_s: float, pid: str, previous: str | None = None) -> None:
        data: dict[str, Any] = {"by": "host", "from_queue": True}
        if previous:
            data["previous"] = previous
        self.add(at_s, "speaker.called", pid, **data)

    def conference(self, at_s: float, sid: str) -> None:
        self.add(at_s, "room.updated", conference_sid=sid)

    def log(self) -> HandLog:
        return build_hand_log(self.events)


def ms(at_s: float) -> int:
    return T0 + int(at_s * 1000)


def ends(log: HandLog) -> list[tuple[str, str, int | None, float, float | None]]:
    return [(r.display_name, r.how_ended, r.ended_at, r.waited_s, r.spoke_s) for r in log.rows]


@pytest.mark.parametrize(
    ("name", "masked", "shown"),
    [
        ("Ada", ADA, "Ada"),
        ("", ADA, "Caller 4821"),
        (None, BOB, "Caller 7305"),
        ("  ", "••• 0042", "Caller 0042"),
        ("", "Private number", "Caller"),
        (None, None, "Caller"),
    ],
)
def test_display_name_is_the_name_else_the_last_four_digits_else_caller(
    name: str | None, masked: str | None, shown: str
) -> None:
    assert display_name(name, masked) == shown


def test_a_hand_called_on_records_its_wait_and_how_long_the_caller_spoke() -> None:
    s = Stream()
    s.join(1, "pa", name="Ada")
    s.raise_(10, "pa", source="web")
    s.call(25.5, "pa")
    s.add(70, "speaker.done", "pa", by="host")
    (row,) = s.log().rows
    assert row == HandRow("Ada", ADA, "web", ms(10), ms(25.5), "called on", 15.5, 44.5)


def test_a_turn_ends_when_the_next_speaker_replaces_them_or_they_leave() -> None:
    s = Stream()
    for pid in ("pa", "pb", "pc"):
        s.join(1, pid, name=pid)
        s.raise_(2, pid)
    s.call(10, "pa")
    s.call(40, "pb", previous="pa")
    s.add(45, "participant.left", "pb", reason="hangup", hand_lowered=False, speaker_ended=True)
    s.call(50, "pc")
    s.add(51, "participant.joined", "pz", name="Zed", number_masked=BOB)  # the log's "now"
    assert ends(s.log()) == [
        ("pa", "called on", ms(10), 8.0, 30.0),
        ("pb", "called on", ms(40), 38.0, 5.0),
        ("pc", "called on", ms(50), 48.0, None),  # still speaking
    ]


def test_a_speaker_called_without_a_hand_ends_the_turn_of_the_one_called_on_before() -> None:
    s = Stream()
    s.join(1, "pa", name="Ada")
    s.join(1, "pb", name="Bob")
    s.raise_(2, "pa")
    s.call(4, "pa")
    s.add(9, "speaker.called", "pb", by="host", from_queue=False, previous="pa")
    assert ends(s.log()) == [("Ada", "called on", ms(4), 2.0, 5.0)]


@pytest.mark.parametrize("by", ["keypad", "web", "prompt"])
def test_a_hand_the_caller_lowers_from_any_of_their_channels_is_lowered_by_the_caller(by: str) -> None:
    s = Stream()
    s.join(1, "pa", name="Ada")
    s.raise_(2, "pa")
    s.add(5, "hand.lowered", "pa", by=by)
    assert ends(s.log()) == [("Ada", "lowered by the caller", ms(5), 3.0, None)]


def test_hands_the_host_lowers_one_by_one_or_all_at_once_are_lowered_by_the_host() -> None:
    s = Stream()
    for pid in ("pa", "pb", "pc"):
        s.join(1, pid, name=pid)
    s.raise_(2, "pa")
    s.raise_(3, "pb", source="host")
    s.raise_(4, "pc", source="prompt")
    s.add(5, "hand.lowered", "pa", by="host")
    s.add(8, "hands.cleared", participants=["pb", "pc"], by="host")
    log = s.log()
    assert ends(log) == [
        ("pa", "lowered by the host", ms(5), 3.0, None),
        ("pb", "lowered by the host", ms(8), 5.0, None),
        ("pc", "lowered by the host", ms(8), 4.0, None),
    ]
    assert [r.source for r in log.rows] == ["keypad", "host", "prompt"]


def test_a_caller_who_hangs_up_with_a_hand_up_is_logged_as_left() -> None:
    s = Stream()
    s.join(1, "pa", name="Ada")
    s.raise_(2, "pa")
    s.add(12, "participant.left", "pa", reason="hangup", hand_lowered=True, speaker_ended=False)
    assert ends(s.log()) == [("Ada", "left", ms(12), 10.0, None)]


def test_hands_and_turns_still_going_when_the_conference_ends_end_then_as_left() -> None:
    s = Stream()
    s.conference(0.5, "CF1")
    s.join(1, "pa", name="Ada")
    s.join(1, "pb", name="Bob")
    s.raise_(2, "pa")
    s.raise_(3, "pb")
    s.call(10, "pa")
    s.conference(30, "")
    assert ends(s.log()) == [
        ("Ada", "called on", ms(10), 8.0, 20.0),
        ("Bob", "left", ms(30), 27.0, None),
    ]


def test_a_hand_still_raised_has_no_end_and_waits_until_the_last_event() -> None:
    s = Stream()
    s.join(1, "pa")
    s.raise_(2, "pa", source="keypad")
    s.join(9.3, "pb")
    (row,) = s.log().rows
    assert row == HandRow("Caller 4821", ADA, "keypad", ms(2), None, "", 7.3, None)


def test_each_hand_a_caller_raises_is_its_own_row() -> None:
    s = Stream()
    s.join(1, "pa", name="Ada")
    s.raise_(2, "pa", source="keypad")
    s.add(4, "hand.lowered", "pa", by="keypad")
    s.raise_(6, "pa", source="web")
    s.call(9, "pa")
    s.add(10, "speaker.done", "pa", by="host")
    s.raise_(11, "pa", source="prompt")
    log = s.log()
    assert [(r.source, r.raised_at, r.how_ended) for r in log.rows] == [
        ("keypad", ms(2), "lowered by the caller"),
        ("web", ms(6), "called on"),
        ("prompt", ms(11), ""),
    ]
    assert log.rows[1].spoke_s == 1.0


def test_a_repeated_raise_of_a_hand_already_up_is_not_a_second_hand() -> None:
    s = Stream()
    s.join(1, "pa", name="Ada")
    s.raise_(2, "pa", source="keypad")
    s.raise_(3, "pa", source="web")  # the queue keeps the first place; so does the log
    s.add(4, "hand.lowered", "pa", by="web")
    assert [(r.source, r.raised_at, r.how_ended) for r in s.log().rows] == [
        ("keypad", ms(2), "lowered by the caller")
    ]


def test_a_later_rename_applies_to_the_callers_earlier_hands() -> None:
    s = Stream()
    s.join(1, "pa", number_masked=ADA)
    s.raise_(2, "pa")
    s.add(3, "hand.lowered", "pa", by="web")
    s.add(4, "participant.updated", "pa", name="Ada Lovelace")
    s.raise_(5, "pa")
    s.add(6, "participant.updated", "pa", muted=False)  # not a rename: the name stays
    assert [r.display_name for r in s.log().rows] == ["Ada Lovelace", "Ada Lovelace"]
    s.add(7, "participant.updated", "pa", name="")
    assert [r.display_name for r in s.log().rows] == ["Caller 4821", "Caller 4821"]


def two_meetings() -> Stream:
    s = Stream()
    s.conference(1, "CF1")
    s.join(2, "pa", name="Ada")
    s.raise_(3, "pa")
    s.add(4, "hand.lowered", "pa", by="keypad")
    s.conference(60, "")
    s.conference(100, "CF2")
    s.join(101, "pb", name="Bob", number_masked=BOB)
    return s


def test_the_log_is_of_the_current_meeting_once_a_hand_went_up_in_it() -> None:
    s = two_meetings()
    s.raise_(102, "pb")
    log = s.log()
    assert [r.display_name for r in log.rows] == ["Bob"]
    assert log.complete and log.note == ""


def test_until_a_hand_goes_up_in_the_next_meeting_the_log_is_of_the_one_that_ended() -> None:
    s = two_meetings()
    assert [r.display_name for r in s.log().rows] == ["Ada"]
    s.conference(200, "")  # the second meeting ends without a hand: nothing to log
    assert s.log().rows == []


def test_closing_the_room_right_after_the_conference_ended_still_logs_that_meeting() -> None:
    s = Stream()
    s.conference(1, "CF1")
    s.join(2, "pa", name="Ada")
    s.raise_(3, "pa")
    s.conference(50, "")
    s.add(51, "participant.left", "pa", reason="conference-end", hand_lowered=False, speaker_ended=False)
    s.add(52, "room.closed", participants=0)
    log = s.log()
    assert ends(log) == [("Ada", "left", ms(50), 47.0, None)]
    assert log.complete


def test_a_room_closed_with_hands_up_ends_them_as_left() -> None:
    s = Stream()
    s.join(1, "pa", name="Ada")
    s.raise_(2, "pa")
    s.add(5, "room.closed", participants=1)
    assert ends(s.log()) == [("Ada", "left", ms(5), 3.0, None)]


def test_a_meeting_whose_start_was_trimmed_is_incomplete_and_says_since_when() -> None:
    s = Stream(created=False)  # room.created and the meeting's start were trimmed
    s.add(131, "participant.joined", "pb", name="Bob", number_masked=BOB)
    s.raise_(140, "pb")
    log = s.log()
    assert [r.display_name for r in log.rows] == ["Bob"]
    assert not log.complete
    assert log.note == (
        "Events before 14:02:11 UTC were trimmed from the room's history "
        "(HANDRAISE_EVENTS_MAXLEN); hands raised before then are missing."
    )


def test_a_meeting_that_began_after_a_kept_meeting_end_is_complete_despite_older_trimming() -> None:
    s = Stream(created=False)
    s.add(1, "hand.lowered", "pold", by="host")
    s.conference(2, "")
    s.conference(3, "CF2")
    s.join(4, "pa", name="Ada")
    s.raise_(5, "pa")
    log = s.log()
    assert [r.display_name for r in log.rows] == ["Ada"]
    assert log.complete and log.note == ""


def test_ends_of_hands_raised_before_the_trim_are_dropped_not_made_into_rows() -> None:
    s = Stream(created=False)
    for pid in ("p1", "p2", "p3", "p4", "p5"):  # their joins and raises were trimmed
        s.add(1, "participant.updated", pid, name=pid)
    s.add(2, "hand.lowered", "p1", by="keypad")
    s.add(3, "hands.cleared", participants=["p2"], by="host")
    s.call(4, "p3")
    s.add(5, "speaker.done", "p3", by="host")
    s.add(6, "participant.left", "p4", reason="hangup", hand_lowered=True, speaker_ended=False)
    s.raise_(7, "p5")
    s.add(8, "hand.lowered", "p5", by="web")
    log = s.log()
    assert ends(log) == [("p5", "lowered by the caller", ms(8), 1.0, None)]
    assert not log.complete


def rows_of(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_the_csv_has_the_header_utc_times_and_empty_cells_for_what_is_unknown() -> None:
    s = Stream()
    s.join(1, "pa", name="Ada")
    s.join(1, "pb", name="Bob", number_masked="Private number")
    s.raise_(131.4, "pa", source="web")
    s.call(140, "pa")
    s.raise_(141, "pb")
    s.add(150, "speaker.done", "pa", by="host")
    text = to_csv(s.log())
    header = "display_name,number_masked,source,raised_at,ended_at,how_ended,waited_s,spoke_s\r\n"
    assert text.startswith(header)
    assert rows_of(text) == [
        list(CSV_HEADER),
        ["Ada", "'" + ADA, "web", "2026-12-01T14:02:11Z", "2026-12-01T14:02:20Z", "called on", "8.6", "10.0"],
        ["Bob", "Private number", "keypad", "2026-12-01T14:02:21Z", "", "", "9.0", ""],
    ]


def test_the_csv_quotes_names_with_commas_quotes_and_newlines() -> None:
    names = ['Smith, "Jr"', "two\nlines"]
    log = HandLog([HandRow(n, BOB, "web", T0, T0 + 1000, "called on", 1.0, None) for n in names], True)
    text = to_csv(log)
    assert '"Smith, ""Jr"""' in text
    assert [r[0] for r in rows_of(text)[1:]] == names


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_the_csv_defuses_cells_a_spreadsheet_would_run_as_a_formula(start: str) -> None:
    name = start + "HYPERLINK(\"http://x\")"
    log = HandLog([HandRow(name, "••• 0042", start + "api", T0, None, "", 0.0, None)], True)
    (_, row) = rows_of(to_csv(log))
    assert row[0] == "'" + name
    assert row[2] == "'" + start + "api"
    assert row[1] == "••• 0042"  # harmless cells are left alone


def test_the_csv_of_an_incomplete_log_starts_with_the_note_as_a_comment_line() -> None:
    log = HandLog([], complete=False, note="Events before 14:02:11 UTC were trimmed.")
    lines = to_csv(log).splitlines()
    assert lines == ["# Events before 14:02:11 UTC were trimmed.", ",".join(CSV_HEADER)]
    assert to_csv(HandLog([], complete=True)).splitlines() == [",".join(CSV_HEADER)]


# --- against real Redis ---------------------------------------------------------------------


async def test_load_hand_log_reads_a_real_meeting_driven_through_the_queue(redis: Redis) -> None:
    room = (await create_room(redis, "Standup")).room.id
    q = Queue(redis)
    await update_room(redis, room, conference_sid="CF1")
    a = await q.join(room, name="Ada", number="+14155550101")
    b = await q.join(room, number="+14155554821")
    c = await q.join(room, number="+442071234567")
    d = await q.join(room, name="Dee", channels=("web",))
    await q.raise_hand(room, a, source="keypad")
    await q.raise_hand(room, b, source="web")
    await q.raise_hand(room, c, source="prompt")
    await q.raise_hand(room, d, source="keypad")
    turn = await q.call_on(room)
    assert turn is not None and turn.speaker == a
    await q.done_speaking(room)
    await q.lower_hand(room, b, by="web")
    await q.call_on(room, c)
    await q.raise_hand(room, a, source="web")
    assert await q.lower_all(room) == 2  # d, and a's second hand
    await q.leave(room, c, reason="hangup")  # ends c's turn
    await q.raise_hand(room, b, source="keypad")
    await q.leave(room, b, reason="hangup")
    await q.update(room, d, name="Dee Dee")
    await q.raise_hand(room, a, source="keypad")

    expected = [
        ("Ada", "+1 ••• ••• 0101", "keypad", "called on"),
        ("Caller 4821", "+1 ••• ••• 4821", "web", "lowered by the caller"),
        ("Caller 4567", "+•• ••• 4567", "prompt", "called on"),
        ("Dee Dee", "Unknown number", "keypad", "lowered by the host"),
        ("Ada", "+1 ••• ••• 0101", "web", "lowered by the host"),
        ("Caller 4821", "+1 ••• ••• 4821", "keypad", "left"),
        ("Ada", "+1 ••• ••• 0101", "keypad", ""),
    ]
    log = await load_hand_log(redis, room)
    assert log.complete
    assert [(r.display_name, r.number_masked, r.source, r.how_ended) for r in log.rows] == expected
    assert [r.spoke_s is not None for r in log.rows] == [True, False, True, False, False, False, False]
    assert log.rows[-1].ended_at is None

    await update_room(redis, room, conference_sid="")
    end = (await read_events(redis, room))[-1]
    log = await load_hand_log(redis, room)  # right after the meeting: still that meeting
    assert [r.how_ended for r in log.rows] == [*(e[3] for e in expected[:-1]), "left"]
    assert log.rows[-1].ended_at == end.at
    for r in log.rows:
        assert r.ended_at is not None and r.ended_at >= r.raised_at
        assert r.waited_s == pytest.approx((r.ended_at - r.raised_at) / 1000, abs=0.051)

    await update_room(redis, room, conference_sid="CF2")
    e = await q.join(room, name="Eve")
    await q.raise_hand(room, e, source="web")
    log = await load_hand_log(redis, room)
    assert [(r.display_name, r.how_ended) for r in log.rows] == [("Eve", "")]
    await close_room(redis, room)
    assert [(r.display_name, r.how_ended) for r in (await load_hand_log(redis, room)).rows] == [
        ("Eve", "left")
    ]


async def test_load_hand_log_reads_past_the_first_batch_of_a_thousand_events(redis: Redis) -> None:
    room = (await create_room(redis, "Big")).room.id
    q = Queue(redis)
    a = await q.join(room, name="Ada")
    for _ in range(600):
        await q.raise_hand(room, a, source="keypad")
        await q.lower_hand(room, a, by="keypad")
    await q.raise_hand(room, a, source="web")
    log = await load_hand_log(redis, room)
    assert len(log.rows) == 601
    assert log.rows[-1].source == "web" and log.rows[-1].how_ended == ""
    assert log.complete


async def test_a_stream_trimmed_by_its_cap_gives_an_incomplete_log_without_orphan_rows(
    redis: Redis,
) -> None:
    room = (await create_room(redis, "Capped")).room.id
    q = Queue(redis, maxlen=10)
    people = [await q.join(room, name=f"P{i}") for i in range(3)]
    for p in people:
        await q.raise_hand(room, p, source="keypad")
    for _ in range(150):  # pushes the joins and first raises out of the capped stream
        await q.update(room, people[0], muted=False)
        await q.update(room, people[0], muted=True)
    await q.lower_all(room)
    await q.raise_hand(room, people[1], source="web")
    events = await read_events(redis, room)
    assert events[0].type != "room.created"
    log = await load_hand_log(redis, room)
    assert not log.complete
    first_kept = datetime.fromtimestamp(events[0].at / 1000, UTC)
    assert log.note.startswith(f"Events before {first_kept:%H:%M:%S} UTC")
    # P1's join was trimmed too, so the log knows no name for them.
    assert [(r.display_name, r.source, r.how_ended) for r in log.rows] == [("Caller", "web", "")]
    assert to_csv(log).startswith("# Events before ")
