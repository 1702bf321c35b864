"""Talk-off corpus: speech and music that contain no keys, at 8 kHz telephone quality.

Test and benchmark support, not used by the server. Unlike the rest of ``dsp`` it runs a
program: speech is rendered by Debian's ``espeak-ng`` (several voices, rates and pitches
reading a few hundred meeting-style sentences), band-limited to the telephone band
(300-3400 Hz) and resampled to 8 kHz; renderings are cached as ``.npy`` files, never
committed. Music comes from :func:`handraise.dsp.synth.music_like`.

:func:`wide_corpus` is a second, independent corpus for what the first one lacks: twelve
other languages, female and child pitch, fast speech, singing (espeak-ng made to sing
through SSML, and synthetic sopranos and children's voices), speech over background
music. Its clips carry a label saying how each was made, so a false key can be traced
to the voice, rate and pitch that produced it.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from handraise.dsp import mulaw, synth

__all__ = [
    "FOREIGN_SENTENCES",
    "SENTENCES",
    "VOICES",
    "WIDE_KINDS",
    "Clip",
    "EspeakMissingError",
    "default_cache_dir",
    "espeak_available",
    "music_corpus",
    "render_speech",
    "speech_corpus",
    "telephone_band",
    "wide_corpus",
]

FloatArray = npt.NDArray[np.float64]

_OPENERS = (
    "Good morning everyone,",
    "Thanks for joining the call,",
    "Sorry, I was on mute,",
    "Can everyone hear me?",
    "Just a quick question,",
    "Before we move on,",
    "If I may add something,",
    "Hello, this is Maria from accounting,",
    "Right, so to summarise,",
    "I think,",
    "Honestly,",
    "Going back to the previous point,",
    "As I said in my email,",
    "Okay, next item,",
    "Hi all, it's Peter here,",
    "One more thing,",
    "Let me share what we found,",
    "Well, actually,",
    "To be fair,",
    "From the field team's side,",
    "Quick update from the warehouse,",
    "Hmm, let me check,",
    "Yes, absolutely,",
    "No, I don't think so,",
    "Could you repeat that please?",
    "Sorry to interrupt,",
    "On the budget question,",
    "For the record,",
    "Alright,",
    "Listen,",
)
_BODIES = (
    "the quarterly numbers look much better than we expected.",
    "we need to finish the migration before the end of the month.",
    "I would like to raise a concern about the delivery schedule.",
    "the new volunteers start training next Tuesday at nine thirty.",
    "can we move the review meeting to Thursday afternoon?",
    "the parish council approved the playground repairs.",
    "our customers keep asking about the mobile application.",
    "I have three points, and the first one is about safety.",
    "the shipment from Rotterdam arrived two days late again.",
    "please send me the slides after the call.",
    "the water pump on the north field failed over the weekend.",
    "we counted four hundred and twelve responses to the survey.",
    "the audit found nothing serious, just a few small issues.",
    "my connection is really bad today, I apologise.",
    "let's vote on the proposal at the next meeting.",
    "the school bus route will change from September.",
    "I agree with what Sarah just said about the contract.",
    "we should ask the lawyers before we sign anything.",
    "sales in the eastern region dropped by seven percent.",
    "the choir rehearsal is cancelled this week because of the snow.",
    "who is taking the minutes today?",
    "I can hear a lot of background noise, could someone mute?",
    "the hospital wants the report by Friday at noon.",
    "my phone number changed, I'll send the new one by email.",
    "we're still waiting for the permit from the city.",
    "the temperature in the server room reached thirty degrees.",
    "there's a fire drill at eleven, so we might have to stop early.",
    "the harvest was about twenty percent lower than last year.",
    "thank you all, that was a very productive discussion.",
    "I'm going to hand over to James for the technical part.",
)


def _sentences(count: int = 300) -> tuple[str, ...]:
    pairs = list(itertools.product(range(len(_OPENERS)), range(len(_BODIES))))
    order = np.random.default_rng(2024).permutation(len(pairs))[:count]
    return tuple(f"{_OPENERS[pairs[i][0]]} {_BODIES[pairs[i][1]]}" for i in order)


SENTENCES: tuple[str, ...] = _sentences()
"""300 distinct meeting-style sentences (no digits read as keys, obviously)."""

VOICES: tuple[str, ...] = (
    "en-us",
    "en-gb",
    "en-us+f3",
    "en-gb+f2",
    "en+m3",
    "en-us+f5",
    "en-gb-scotland",
    "en-029+f4",
    "en-gb-x-rp+m7",
    "en-us+f1",
)
"""espeak-ng voices with variants: male and female, several accents."""

_RATES = (130, 165, 200, 240)
_PITCHES = (25, 50, 75)
_SENTENCES_PER_TAKE = 10


class EspeakMissingError(RuntimeError):
    """``espeak-ng`` is not installed (Debian: ``apt-get install espeak-ng``)."""


def espeak_available() -> bool:
    """Whether the ``espeak-ng`` program is on ``PATH``."""
    return shutil.which("espeak-ng") is not None


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/handraise/talkoff`` (default ``~/.cache/handraise/talkoff``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "handraise" / "talkoff"


def telephone_band(x: npt.ArrayLike, sample_rate: float) -> FloatArray:
    """Resample to 8 kHz and band-limit to the telephone band (300-3400 Hz).

    Parameters
    ----------
    x : array_like of float, shape (n,)
        Samples at ``sample_rate``.
    sample_rate : float
        Input rate in Hz.

    Returns
    -------
    y : ndarray of float64, shape (round(n * 8000 / sample_rate),)
        Samples at 8 kHz (FFT resampling with raised-cosine band edges).
    """
    a = np.asarray(x, dtype=np.float64)
    n_out = round(a.size * synth.SAMPLE_RATE / sample_rate)
    if n_out == 0:
        return np.zeros(0)
    spec = np.fft.rfft(a)
    f = np.fft.rfftfreq(a.size, 1.0 / sample_rate)
    gain = np.clip((f - 200.0) / 100.0, 0.0, 1.0) * np.clip((3600.0 - f) / 200.0, 0.0, 1.0)
    gain = 0.5 - 0.5 * np.cos(np.pi * gain)
    keep = n_out // 2 + 1
    out = np.zeros(keep, dtype=complex)
    m = min(keep, spec.size)
    out[:m] = (spec * gain)[:m]
    return np.fft.irfft(out, n_out) * (n_out / a.size)


def _espeak_version() -> str:
    done = subprocess.run(
        ["espeak-ng", "--version"], capture_output=True, text=True, check=False, timeout=30
    )
    return done.stdout.strip()


def render_speech(
    text: str, voice: str, rate: int, pitch: int, *, ssml: bool = False
) -> FloatArray:
    """Speak ``text`` with espeak-ng and return telephone-band audio.

    Parameters
    ----------
    text : str
        What to say.
    voice : str
        espeak-ng voice, e.g. ``"en-us+f3"``.
    rate : int
        Words per minute.
    pitch : int
        espeak-ng pitch, 0-99.
    ssml : bool
        ``text`` is SSML (``<prosody>`` for pitch and rate, as :func:`wide_corpus`
        uses to make espeak-ng sing).

    Returns
    -------
    x : ndarray of float64, shape (n,)
        8 kHz samples, full scale 1.0, at the level espeak-ng produced.

    Raises
    ------
    EspeakMissingError
        If espeak-ng is not installed.
    """
    if not espeak_available():
        raise EspeakMissingError("espeak-ng is not installed (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "say.wav"
        markup = ["-m"] if ssml else []
        subprocess.run(
            ["espeak-ng", *markup, "-v", voice, "-s", str(rate), "-p", str(pitch),
             "-w", str(path), text],
            check=True,
            capture_output=True,
            timeout=120,
        )
        with wave.open(str(path), "rb") as w:
            fs = w.getframerate()
            raw = w.readframes(w.getnframes())
    pcm = np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0
    return telephone_band(pcm, fs)


def _cached_render(
    cache: Path, version: str, text: str, voice: str, rate: int, pitch: int, *,
    ssml: bool = False,
) -> FloatArray:
    tag = "ssml|" if ssml else ""
    key = hashlib.sha256(f"{version}|{tag}{voice}|{rate}|{pitch}|{text}".encode()).hexdigest()
    path = cache / f"{key[:24]}.npy"
    if path.exists():
        return np.asarray(np.load(path), dtype=np.float64)
    x = render_speech(text, voice, rate, pitch, ssml=ssml)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, x)
    tmp.replace(path)
    return x


def _active_level(x: FloatArray) -> float:
    frames = x[: x.size - x.size % 160].reshape(-1, 160)
    power = np.mean(frames * frames, axis=1)
    active = power[power > mulaw.DBM0_RMS**2 * 10 ** (-50 / 10)]
    if active.size == 0:
        return float("-inf")
    return float(10 * np.log10(np.mean(active) / mulaw.DBM0_RMS**2))


def speech_corpus(
    minutes: float, *, cache_dir: Path | None = None, seed: int = 0
) -> list[FloatArray]:
    """Speech for talk-off tests: takes of ten sentences each, cycling voices and rates.

    Parameters
    ----------
    minutes : float
        Least total duration wanted.
    cache_dir : pathlib.Path, optional
        Where renderings are kept (default :func:`default_cache_dir`).
    seed : int
        Chooses sentences, pitches and levels.

    Returns
    -------
    takes : list of ndarray of float64, shape (n_i,)
        8 kHz telephone-band speech, each take at an active level between -28 and
        -10 dBm0.

    Raises
    ------
    EspeakMissingError
        If espeak-ng is not installed.
    """
    if not espeak_available():
        raise EspeakMissingError("espeak-ng is not installed (apt-get install espeak-ng)")
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    version = _espeak_version()
    rng = np.random.default_rng(seed)
    takes: list[FloatArray] = []
    total = 0
    want = minutes * 60 * synth.SAMPLE_RATE
    i = 0
    while total < want:
        voice = VOICES[i % len(VOICES)]
        rate = _RATES[(i // len(VOICES)) % len(_RATES)]
        pitch = _PITCHES[int(rng.integers(len(_PITCHES)))]
        chosen = rng.choice(len(SENTENCES), _SENTENCES_PER_TAKE, replace=False)
        text = " ".join(SENTENCES[int(k)] for k in chosen)
        x = _cached_render(cache, version, text, voice, rate, pitch)
        level = rng.uniform(-28.0, -10.0)
        x = x * 10 ** ((level - _active_level(x)) / 20)
        takes.append(x)
        total += x.size
        i += 1
    return takes


def music_corpus(minutes: float, *, seed: int = 0) -> list[FloatArray]:
    """Music for talk-off tests: equal parts chords, harmonic melody and sung vowels.

    Parameters
    ----------
    minutes : float
        Total duration.
    seed : int
        Source of randomness.

    Returns
    -------
    pieces : list of ndarray of float64, shape (n_i,)
        One-minute pieces at 8 kHz, levels between -25 and -10 dBm0.
    """
    rng = np.random.default_rng(seed)
    kinds = ("chords", "harmonics", "sung")
    pieces = []
    for i in range(max(1, round(minutes))):
        pieces.append(
            synth.music_like(
                60_000, kind=kinds[i % 3], level_dbm0=rng.uniform(-25.0, -10.0), rng=rng
            )
        )
    return pieces


# -- the wide corpus -------------------------------------------------------------------

FOREIGN_SENTENCES: dict[str, tuple[str, ...]] = {
    "de": (
        "Guten Morgen zusammen, können alle mich gut hören?",
        "Die Zahlen für das dritte Quartal sehen besser aus als erwartet.",
        "Ich möchte noch kurz etwas zum Lieferplan sagen.",
        "Wir sollten die Entscheidung auf die nächste Sitzung verschieben.",
        "Entschuldigung, ich war stummgeschaltet, bitte noch einmal.",
        "Die neue Kollegin beginnt am Montag in der Buchhaltung.",
        "Vielen Dank an alle, das war eine sehr gute Besprechung.",
        "Wer schreibt heute das Protokoll?",
    ),
    "fr-fr": (
        "Bonjour à tous, est-ce que tout le monde m'entend bien?",
        "Les chiffres du trimestre sont meilleurs que prévu.",
        "Je voudrais revenir sur la question du budget.",
        "On pourrait déplacer la réunion à jeudi après-midi?",
        "Pardon, j'étais en sourdine, vous pouvez répéter?",
        "La livraison de Marseille est encore arrivée en retard.",
        "Merci beaucoup, c'était une discussion très utile.",
        "Qui prend les notes aujourd'hui?",
    ),
    "es": (
        "Buenos días a todos, ¿me escuchan bien?",
        "Las cifras del trimestre son mejores de lo que esperábamos.",
        "Quisiera hacer una pregunta sobre el calendario de entregas.",
        "Podemos votar la propuesta en la próxima reunión.",
        "Perdón, estaba silenciado, ¿pueden repetir la pregunta?",
        "El envío de Valencia llegó otra vez con dos días de retraso.",
        "Muchas gracias a todos, ha sido una reunión muy productiva.",
        "¿Quién toma las notas hoy?",
    ),
    "it": (
        "Buongiorno a tutti, mi sentite bene?",
        "I numeri del trimestre sono migliori del previsto.",
        "Vorrei aggiungere qualcosa sulla sicurezza del cantiere.",
        "Possiamo spostare la riunione a giovedì pomeriggio?",
        "Scusate, ero in muto, potete ripetere?",
        "La consegna da Milano è arrivata di nuovo in ritardo.",
        "Grazie a tutti, è stata una discussione molto utile.",
        "Chi scrive il verbale oggi?",
    ),
    "pt-br": (
        "Bom dia a todos, vocês estão me ouvindo?",
        "Os números do trimestre estão melhores do que esperávamos.",
        "Eu gostaria de falar sobre o cronograma de entrega.",
        "Podemos mudar a reunião para quinta-feira à tarde?",
        "Desculpe, eu estava no mudo, pode repetir?",
        "A carga de Santos chegou atrasada mais uma vez.",
        "Muito obrigado, foi uma conversa muito produtiva.",
        "Quem vai fazer a ata hoje?",
    ),
    "nl": (
        "Goedemorgen allemaal, kan iedereen mij horen?",
        "De cijfers van dit kwartaal zijn beter dan verwacht.",
        "Ik wil graag iets zeggen over de planning van de levering.",
        "Kunnen we de vergadering naar donderdagmiddag verplaatsen?",
        "Sorry, ik stond op stil, kun je dat herhalen?",
        "De zending uit Rotterdam kwam weer twee dagen te laat.",
        "Bedankt allemaal, dat was een heel nuttig gesprek.",
        "Wie maakt vandaag de notulen?",
    ),
    "pl": (
        "Dzień dobry wszystkim, czy dobrze mnie słychać?",
        "Wyniki za ten kwartał są lepsze, niż się spodziewaliśmy.",
        "Chciałbym jeszcze powiedzieć coś o harmonogramie dostaw.",
        "Czy możemy przełożyć spotkanie na czwartek po południu?",
        "Przepraszam, miałem wyciszony mikrofon, możesz powtórzyć?",
        "Dostawa z Gdańska znowu przyszła z opóźnieniem.",
        "Dziękuję wszystkim, to była bardzo dobra rozmowa.",
        "Kto dzisiaj pisze protokół?",
    ),
    "sv": (
        "God morgon allihop, hör alla mig?",
        "Siffrorna för kvartalet ser bättre ut än väntat.",
        "Jag vill säga något om leveransplanen.",
        "Kan vi flytta mötet till torsdag eftermiddag?",
        "Förlåt, jag hade mikrofonen avstängd, kan du upprepa?",
        "Leveransen från Göteborg kom två dagar för sent igen.",
        "Tack allihop, det var ett mycket bra möte.",
        "Vem skriver protokollet i dag?",
    ),
    "fi": (
        "Hyvää huomenta kaikille, kuuluuko ääneni?",
        "Neljänneksen luvut näyttävät odotettua paremmilta.",
        "Haluaisin sanoa vielä jotain toimitusaikataulusta.",
        "Voimmeko siirtää kokouksen torstai-iltapäivään?",
        "Anteeksi, mikrofonini oli mykistetty, voitko toistaa?",
        "Lähetys Tampereelta tuli taas kaksi päivää myöhässä.",
        "Kiitos kaikille, tämä oli hyvin hyödyllinen keskustelu.",
        "Kuka kirjoittaa pöytäkirjan tänään?",
    ),
    "tr": (
        "Herkese günaydın, sesimi duyabiliyor musunuz?",
        "Bu çeyreğin rakamları beklediğimizden daha iyi.",
        "Teslimat takvimi hakkında bir şey söylemek istiyorum.",
        "Toplantıyı perşembe öğleden sonraya alabilir miyiz?",
        "Özür dilerim, mikrofonum kapalıydı, tekrar eder misiniz?",
        "İzmir'den gelen sevkiyat yine iki gün gecikti.",
        "Herkese teşekkürler, çok verimli bir toplantı oldu.",
        "Bugün tutanağı kim yazıyor?",
    ),
    "ru": (
        "Доброе утро всем, меня хорошо слышно?",
        "Цифры за квартал лучше, чем мы ожидали.",
        "Я хотел бы сказать пару слов о графике поставок.",
        "Можем перенести встречу на четверг после обеда?",
        "Извините, у меня был выключен микрофон, повторите, пожалуйста.",
        "Груз из Казани снова пришёл с опозданием на два дня.",
        "Спасибо всем, это была очень полезная встреча.",
        "Кто сегодня ведёт протокол?",
    ),
    "cmn": (
        "大家早上好，你们能听到我说话吗？",
        "这个季度的数字比我们预期的要好。",
        "我想再说一下交货时间的问题。",
        "我们可以把会议改到星期四下午吗？",
        "对不起，我刚才静音了，请再说一遍。",
        "从上海来的货物又晚到了两天。",
        "谢谢大家，今天的讨论很有帮助。",
        "今天谁来做会议记录？",
    ),
}
"""Meeting-style sentences in twelve languages the first corpus does not speak."""

WIDE_KINDS: tuple[str, ...] = ("speech", "speech+music", "singing", "music")
"""The kinds of :class:`Clip` in :func:`wide_corpus`."""

# Variants the first corpus does not use; female ones first, for the high-pitch takes.
_FEMALE_VARIANTS = ("f4", "Annie", "Alicia", "Andrea", "belinda", "steph", "anika",
                    "aunty", "linda", "f2", "f5", "f1")
_MALE_VARIANTS = ("m2", "m5", "m6", "klatt", "Storm", "Andy", "david", "m1")
_ENGLISH_VOICES = ("en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us")
_SING_SYLLABLES = ("laa", "naa", "daa", "loo", "noo", "mmm", "oh", "aah", "yeah", "love",
                   "you", "my", "heart", "so", "far", "home", "night", "sky", "moon", "go")
_MAJOR = (0, 2, 4, 5, 7, 9, 11, 12, 14, 16)


@dataclass(frozen=True, slots=True)
class Clip:
    """One piece of the wide talk-off corpus.

    Attributes
    ----------
    kind : str
        One of :data:`WIDE_KINDS`.
    label : str
        How it was made (voice, rate, pitch; or the synthetic source), to trace a false
        key back to its cause.
    x : ndarray of float64, shape (n,)
        8 kHz telephone-band audio, full scale 1.0.
    """

    kind: str
    label: str
    x: FloatArray


def _voice_plan(i: int, rng: np.random.Generator) -> tuple[str, str, int, int]:
    """Language, voice, rate and pitch of the ``i``-th speech take.

    One take in three is high-pitched (female variant, pitch 80-99: child-like), one in
    three fast (330-450 words per minute), one in four English in an accent or variant
    the first corpus lacks; the rest cycle through the other languages.
    """
    langs = tuple(FOREIGN_SENTENCES)
    english = i % 4 == 3
    lang = "en" if english else langs[(i - i // 4) % len(langs)]
    base = _ENGLISH_VOICES[(i // 4) % len(_ENGLISH_VOICES)] if english else lang
    if i % 3 == 0:
        variant = _FEMALE_VARIANTS[int(rng.integers(len(_FEMALE_VARIANTS)))]
        pitch = int(rng.integers(80, 100))
    else:
        pool = _FEMALE_VARIANTS + _MALE_VARIANTS
        variant = pool[int(rng.integers(len(pool)))]
        pitch = int(rng.integers(20, 80))
    rate = int(rng.integers(330, 451)) if i % 3 == 1 else int(rng.integers(120, 231))
    return lang, f"{base}+{variant}", rate, pitch


def _speech_take(
    i: int, cache: Path, version: str, rng: np.random.Generator
) -> tuple[str, FloatArray]:
    """The ``i``-th speech take: five sentences in the voice :func:`_voice_plan` picks."""
    lang, voice, rate, pitch = _voice_plan(i, rng)
    pool = SENTENCES if lang == "en" else FOREIGN_SENTENCES[lang]
    chosen = rng.choice(len(pool), 5, replace=False)
    text = " ".join(pool[int(k)] for k in chosen)
    x = _cached_render(cache, version, text, voice, rate, pitch)
    return f"{voice} rate {rate} pitch {pitch}", x


def _sung_take(
    cache: Path, version: str, rng: np.random.Generator
) -> tuple[str, FloatArray]:
    """espeak-ng made to sing: syllables held long, each on a note of a major scale."""
    pool = _FEMALE_VARIANTS + _MALE_VARIANTS
    variant = pool[int(rng.integers(len(pool)))]
    voice = f"{_ENGLISH_VOICES[int(rng.integers(len(_ENGLISH_VOICES)))]}+{variant}"
    pitch = int(rng.integers(20, 100))
    notes = []
    for _ in range(24):
        semis = _MAJOR[int(rng.integers(len(_MAJOR)))]
        percent = round(100 * (2 ** (semis / 12) - 1))
        slow = int(rng.integers(15, 45))
        word = _SING_SYLLABLES[int(rng.integers(len(_SING_SYLLABLES)))]
        notes.append(f'<prosody pitch="+{percent}%" rate="{slow}%">{word}</prosody>')
    text = "<speak>" + " ".join(notes) + "</speak>"
    x = _cached_render(cache, version, text, voice, 175, pitch, ssml=True)
    return f"sung by espeak-ng {voice} pitch {pitch}", x


def _high_voice(seconds: float, rng: np.random.Generator) -> tuple[str, FloatArray]:
    """A soprano or a child singing: notes of 150-1000 Hz with vibrato and portamento,
    through open-vowel formants that follow the pitch (as trained singers tune F1)."""
    fs = float(synth.SAMPLE_RATE)
    n = round(seconds * fs)
    child = bool(rng.integers(2))
    lo, hi = (250.0, 900.0) if child else (180.0, 1000.0)
    f0 = np.empty(n)
    pos = 0
    prev = float(rng.uniform(lo, hi))
    while pos < n:
        length = min(n - pos, round(fs * rng.uniform(0.25, 1.5)))
        note = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        t = np.arange(length) / fs
        glide = np.clip(t / 0.06, 0.0, 1.0)
        depth = rng.uniform(0.005, 0.03)
        vib = 1 + depth * np.minimum(1.0, t / 0.3) * np.sin(2 * np.pi * rng.uniform(4.5, 7) * t)
        f0[pos : pos + length] = (prev + (note - prev) * glide) * vib
        prev = note
        pos += length
    phase = 2 * np.pi * np.cumsum(f0) / fs
    vowel = np.array([(800.0, 1150.0, 2800.0), (650.0, 1080.0, 2650.0), (950.0, 1250.0, 2900.0),
                      (500.0, 900.0, 2600.0), (700.0, 1300.0, 2700.0)])[int(rng.integers(5))]
    x = np.zeros(n)
    for k in range(1, int(3900 / lo) + 1):
        fk = k * f0
        f1 = np.maximum(vowel[0], f0 * 1.05)  # formant tuning: F1 stays above f0
        gain = 1.0 / k
        for fj, bw in ((f1, 90.0), (vowel[1], 120.0), (vowel[2], 170.0)):
            gain = gain * fj**2 / np.sqrt((fj**2 - fk**2) ** 2 + (fk * bw) ** 2)
        x += np.where(fk < 3900.0, gain, 0.0) * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    breath = np.abs(np.sin(np.pi * np.arange(n) / (fs * rng.uniform(3, 6)))) ** 0.2
    return ("child" if child else "soprano") + f" singing, vowel {vowel[:2].astype(int)}", x * breath


def _set_level(x: FloatArray, level_dbm0: float) -> FloatArray:
    return x * 10 ** ((level_dbm0 - _active_level(x)) / 20)


def wide_corpus(
    minutes: float, *, cache_dir: Path | None = None, seed: int = 0
) -> list[Clip]:
    """A talk-off corpus independent of :func:`speech_corpus`, of ``minutes`` in all.

    Made of, by duration: 45 % speech (:data:`FOREIGN_SENTENCES` and English in other
    voices: a third high-pitched, a third fast, see :func:`_voice_plan`), 15 % speech
    over background music (music 6-18 dB below the speech), 15 % singing (espeak-ng
    singing through SSML, synthetic sopranos and children), 25 % music
    (:func:`music_corpus`). Speech renderings are cached like :func:`speech_corpus`'s;
    everything else is synthesised from ``seed``, so a given ``(minutes, seed)`` always
    gives the same clips.

    Parameters
    ----------
    minutes : float
        Least total duration.
    cache_dir : pathlib.Path, optional
        Where renderings are kept (default :func:`default_cache_dir`).
    seed : int
        Chooses texts, voices, pitches, levels and the synthetic parts.

    Returns
    -------
    clips : list of Clip
        In the order speech, speech+music, singing, music; each at an active level
        between -28 and -10 dBm0.

    Raises
    ------
    EspeakMissingError
        If espeak-ng is not installed.
    """
    if not espeak_available():
        raise EspeakMissingError("espeak-ng is not installed (apt-get install espeak-ng)")
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    version = _espeak_version()
    rng = np.random.default_rng(seed)
    fs = synth.SAMPLE_RATE
    clips: list[Clip] = []

    def speech_until(kind: str, share: float, start: int) -> int:
        want = share * minutes * 60 * fs
        got, i = 0, start
        while got < want:
            label, x = _speech_take(i, cache, version, np.random.default_rng([seed, i]))
            x = _set_level(x, float(rng.uniform(-28.0, -10.0)))
            if kind == "speech+music":
                style = ("chords", "harmonics", "sung")[i % 3]
                below = float(rng.uniform(6.0, 18.0))
                bed = synth.music_like(x.size / 8.0, kind=style, rng=rng)
                bed = _set_level(bed, _active_level(x) - below)
                x = x + bed
                label += f" over {style} {below:.0f} dB down"
            clips.append(Clip(kind, label, x))
            got += x.size
            i += 1
        return i

    # Distinct take numbers for the two speech kinds keep their voice plans apart.
    speech_until("speech", 0.45, 0)
    speech_until("speech+music", 0.15, 100_000)
    want = 0.15 * minutes * 60 * fs
    got = 0
    j = 0
    while got < want:
        if j % 2 == 0:
            label, x = _sung_take(cache, version, np.random.default_rng([seed, 200_000 + j]))
        else:
            label, x = _high_voice(float(rng.uniform(20.0, 40.0)), rng)
        x = _set_level(x, float(rng.uniform(-28.0, -10.0)))
        clips.append(Clip("singing", label, x))
        got += x.size
        j += 1
    for k, piece in enumerate(music_corpus(max(1.0, 0.25 * minutes), seed=seed + 1)):
        clips.append(Clip("music", f"music_corpus piece {k}", piece))
    return clips
