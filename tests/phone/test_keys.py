"""Keypad commands from digit events: *1 raise, *2 lower, timing and debouncing rules."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from handraise.dsp import synth
from handraise.dsp.dtmf import DigitEvent, DigitStart, DtmfDetector
from handraise.phone.keys import KeyCommand, KeyDecoder


def presses(*keys: tuple[str, float, float]) -> list[DigitEvent]:
    return [DigitEvent(d, a, b) for d, a, b in keys]


def names(commands: list[KeyCommand]) -> list[str]:
    return [c.name for c in commands]


def test_star_1_raises_and_star_2_lowers() -> None:
    dec = KeyDecoder()
    got = dec.feed_all(presses(("*", 0, 80), ("1", 200, 280), ("*", 5000, 5080), ("2", 5200, 5280)))
    assert got == [KeyCommand("raise", "*1", 200), KeyCommand("lower", "*2", 5200)]


def test_the_second_key_must_start_within_3_s_of_the_first_ending() -> None:
    assert names(KeyDecoder().feed_all(presses(("*", 0, 100), ("1", 3099, 3180)))) == ["raise"]
    assert KeyDecoder().feed_all(presses(("*", 0, 100), ("1", 3101, 3180))) == []


def test_a_timed_out_star_can_be_followed_by_a_fresh_star_1() -> None:
    got = KeyDecoder().feed_all(presses(("*", 0, 80), ("*", 9000, 9080), ("1", 9200, 9280)))
    assert names(got) == ["raise"]


def test_a_held_key_is_one_press_and_fires_when_it_starts() -> None:
    dec = KeyDecoder()
    assert dec.feed(DigitStart("*", 0)) is None
    assert dec.feed(DigitEvent("*", 0, 2500)) is None
    assert dec.feed(DigitStart("1", 2600)) == KeyCommand("raise", "*1", 2600)
    assert dec.feed(DigitEvent("1", 2600, 6000)) is None
    assert dec.feed(DigitStart("1", 6100)) is None


def test_a_bounced_star_is_one_press() -> None:
    got = KeyDecoder().feed_all(presses(("*", 0, 60), ("*", 90, 150), ("1", 300, 380)))
    assert got == [KeyCommand("raise", "*1", 300)]


def test_a_bounced_second_key_fires_once() -> None:
    got = KeyDecoder().feed_all(presses(("*", 0, 60), ("2", 200, 240), ("2", 270, 330)))
    assert names(got) == ["lower"]


def test_star_star_1_is_still_star_1() -> None:
    got = KeyDecoder().feed_all(presses(("*", 0, 80), ("*", 300, 380), ("1", 600, 680)))
    assert got == [KeyCommand("raise", "*1", 600)]


def test_unknown_sequences_are_ignored_and_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    dec = KeyDecoder(label="room r1 participant p7")
    with caplog.at_level(logging.DEBUG, logger="handraise.phone.keys"):
        got = dec.feed_all(
            presses(("1", 0, 80), ("#", 200, 280), ("*", 400, 480), ("9", 600, 680), ("2", 800, 880))
        )
    assert got == []
    assert any("ignored" in r.getMessage() and "p7" in r.getMessage() for r in caplog.records)
    assert all(r.levelno == logging.DEBUG for r in caplog.records)


def test_a_room_can_map_its_own_sequences() -> None:
    dec = KeyDecoder({"#9": "raise", "*0": "help", "*2": "lower"})
    got = dec.feed_all(presses(("*", 0, 80), ("1", 200, 280), ("#", 400, 480), ("9", 600, 680),
                                ("*", 800, 880), ("0", 1000, 1080)))
    assert names(got) == ["raise", "help"]


@pytest.mark.parametrize("bad", [{"": "x"}, {"*x": "x"}, {"*1": "a", "*12": "b"}])
def test_a_mapping_that_cannot_work_is_refused(bad: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        KeyDecoder(bad)


def test_a_synthesized_star_1_inside_10_s_of_speech_is_found_exactly_once() -> None:
    rng = np.random.default_rng(31)
    audio = synth.concat(
        synth.speech_like(4000, rng=rng),
        synth.dtmf("*1", tone_ms=60, gap_ms=60, level_dbm0=-15, rng=rng),
        synth.speech_like(5760, rng=rng),
    )
    noisy = synth.add_noise(audio, 30.0, rng=rng)
    det = DtmfDetector()
    dec = KeyDecoder()
    commands = []
    for frame in synth.to_frames(noisy):
        for event in det.feed(frame):
            cmd = dec.feed(event)
            if cmd is not None:
                commands.append(cmd)
    for event in det.flush():
        assert dec.feed(event) is None
    assert names(commands) == ["raise"]
    assert commands[0].at_ms == pytest.approx(4120.0, abs=10.0)


def test_a_rooms_keys_make_one_table_for_participants_and_another_for_the_host() -> None:
    from handraise.phone.keys import HOST_ONLY, room_commands, star_digits
    from handraise.rooms import default_settings

    keys = {name: str(v) for name, v in default_settings().items() if name.endswith("_keys")}
    participant = room_commands(keys, host=False)
    assert participant == {"*1": "raise", "*2": "lower", "*3": "where", "*0": "help",
                           "*5": HOST_ONLY, "*6": HOST_ONLY, "*7": HOST_ONLY, "*8": HOST_ONLY,
                           "*9": HOST_ONLY}
    host = room_commands(keys, host=True)
    assert host == {"*0": "help", "*5": "host_call_next", "*6": "host_done", "*7": "host_queue",
                    "*8": "host_lower_all", "*9": "host_mute_all"}
    assert star_digits({"*1": "raise", "#3": "where", "7": "x"}) == {"1": "raise"}
    # Every table is one a decoder accepts, and it hears the room's own keys.
    dec = KeyDecoder(room_commands({**keys, "where_keys": "#3"}, host=False))
    got = dec.feed_all(presses(("#", 0, 80), ("3", 200, 280), ("*", 400, 480), ("5", 600, 680)))
    assert names(got) == ["where", HOST_ONLY]
