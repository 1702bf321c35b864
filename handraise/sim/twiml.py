"""TwiML parsing and validation for the emulator (pure: no I/O, no Quart).

A document is parsed into a tree of :class:`Verb` nodes and validated the way Twilio
validates it before running any verb, so that an app bug (a ``<Conference>`` outside
``<Dial>``, a ``<Gather>`` child that is not Say/Play/Pause) ends the call with the
matching Twilio error code instead of being silently tolerated.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

__all__ = [
    "TwimlError",
    "TwimlWarning",
    "Verb",
    "parse_twiml",
    "validate_label",
]

# Verbs the emulator executes at the top level of <Response>.
TOP_LEVEL_VERBS = frozenset(
    {"Say", "Play", "Pause", "Gather", "Redirect", "Hangup", "Reject", "Dial", "Start", "Stop",
     "Connect"}
)
# Real TwiML verbs the emulator does not implement: the call fails loudly rather than
# pretending (a test that needs them must not pass by accident).
UNSUPPORTED_VERBS = frozenset({"Record", "Enqueue", "Leave", "Sms", "Message", "Refer", "Pay",
                               "Prompt", "Echo", "Queue"})
# Nouns that are only valid inside a specific verb.
NOUNS = frozenset({"Conference", "Number", "Client", "Sip", "Queue", "Stream", "Parameter",
                   "Siprec", "Transcription", "Application", "Room", "ConversationRelay",
                   "VirtualAgent", "Autopilot"})
GATHER_CHILDREN = frozenset({"Say", "Play", "Pause"})
# waitUrl/holdUrl/announceUrl documents (TWILIO.md §0.1, §3.1).
MEDIA_ONLY_VERBS = frozenset({"Say", "Play", "Pause", "Redirect"})
FINISH_KEYS = frozenset("0123456789#*")
_CALL_SID_RE = re.compile(r"^CA[0-9a-f]{32}$")


class TwimlError(Exception):
    """A TwiML problem that ends the call, carrying Twilio's error code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class TwimlWarning:
    """A TwiML problem Twilio only warns about (the call goes on)."""

    code: int
    message: str


@dataclass
class Verb:
    """One TwiML element: name, attributes, text body and children."""

    name: str
    attrs: dict[str, str] = field(default_factory=dict)
    text: str = ""
    children: list[Verb] = field(default_factory=list)

    def attr(self, name: str, default: str = "") -> str:
        return self.attrs.get(name, default)

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.attrs.get(name)
        if value is None:
            return default
        return value.strip().lower() == "true"


def _to_verb(el: ET.Element) -> Verb:
    return Verb(
        name=el.tag,
        attrs=dict(el.attrib),
        text=(el.text or "").strip(),
        children=[_to_verb(child) for child in el],
    )


def parse_twiml(document: str) -> tuple[list[Verb], list[TwimlWarning]]:
    """Parse and validate a TwiML ``<Response>``; return its verbs and any warnings.

    Raises :class:`TwimlError` with Twilio's code for documents Twilio would refuse.
    """
    try:
        root = ET.fromstring(document.strip())
    except ET.ParseError as exc:
        raise TwimlError(12100, f"Document parse failure: {exc}") from exc
    if root.tag != "Response":
        raise TwimlError(12100, f"Document parse failure: root element is <{root.tag}>, "
                                "not <Response>")
    verbs = [_to_verb(el) for el in root]
    warnings: list[TwimlWarning] = []
    for verb in verbs:
        _validate_top(verb, warnings)
    return verbs, warnings


def parse_media_twiml(document: str) -> list[Verb]:
    """Parse a waitUrl/holdUrl/announceUrl document: only Say/Play/Pause/Redirect (§3.1)."""
    verbs, _ = parse_twiml(document)
    for verb in verbs:
        if verb.name not in MEDIA_ONLY_VERBS:
            raise TwimlError(13238, f"<{verb.name}> is not allowed in a waitUrl, holdUrl or "
                                    "announceUrl document (only Play, Say, Pause, Redirect)")
    return verbs


def _validate_top(verb: Verb, warnings: list[TwimlWarning]) -> None:
    if verb.name in NOUNS:
        raise TwimlError(12200, f"Schema validation: <{verb.name}> is a noun and cannot be a "
                                "child of <Response>")
    if verb.name in UNSUPPORTED_VERBS:
        raise TwimlError(12200, f"<{verb.name}> is valid TwiML but not supported by the "
                                "handraise emulator")
    if verb.name not in TOP_LEVEL_VERBS:
        raise TwimlError(12200, f"Schema validation: unknown element <{verb.name}>")
    if verb.name == "Gather":
        _validate_gather(verb, warnings)
    elif verb.name == "Dial":
        _validate_dial(verb)
    elif verb.name in ("Start", "Stop", "Connect"):
        _validate_stream_holder(verb)
    elif verb.name == "Pause":
        _positive_int(verb, "length", 1, allow_zero=True)
    elif verb.name in ("Say", "Play") and verb.children:
        raise TwimlError(12200, f"Schema validation: <{verb.name}> cannot have child elements")


def _positive_int(verb: Verb, name: str, default: int, *, allow_zero: bool = False) -> int:
    raw = verb.attrs.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise TwimlError(12200, f"Schema validation: <{verb.name} {name}=\"{raw}\"> is not an "
                                "integer") from None
    if value < 0 or (value == 0 and not allow_zero):
        raise TwimlError(12200, f"Schema validation: <{verb.name} {name}=\"{raw}\"> must be "
                                "positive")
    return value


def _validate_gather(verb: Verb, warnings: list[TwimlWarning]) -> None:
    for child in verb.children:
        if child.name not in GATHER_CHILDREN:
            # Twilio's 13320 "Gather: Invalid nested verb" (TWILIO.md §6.1: Say/Play/Pause).
            raise TwimlError(13320, f"Gather: Invalid nested verb <{child.name}> (only Say, "
                                    "Play and Pause may be nested)")
    _positive_int(verb, "numDigits", 1)
    _positive_int(verb, "timeout", 5, allow_zero=True)
    finish = verb.attrs.get("finishOnKey")
    if finish is not None and finish != "" and (len(finish) != 1 or finish not in FINISH_KEYS):
        # §6.1: invalid finishOnKey is only a warning (13310); Twilio keeps the default "#".
        warnings.append(TwimlWarning(13310, f"Gather: invalid finishOnKey {finish!r}"))
        verb.attrs["finishOnKey"] = "#"
    value = verb.attrs.get("actionOnEmptyResult")
    if value is not None and value.lower() not in ("true", "false"):
        raise TwimlError(13338, f"Gather: Invalid actionOnEmptyResult value {value!r}")


def _validate_dial(verb: Verb) -> None:
    value = verb.attrs.get("hangupOnStar")
    if value is not None and value.lower() not in ("true", "false"):
        raise TwimlError(13213, f"Dial: Invalid hangupOnStar value {value!r}")
    _positive_int(verb, "timeLimit", 14400)
    if verb.text:
        raise TwimlError(12200, "<Dial> with a number body is not supported by the handraise "
                                "emulator (only <Conference>)")
    if len(verb.children) != 1:
        raise TwimlError(12200, "Schema validation: <Dial> needs exactly one noun")
    noun = verb.children[0]
    if noun.name != "Conference":
        if noun.name in ("Number", "Client", "Sip", "Queue"):
            raise TwimlError(12200, f"<Dial><{noun.name}> is not supported by the handraise "
                                    "emulator (only <Conference>)")
        raise TwimlError(13215, f"Dial: Invalid nested element <{noun.name}>")
    if not noun.text:
        raise TwimlError(12200, "Schema validation: <Conference> needs a room name")
    max_p = _positive_int(noun, "maxParticipants", 250)
    if max_p > 250:
        raise TwimlError(12200, "Schema validation: maxParticipants must be at most 250")
    beep = noun.attrs.get("beep")
    if beep is not None and beep not in ("true", "false", "onEnter", "onExit"):
        raise TwimlError(12200, f"Schema validation: invalid beep value {beep!r}")
    events = noun.attrs.get("statusCallbackEvent", "")
    allowed = {"start", "end", "join", "leave", "mute", "hold", "modify", "speaker",
               "announcement"}
    for event in events.replace(",", " ").split():
        if event not in allowed:
            raise TwimlError(12200, f"Schema validation: invalid statusCallbackEvent {event!r}")


def _validate_stream_holder(verb: Verb) -> None:
    if len(verb.children) != 1 or verb.children[0].name != "Stream":
        names = ", ".join(f"<{c.name}>" for c in verb.children) or "nothing"
        # 14300 "Start: Invalid nested noun value" covers Start and Stop.
        raise TwimlError(14300, f"<{verb.name}> must contain exactly one <Stream> "
                                f"(found {names}); other nouns are not supported")
    stream = verb.children[0]
    if verb.name != "Stop":
        url = stream.attrs.get("url", "")
        if not url:
            raise TwimlError(12200, "Schema validation: <Stream> needs a url")
        if "?" in url:
            # §1.2: query strings are not supported; use <Parameter>.
            raise TwimlError(12200, "<Stream url> must not contain a query string; use "
                                    "<Parameter>")
        track = stream.attrs.get("track", "inbound_track")
        allowed = {"inbound_track"} if verb.name == "Connect" else {
            "inbound_track", "outbound_track", "both_tracks"}
        if track not in allowed:
            # §1.2: a bad track is a silent failure surfacing as 31941.
            raise TwimlError(31941, f"Stream: invalid track {track!r} for <{verb.name}>")
    for child in stream.children:
        if child.name != "Parameter":
            raise TwimlError(12200, f"Schema validation: <Stream> cannot contain <{child.name}>")
        name, value = child.attrs.get("name", ""), child.attrs.get("value", "")
        if not name or len(name) + len(value) >= 500:
            raise TwimlError(12200, "Schema validation: <Parameter> needs a name and name+value "
                                    "under 500 characters")


def validate_label(label: str) -> None:
    """Raise 16023 for a participantLabel Twilio refuses (TWILIO.md §3.2)."""
    if len(label) > 128 or "/" in label or "%2f" in label.lower() or _CALL_SID_RE.match(label):
        raise TwimlError(16023, f"Invalid participantLabel {label!r}")


def parse_stream_params(stream: Verb) -> dict[str, str]:
    """``<Parameter>`` children of a ``<Stream>`` as a dict (§1.2 customParameters)."""
    return {p.attrs["name"]: p.attrs.get("value", "") for p in stream.children
            if p.name == "Parameter"}
