"""The DTMF detector against ITU-T Q.24 (AT&T column) and the Bell receiver guidelines.

Every row of the table in issue 3 is a parametrised test over all 16 keys, built with
``synth``. Signals go through mu-law, as Twilio's would.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from handraise.dsp import mulaw, synth
from handraise.dsp.dtmf import DetectorBank, DigitEvent, DigitStart, DtmfDetector, detect
from handraise.dsp.tones import KEYS

ALL_KEYS = list(KEYS)


def digits_of(x: np.ndarray) -> str:
    """Keys detected in a signal, after mu-law encoding, as one string."""
    return "".join(e.digit for e in detect(mulaw.encode(x)))


def lead_in(rng: np.random.Generator) -> np.ndarray:
    """A random 0-60 ms of silence so tones fall at any phase of the 5 ms analysis grid."""
    return synth.silence(float(rng.uniform(0.0, 60.0)))


def key_seed(key: str, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng(1000 * salt + KEYS.index(key))


# -- frequency deviation ------------------------------------------------------------


@pytest.mark.parametrize("key", ALL_KEYS)
@pytest.mark.parametrize(
    ("low_off", "high_off"),
    [(0.015, 0.015), (-0.015, -0.015), (0.015, -0.015), (-0.015, 0.015)],
)
def test_a_key_with_both_tones_off_by_1_5_percent_is_detected_once(
    key: str, low_off: float, high_off: float
) -> None:
    rng = key_seed(key, 1)
    tone = synth.dtmf(key, low_offset=low_off, high_offset=high_off, rng=rng)
    x = synth.concat(lead_in(rng), tone)
    assert digits_of(x) == key


@pytest.mark.parametrize("key", ALL_KEYS)
@pytest.mark.parametrize(
    ("low_off", "high_off"),
    [
        (0.035, 0.035),
        (-0.035, -0.035),
        (0.035, 0.0),
        (-0.035, 0.0),
        (0.0, 0.035),
        (0.0, -0.035),
        (0.045, -0.045),
    ],
)
def test_a_key_with_a_tone_off_by_3_5_percent_or_more_is_not_detected(
    key: str, low_off: float, high_off: float
) -> None:
    rng = key_seed(key, 2)
    x = synth.dtmf(key, tone_ms=200, low_offset=low_off, high_offset=high_off, rng=rng)
    assert digits_of(x) == ""


# -- duration -----------------------------------------------------------------------


@pytest.mark.parametrize("key", ALL_KEYS)
@pytest.mark.parametrize("tone_ms", [40.0, 45.0, 60.0, 1000.0])
def test_a_tone_of_40_ms_or_longer_is_detected_once(key: str, tone_ms: float) -> None:
    rng = key_seed(key, 3)
    for _ in range(4):
        x = synth.concat(lead_in(rng), synth.dtmf(key, tone_ms=tone_ms, rng=rng))
        assert digits_of(x) == key


@pytest.mark.parametrize("key", ALL_KEYS)
@pytest.mark.parametrize("tone_ms", [23.0, 20.0, 10.0])
def test_a_tone_of_23_ms_or_shorter_is_not_detected(key: str, tone_ms: float) -> None:
    rng = key_seed(key, 4)
    for _ in range(8):
        x = synth.concat(lead_in(rng), synth.dtmf(key, tone_ms=tone_ms, rng=rng))
        assert digits_of(x) == ""


@pytest.mark.parametrize("key", ALL_KEYS)
def test_the_reported_duration_is_the_tone_duration_within_10_ms(key: str) -> None:
    rng = key_seed(key, 5)
    lead = lead_in(rng)
    events = detect(mulaw.encode(synth.concat(lead, synth.dtmf(key, tone_ms=120, rng=rng))))
    assert len(events) == 1
    start_ms = lead.size / 8.0
    assert abs(events[0].start_ms - start_ms) <= 10.0
    assert abs(events[0].end_ms - (start_ms + 120.0)) <= 10.0


# -- pause and dropout --------------------------------------------------------------


@pytest.mark.parametrize("key", ALL_KEYS)
@pytest.mark.parametrize("gap_ms", [40.0, 60.0])
def test_a_pause_of_40_ms_separates_two_presses_of_the_same_key(key: str, gap_ms: float) -> None:
    rng = key_seed(key, 6)
    x = synth.concat(lead_in(rng), synth.dtmf(key * 3, tone_ms=40, gap_ms=gap_ms, rng=rng))
    assert digits_of(x) == key * 3


@pytest.mark.parametrize("key", ALL_KEYS)
@pytest.mark.parametrize("dropout_ms", [5.0, 10.0])
@pytest.mark.parametrize("where", [0.25, 0.5, 0.7])
def test_a_dropout_of_up_to_10_ms_does_not_split_a_key(
    key: str, dropout_ms: float, where: float
) -> None:
    rng = key_seed(key, 7)
    tone = synth.dtmf(key, tone_ms=80, rng=rng)
    broken = synth.with_dropout(tone, 80 * where - dropout_ms / 2, dropout_ms)
    x = synth.concat(lead_in(rng), broken)
    assert digits_of(x) == key


def test_all_16_keys_at_10_digits_per_second_are_detected_in_order() -> None:
    rng = np.random.default_rng(8)
    sequence = KEYS + KEYS[::-1] + "1*1*2#2#"
    x = synth.dtmf(sequence, tone_ms=50, gap_ms=50, rng=rng)
    assert digits_of(x) == sequence


# -- level and twist ----------------------------------------------------------------


@pytest.mark.parametrize("key", ALL_KEYS)
@pytest.mark.parametrize("level", [-3.0, -10.0, -18.0, -25.0])
def test_a_key_at_any_level_from_minus_3_to_minus_25_dbm0_is_detected(
    key: str, level: float
) -> None:
    rng = key_seed(key, 9)
    x = synth.concat(lead_in(rng), synth.dtmf(key, level_dbm0=level, rng=rng))
    assert digits_of(x) == key


@pytest.mark.parametrize("key", ALL_KEYS)
@pytest.mark.parametrize("level", [-55.0, -60.0])
def test_a_key_at_minus_55_dbm0_or_weaker_is_not_detected(key: str, level: float) -> None:
    rng = key_seed(key, 10)
    x = synth.dtmf(key, tone_ms=500, level_dbm0=level, rng=rng)
    assert digits_of(x) == ""


@pytest.mark.parametrize("key", ALL_KEYS)
@pytest.mark.parametrize(
    ("low_dbm0", "high_dbm0"),
    [
        (-10.0, -18.0),  # twist -8 dB
        (-10.0, -6.0),  # twist +4 dB
        (-17.0, -25.0),  # twist -8 dB, weaker tone at the level limit
        (-25.0, -21.0),  # twist +4 dB, weaker tone at the level limit
        (-3.0, -11.0),  # twist -8 dB at the loud limit
        (-7.0, -3.0),  # twist +4 dB at the loud limit
    ],
)
def test_a_key_with_twist_from_minus_8_to_plus_4_db_is_detected(
    key: str, low_dbm0: float, high_dbm0: float
) -> None:
    rng = key_seed(key, 11)
    x = synth.concat(lead_in(rng), synth.dtmf(key, low_dbm0=low_dbm0, high_dbm0=high_dbm0, rng=rng))
    assert digits_of(x) == key


@pytest.mark.parametrize("key", ALL_KEYS)
@pytest.mark.parametrize("twist", [-8.0, 4.0])
@pytest.mark.parametrize("offset", [0.015, -0.015])
def test_twist_at_the_limit_and_frequency_off_by_1_5_percent_together_are_detected(
    key: str, twist: float, offset: float
) -> None:
    rng = key_seed(key, 12)
    x = synth.concat(
        lead_in(rng),
        synth.dtmf(key, level_dbm0=-12.0, twist_db=twist, freq_offset=offset, rng=rng),
    )
    assert digits_of(x) == key


# -- noise --------------------------------------------------------------------------


@pytest.mark.parametrize("key", ALL_KEYS)
@pytest.mark.parametrize("color", ["white", "pink"])
def test_at_15_db_snr_at_least_99_percent_of_tones_are_detected_and_none_wrongly(
    key: str, color: str
) -> None:
    rng = key_seed(key, 13)
    presses = 50
    clean = synth.dtmf(key * presses, tone_ms=50, gap_ms=50, level_dbm0=-20.0, rng=rng)
    x = synth.add_noise(clean, 15.0, color=color, rng=rng)
    found = digits_of(x)
    assert set(found) <= {key}
    assert presses * 0.99 <= len(found) <= presses


@pytest.mark.parametrize("color", ["white", "pink"])
@pytest.mark.parametrize(("key", "low_off", "high_off"), [("*", 0.015, -0.015), ("1", 0.0, 0.0)])
def test_a_key_at_a_harmonic_ratio_is_detected_in_noise_at_15_db_snr(
    key: str, low_off: float, high_off: float, color: str
) -> None:
    # "*" with its tones 1.5 % apart inwards is at 5:4 (0.3 % off), like harmonics 4 and
    # 5 of one voice; "1" is 0.9 % off 7:4. The harmonic-series check looks at them
    # and must tell the noise between harmonics from a series.
    rng = key_seed(key, 21)
    presses = 50
    clean = synth.dtmf(key * presses, tone_ms=50, gap_ms=50, level_dbm0=-20.0,
                       low_offset=low_off, high_offset=high_off, rng=rng)
    found = digits_of(synth.add_noise(clean, 15.0, color=color, rng=rng))
    assert set(found) <= {key}
    assert presses * 0.99 <= len(found) <= presses


@pytest.mark.parametrize("key", ALL_KEYS)
def test_a_key_loud_enough_to_be_clipped_by_mu_law_is_detected(key: str) -> None:
    # Both tones at 0 dBm0 overload mu-law at their peaks: the clipping's third-order
    # products fall on the harmonic series of 4:7 and 3:7 pairs, and must not count.
    rng = key_seed(key, 22)
    x = synth.concat(lead_in(rng), synth.dtmf(key * 10, tone_ms=40, gap_ms=60,
                                              level_dbm0=0.0, rng=rng))
    assert np.abs(mulaw.decode(mulaw.encode(x))).max() >= 0.97
    assert digits_of(x) == key * 10


# -- streaming ----------------------------------------------------------------------


def mixed_signal() -> np.ndarray:
    rng = np.random.default_rng(14)
    return synth.concat(
        synth.speech_like(1500, rng=rng),
        synth.dtmf("*1", tone_ms=45, gap_ms=45, rng=rng),
        synth.noise(500, -40, rng=rng),
        synth.dtmf("#0D", tone_ms=70, gap_ms=40, level_dbm0=-22, rng=rng),
        synth.speech_like(700, rng=rng),
        synth.dtmf("9", tone_ms=300, rng=rng),
    )


def run(detector: DtmfDetector, chunks: list[bytes]) -> list[DigitStart | DigitEvent]:
    events: list[DigitStart | DigitEvent] = []
    for chunk in chunks:
        events += detector.feed(chunk)
    return events + detector.flush()


def bank_and_single_detectors(
    signals: list[np.ndarray],
) -> tuple[list[list[DigitStart | DigitEvent]], list[list[DigitStart | DigitEvent]]]:
    """Events per stream from one DetectorBank over all ``signals``, and from one
    DtmfDetector per signal (the reference), fed the same 160-byte frames."""
    n = max(s.size for s in signals)
    rows = [mulaw.encode(synth.concat(s, synth.silence((n - s.size) / 8.0))) for s in signals]
    frames = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), -1)
    bank = DetectorBank(len(rows))
    got: list[list[DigitStart | DigitEvent]] = [[] for _ in rows]
    for a in range(0, n, 160):
        for stream, ev in bank.feed(frames[:, a : a + 160]):
            got[stream].append(ev)
    for stream, ev in bank.flush():
        got[stream].append(ev)
    return got, [run(DtmfDetector(), [row]) for row in rows]


def test_events_do_not_depend_on_how_the_audio_is_cut_into_frames() -> None:
    data = mulaw.encode(mixed_signal())
    by_160 = run(DtmfDetector(), [data[i : i + 160] for i in range(0, len(data), 160)])
    by_1 = run(DtmfDetector(), [data[i : i + 1] for i in range(len(data))])
    rng = np.random.default_rng(15)
    cuts = np.cumsum(rng.integers(0, 700, size=len(data) // 100))
    cuts = [0, *[int(c) for c in cuts if c < len(data)], len(data)]
    by_random = run(DtmfDetector(), [data[a:b] for a, b in itertools.pairwise(cuts)])
    assert [e.digit for e in by_160 if isinstance(e, DigitEvent)] == list("*1#0D9")
    assert by_1 == by_160
    assert by_random == by_160


def test_a_start_notice_precedes_every_key_and_comes_within_50_ms_of_its_start() -> None:
    events = run(DtmfDetector(), synth.to_frames(mixed_signal()))
    starts = [e for e in events if isinstance(e, DigitStart)]
    ends = [e for e in events if isinstance(e, DigitEvent)]
    assert [(s.digit, s.start_ms) for s in starts] == [(e.digit, e.start_ms) for e in ends]
    # The notice is emitted while the key still sounds: check its position in the stream.
    det = DtmfDetector()
    for i, frame in enumerate(synth.to_frames(mixed_signal())):
        for ev in det.feed(frame):
            if isinstance(ev, DigitStart):
                assert (i + 1) * 20.0 - ev.start_ms <= 50.0 + 20.0


def test_the_bank_gives_the_same_events_as_one_detector_per_stream() -> None:
    rng = np.random.default_rng(16)
    signals = [
        mixed_signal(),
        synth.concat(synth.silence(333), synth.dtmf(KEYS, tone_ms=40, gap_ms=40, rng=rng)),
        synth.speech_like(4000, rng=rng),
        synth.add_noise(synth.dtmf("*2" * 5, rng=rng), 15.0, rng=rng),
        synth.silence(10),
    ]
    got, expected = bank_and_single_detectors(signals)
    assert got == expected
    assert sum(isinstance(e, DigitEvent) for e in got[1]) == 16


def test_a_reset_bank_slot_starts_a_new_stream_at_0_ms() -> None:
    tone = mulaw.encode(synth.dtmf("5", tone_ms=100))
    pad = bytes([mulaw.SILENCE_BYTE]) * (1600 - len(tone))
    bank = DetectorBank(2)
    frames = np.frombuffer((tone + pad) * 2, dtype=np.uint8).reshape(2, -1)
    bank.feed(frames)
    bank.reset(1)
    events = bank.feed(frames) + bank.flush()
    by_stream = {s: e for s, e in events if isinstance(e, DigitEvent)}
    assert by_stream[0].start_ms == pytest.approx(200.0, abs=10.0)
    assert by_stream[1].start_ms == pytest.approx(0.0, abs=10.0)


def test_silence_and_speech_alone_give_no_keys() -> None:
    rng = np.random.default_rng(17)
    x = synth.concat(
        synth.silence(500),
        synth.speech_like(20000, level_dbm0=-15, rng=rng),
        synth.noise(2000, -30, color="pink", rng=rng),
    )
    assert digits_of(x) == ""


def test_a_bank_rejects_frames_of_the_wrong_shape() -> None:
    bank = DetectorBank(3)
    with pytest.raises(ValueError, match="shape"):
        bank.feed(np.zeros((2, 160), dtype=np.uint8))


def test_a_busy_bank_gives_the_same_events_as_one_detector_per_stream() -> None:
    # Over SCALAR_STREAMS streams active at once: the vectorised state machine runs.
    rng = np.random.default_rng(18)
    signals = []
    for _ in range(24):
        keys = "".join(rng.choice(list(KEYS), 6))
        signals.append(
            synth.add_noise(
                synth.concat(
                    synth.silence(float(rng.uniform(0, 100))),
                    synth.dtmf(keys, tone_ms=float(rng.uniform(40, 120)),
                               gap_ms=float(rng.uniform(40, 90)), rng=rng),
                    synth.with_dropout(synth.dtmf("5", tone_ms=2000, rng=rng), 500.0, 8.0),
                ),
                float(rng.uniform(14, 30)),
                rng=rng,
            )
        )
    got, expected = bank_and_single_detectors(signals)
    assert got == expected
    assert all(sum(isinstance(e, DigitEvent) for e in evs) == 7 for evs in got)


def test_a_busy_bank_rejects_harmonic_notes_as_one_detector_per_stream_does() -> None:
    # Over SCALAR_STREAMS streams: the vectorised state machine runs the harmonic-series
    # check on suspect windows, with windows that start in the previous frame.
    rng = np.random.default_rng(19)
    note = {1: -16, 2: -16, 3: 0, 4: -4, 5: -27, 6: -33}  # f0 308 Hz: 924 + 1232 Hz, "*"
    signals = []
    for i in range(20):
        signals.append(
            synth.concat(
                synth.silence(float(rng.uniform(0, 100))),
                synth.harmonic_note(600, 308.0 * (1 + 0.002 * (i % 5)), note,
                                    vibrato=0.004 * (i % 3), rng=rng),
                synth.dtmf("1*5", tone_ms=float(rng.uniform(40, 90)), gap_ms=50, rng=rng),
            )
        )
    got, expected = bank_and_single_detectors(signals)
    assert got == expected
    assert all([e.digit for e in evs if isinstance(e, DigitEvent)] == list("1*5") for evs in got)
