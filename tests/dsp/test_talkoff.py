"""Talk-off: speech and music must not be taken for keys, nor for *1 / *2 commands.

Speech is rendered by Debian's espeak-ng (CI installs it); without it these tests skip.
Renderings are cached under ~/.cache/handraise/talkoff.
"""

from __future__ import annotations

import numpy as np
import pytest

from handraise.dsp import corpus, mulaw, synth
from handraise.dsp.dtmf import DigitEvent, DtmfDetector, detect
from handraise.phone.keys import KeyDecoder

needs_espeak = pytest.mark.skipif(
    not corpus.espeak_available(), reason="espeak-ng is not installed (apt-get install espeak-ng)"
)


def false_keys_and_commands(pieces: list[np.ndarray]) -> tuple[list[str], list[str]]:
    keys: list[str] = []
    commands: list[str] = []
    for x in pieces:
        events = detect(mulaw.encode(x))
        keys += [e.digit for e in events]
        commands += [c.keys for c in KeyDecoder().feed_all(events)]
    return keys, commands


@needs_espeak
def test_espeak_speech_with_a_star_1_inside_gives_exactly_one_raise() -> None:
    speech = corpus.render_speech(corpus.SENTENCES[0] + " " + corpus.SENTENCES[1], "en-us", 170, 50)
    speech = speech * 10 ** ((-16 - mulaw.level_dbm0(speech)) / 20)
    half = speech.size // 2
    audio = synth.concat(
        speech[:half], synth.dtmf("*1", level_dbm0=-14, rng=np.random.default_rng(3)), speech[half:]
    )
    det = DtmfDetector()
    events = [e for f in synth.to_frames(audio) for e in det.feed(f)] + det.flush()
    commands = KeyDecoder().feed_all(events)
    assert [c.name for c in commands] == ["raise"]
    assert [e.digit for e in events if isinstance(e, DigitEvent)] == ["*", "1"]


@pytest.mark.slow
@needs_espeak
def test_twenty_minutes_of_speech_give_no_false_key_and_no_false_command() -> None:
    takes = corpus.speech_corpus(20, seed=11)
    keys, commands = false_keys_and_commands(takes)
    assert keys == []
    assert commands == []


@pytest.mark.slow
def test_fifteen_minutes_of_music_give_no_false_key_and_no_false_command() -> None:
    keys, commands = false_keys_and_commands(corpus.music_corpus(15, seed=12))
    assert keys == []
    assert commands == []


def test_telephone_band_resamples_to_8_khz_and_keeps_only_300_to_3400_hz() -> None:
    fs = 22050
    t = np.arange(fs) / fs
    x = 0.3 * np.sin(2 * np.pi * 1000 * t) + 0.3 * np.sin(2 * np.pi * 100 * t)
    y = corpus.telephone_band(x + 0.3 * np.sin(2 * np.pi * 3900 * t), fs)
    assert y.size == 8000
    spec = np.abs(np.fft.rfft(y)) / 4000  # 1 Hz bins, amplitude
    assert spec[1000] == pytest.approx(0.3, rel=1e-3)
    assert spec[100] < 1e-6
    assert spec[3900] < 1e-6


def test_the_music_corpus_is_deterministic_and_a_minute_a_piece() -> None:
    a = corpus.music_corpus(3, seed=5)
    b = corpus.music_corpus(3, seed=5)
    assert [p.size for p in a] == [480_000] * 3
    for p, q in zip(a, b, strict=True):
        np.testing.assert_array_equal(p, q)
