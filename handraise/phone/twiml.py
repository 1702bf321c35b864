"""Pure TwiML builders for the phone channel (no Quart, no Redis).

Every function returns the XML text of one ``<Response>``. URLs are passed in, already
absolute (built by the webhooks from ``HANDRAISE_PUBLIC_URL``), so these functions stay
deterministic and testable by parsing their output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from twilio.twiml.voice_response import VoiceResponse

#: Conference events we subscribe to (TWILIO.md §3.3).
CONFERENCE_EVENTS = "start end join leave mute hold"
CODE_DIGITS = 6
#: The name of a caller's keypad stream (``<Start><Stream name>``, and its REST restart).
KEYPAD_STREAM = "handraise-keys"
MAX_CODE_ATTEMPTS = 3

#: Private announcements (participant AnnounceUrl): message key -> text. ``{n}`` is a position.
ANNOUNCEMENTS: dict[str, str] = {
    "live": "You are live. Go ahead.",
    "done": "Thank you. You are muted again.",
    "lowered": "Your hand was lowered.",
    "not_raised": "Your hand was not raised.",
    "raised": "Hand raised. You are number {n} in line.",
    "muted": "You have been muted.",
    "unavailable": "Hand raising is briefly unavailable. Please stay on the line.",
    "next": "You're next.",
    "host_only": "That key is for the host.",
}

#: What each keypad command does, as the help (star 0) and the star menu say it. A command
#: not listed here (another feature's) is named by its setting's label instead.
COMMAND_PHRASES: dict[str, str] = {
    "raise": "raise your hand",
    "lower": "lower it",
    "where": "hear your place in line",
    "help": "hear the keys, your web PIN and the page address",
    "host_call_next": "call on the next hand",
    "host_done": "end the speaker's turn",
    "host_queue": "hear the queue",
    "host_lower_all": "lower all hands",
    "host_mute_all": "mute everyone",
}
_NUMBERS = ("No", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten",
            "Eleven", "Twelve", "Thirteen", "Fourteen", "Fifteen", "Sixteen", "Seventeen",
            "Eighteen", "Nineteen", "Twenty")


@dataclass(frozen=True)
class ConferenceJoin:
    """What ``<Dial><Conference>`` needs, for host and participants alike."""

    conference_name: str
    label: str
    status_callback: str
    wait_url: str
    action_url: str
    muted: bool
    host: bool
    end_on_exit: bool = False
    hangup_on_star: bool = False


def _xml(response: VoiceResponse) -> str:
    return str(response.to_xml())


def spoken_digits(digits: str) -> str:
    """``"418529"`` -> ``"4, 1, 8, 5, 2, 9"``: read one digit at a time."""
    return ", ".join(digits)


def spoken_url(url: str) -> str:
    """``https://hr.example.org/p`` -> ``"h r dot example dot org slash p"``-ish, for speech."""
    parts = urlsplit(url)
    text = (parts.netloc + parts.path).rstrip("/")
    return text.replace(".", " dot ").replace("/", " slash ").replace(":", " colon ")


def ask_for_code(action_url: str, *, attempt: int, wrong: bool = False) -> str:
    """Greeting (or "wrong code") and a 6-digit Gather with the prompt nested (type early)."""
    r = VoiceResponse()
    if wrong:
        r.say("Sorry, that code was not recognised.")
    g = r.gather(
        input="dtmf",
        num_digits=CODE_DIGITS,
        timeout=8,
        action=action_url,
        method="POST",
        action_on_empty_result=True,
    )
    if attempt == 0:
        g.say("Welcome to handraise. Please enter your six digit meeting code.")
    else:
        g.say("Please enter your six digit meeting code.")
    return _xml(r)


def goodbye_after_failures() -> str:
    r = VoiceResponse()
    r.say("Sorry, we could not find a meeting with that code. Please check it and call again. Goodbye.")
    r.hangup()
    return _xml(r)


def room_closed() -> str:
    r = VoiceResponse()
    r.say("This meeting has ended and is closed. Goodbye.")
    r.hangup()
    return _xml(r)


def meeting_full(limit: int) -> str:
    """A caller over the room's limit (Twilio's conference maximum): say so, then hang up."""
    r = VoiceResponse()
    r.say(f"This meeting is full: it already has {limit} callers, the most a call can have. "
          "Please try again later.")
    r.hangup()
    return _xml(r)


def _dial(r: VoiceResponse, join: ConferenceJoin) -> None:
    dial = r.dial(action=join.action_url, method="POST", hangup_on_star=join.hangup_on_star or None)
    dial.conference(
        join.conference_name,
        muted=join.muted,
        beep="onEnter" if join.host else "false",
        start_conference_on_enter=join.host,
        end_conference_on_exit=join.end_on_exit,
        participant_label=join.label,
        wait_url=join.wait_url,
        wait_method="POST",
        status_callback=join.status_callback,
        status_callback_method="POST",
        status_callback_event=CONFERENCE_EVENTS,
    )


def _start_stream(r: VoiceResponse, url: str, params: Mapping[str, str] | None) -> None:
    start = r.start()
    stream = start.stream(url=url, name=KEYPAD_STREAM, track="inbound_track")
    for name, value in (params or {}).items():
        stream.parameter(name=name, value=value)


def join_conference(join: ConferenceJoin, *, before: tuple[str, ...] = (),
                    stream_url: str | None = None,
                    stream_params: Mapping[str, str] | None = None) -> str:
    """Optional media fork (the host's leg in stream rooms), spoken lines, ``<Dial><Conference>``."""
    r = VoiceResponse()
    if stream_url is not None:
        _start_stream(r, stream_url, stream_params)
    for line in before:
        r.say(line)
    _dial(r, join)
    return _xml(r)


def keypad_stream_params(room: str, participant: str) -> dict[str, str]:
    """The ``<Parameter>``s of a caller's keypad stream (TwiML and REST alike)."""
    return {"room": room, "participant": participant}


def prejoin(
    action_url: str,
    *,
    raise_keys: str,
    stream_url: str | None = None,
    stream_params: Mapping[str, str] | None = None,
) -> str:
    """Participant before the conference: optional media fork, then a short raise window."""
    r = VoiceResponse()
    if stream_url is not None:
        _start_stream(r, stream_url, stream_params)
    g = r.gather(
        input="dtmf",
        num_digits=len(raise_keys),
        finish_on_key="",
        timeout=3,
        action=action_url,
        method="POST",
        action_on_empty_result=True,
    )
    g.say(f"You will join muted. To raise your hand now, press {_spoken_keys(raise_keys)}.")
    return _xml(r)


def _spoken_keys(keys: str) -> str:
    return " ".join({"*": "star", "#": "pound"}.get(k, k) for k in keys)


def participant_join(
    join: ConferenceJoin,
    *,
    hand_line: str | None,
    pin: str | None,
    companion_url: str | None,
    help_keys: str = "*0",
) -> str:
    """Confirm the hand (if any), read the web PIN, mention the help keys once, then join."""
    lines: list[str] = []
    if hand_line:
        lines.append(hand_line)
    if pin:
        lines.append(pin_line(pin, companion_url))
    lines.append(f"For this meeting's keys, your web PIN and the page address, press "
                 f"{_spoken_keys(help_keys)} in the meeting.")
    lines.append("Joining the meeting now.")
    return join_conference(join, before=tuple(lines))


def spoken_number(n: int) -> str:
    """``3`` -> ``"Three"`` (up to twenty; digits above)."""
    return _NUMBERS[n] if 0 <= n < len(_NUMBERS) else str(n)


def spoken_name(display_name: str) -> str:
    """``"Caller 4821"`` -> ``"caller ending 4 8 2 1"``; a typed name as it is."""
    if display_name.startswith("Caller ") and display_name[7:].isdigit():
        return "caller ending " + " ".join(display_name[7:])
    return display_name


def keys_line(options: list[tuple[str, str]]) -> str:
    """``[("*1", "raise your hand"), ("*2", "lower it")]`` -> "Press star 1 to raise your
    hand, star 2 to lower it." (keys may also be bare digits, as the star menu reads them)."""
    parts = [f"{_spoken_keys(keys)} to {what}" for keys, what in options]
    return "Press " + ", ".join(parts) + "." if parts else ""


def where_line(position: int | None, *, speaking: bool = False) -> str:
    """The private answer to "where am I?" (star 3)."""
    if speaking:
        return "You are live: the host called on you."
    if position is None:
        return "Your hand is not raised."
    return f"Your hand is raised. You are number {position} in line."


def queue_line(hands: int, next_name: str | None) -> str:
    """The host's private answer to "hear the queue": "Three hands up. Next: caller ending 4 8 2 1." """
    if hands == 0:
        return "No hands up."
    count = f"{spoken_number(hands)} hand{'s' if hands != 1 else ''} up."
    return f"{count} Next: {spoken_name(next_name)}." if next_name else count


def say(text: str) -> str:
    """A private announcement of one sentence (participant AnnounceUrl): Say only."""
    r = VoiceResponse()
    if text:
        r.say(text)
    return _xml(r)


def pin_line(pin: str, companion_url: str | None) -> str:
    """Where the companion page is and the caller's PIN, digit by digit, twice."""
    where = f" at {spoken_url(companion_url)}" if companion_url else ""
    return (f"To raise your hand from the web{where}, your PIN is {spoken_digits(pin)}. "
            f"Again, {spoken_digits(pin)}.")


def pin_reminder(pin: str | None, companion_url: str | None) -> str:
    """The private answer to star 0: the page address and the PIN again."""
    r = VoiceResponse()
    r.say(pin_line(pin, companion_url) if pin else
          "Your web PIN is not available right now. Please try again in a moment.")
    return _xml(r)


def host_prompt(action_url: str, rejoin_url: str, *, raise_keys: str, lower_keys: str) -> str:
    """The host pulled this caller out for a moment: a short Gather, then back in."""
    r = VoiceResponse()
    g = r.gather(
        input="dtmf",
        num_digits=max(len(raise_keys), len(lower_keys)),
        finish_on_key="",
        timeout=5,
        action=action_url,
        method="POST",
    )
    g.say(
        f"The host asks: press {_spoken_keys(raise_keys)} to raise your hand, "
        f"{_spoken_keys(lower_keys)} to lower it."
    )
    r.redirect(rejoin_url, method="POST")
    return _xml(r)


def star_menu(action_url: str, rejoin_url: str,
              options: list[tuple[str, str]] | None = None) -> str:
    """``star`` keypad mode: the caller pressed * and stepped out; read one key, then back.

    ``options`` are (key, what it does) as :func:`keys_line` says them.
    """
    r = VoiceResponse()
    g = r.gather(input="dtmf", num_digits=1, finish_on_key="", timeout=4, action=action_url,
                 method="POST")
    g.say(keys_line(options) if options else
          "Press 1 to raise your hand, 2 to lower it, 0 to hear your web PIN.")
    r.redirect(rejoin_url, method="POST")
    return _xml(r)


def say_then_redirect(line: str, url: str) -> str:
    r = VoiceResponse()
    r.say(line)
    r.redirect(url, method="POST")
    return _xml(r)


def redirect(url: str) -> str:
    r = VoiceResponse()
    r.redirect(url, method="POST")
    return _xml(r)


def meeting_over() -> str:
    r = VoiceResponse()
    r.say("The meeting has ended. Thank you for joining. Goodbye.")
    r.hangup()
    return _xml(r)


def wait_music() -> str:
    """Our own waitUrl document (Say/Pause only, TWILIO.md §3.1): no outside audio needed."""
    r = VoiceResponse()
    r.say("Please wait. The meeting will start when the host joins.")
    r.pause(length=20)
    return _xml(r)


def announcement(key: str, n: int | None = None) -> str:
    """A private announcement (participant AnnounceUrl): Say only."""
    text = ANNOUNCEMENTS.get(key)
    r = VoiceResponse()
    if text is not None:
        r.say(text.format(n=n if n is not None else "unknown"))
    return _xml(r)


def apology(line: str = "Sorry, something went wrong. Please call again later. Goodbye.") -> str:
    r = VoiceResponse()
    r.say(line)
    r.hangup()
    return _xml(r)


def empty() -> str:
    return _xml(VoiceResponse())


@dataclass(frozen=True)
class PhoneUrls:
    """Every URL the app writes into TwiML or REST calls, from the public base URL."""

    public_url: str
    #: Where callers are told to open the companion page (HANDRAISE_COMPANION_URL), if shorter.
    companion_url: str | None = None

    def _u(self, path: str, **query: str | int | None) -> str:
        from urllib.parse import urlencode

        items = [(k, str(v)) for k, v in query.items() if v is not None]
        return self.public_url.rstrip("/") + path + (("?" + urlencode(items)) if items else "")

    def incoming(self, attempt: int | None = None) -> str:
        return self._u("/voice/incoming", attempt=attempt)

    def prejoin(self, room: str, pid: str) -> str:
        return self._u("/voice/prejoin", room=room, pid=pid)

    def rejoin(self, room: str, pid: str) -> str:
        return self._u("/voice/rejoin", room=room, pid=pid)

    def after_dial(self, room: str, pid: str) -> str:
        return self._u("/voice/after-dial", room=room, pid=pid)

    def star_keys(self, room: str, pid: str) -> str:
        return self._u("/voice/star-keys", room=room, pid=pid)

    def prompt(self, room: str, pid: str) -> str:
        return self._u("/voice/prompt", room=room, pid=pid)

    def prompt_keys(self, room: str, pid: str) -> str:
        return self._u("/voice/prompt-keys", room=room, pid=pid)

    def conference_events(self, room: str) -> str:
        return self._u("/voice/conference-events", room=room)

    def wait(self) -> str:
        return self._u("/voice/wait")

    def announce(self, key: str, n: int | None = None) -> str:
        return self._u("/voice/announce", msg=key, n=n)

    def media_stream(self) -> str:
        """The Media Streams WebSocket (served by phone/media.py): wss, no query (§1.2)."""
        url = self._u("/voice/stream")
        if url.startswith("https://"):
            return "wss://" + url[len("https://"):]
        return "ws://" + url[len("http://"):] if url.startswith("http://") else url

    def companion(self) -> str:
        """The companion page's address as callers hear it."""
        return self.companion_url or self._u("/join")

    def announce_note(self, room: str, pid: str, note: str) -> str:
        """A private sentence kept in Redis under ``note`` (so no text is in a URL)."""
        return self._u("/voice/announce", msg="note", room=room, pid=pid, note=note)

    def announce_help(self, room: str, pid: str) -> str:
        """The private help (star 0): the handler looks up the keys and the PIN."""
        return self._u("/voice/announce", msg="help", room=room, pid=pid)

    def announce_pin(self, room: str, pid: str) -> str:
        """The private PIN reminder: the announce handler looks the PIN up (never in a URL)."""
        return self._u("/voice/announce", msg="pin", room=room, pid=pid)
