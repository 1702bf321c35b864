"""A strict TwiML checker for tests: nesting rules and attribute value sets (TWILIO.md §1-§6).

Stricter than the emulator: every attribute must be one we know, with a value from its
documented set, and every URL absolute.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from urllib.parse import urlsplit

BOOL = {"true", "false"}
METHODS = {"GET", "POST"}
KEYS = set("0123456789*#")
EVENTS = {"start", "end", "join", "leave", "mute", "hold", "modify", "speaker", "announcement"}
CALL_SID = re.compile(r"^CA[0-9a-f]{32}$")


def _http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in {"http", "https"} and bool(parts.netloc)


def _ws_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in {"ws", "wss"} and bool(parts.netloc) and not parts.query


def _int(lo: int) -> Callable[[str], bool]:
    return lambda v: v.isdigit() and int(v) >= lo


def _label(v: str) -> bool:
    return 0 < len(v) <= 128 and "/" not in v and "%2f" not in v.lower() and not CALL_SID.match(v)


ATTRS: dict[str, dict[str, Callable[[str], bool]]] = {
    "Response": {},
    "Say": {"voice": lambda v: bool(v), "language": lambda v: bool(v), "loop": _int(0)},
    "Play": {"loop": _int(0), "digits": lambda v: bool(re.fullmatch(r"[0-9*#w]+", v))},
    "Pause": {"length": _int(0)},
    "Hangup": {},
    "Redirect": {"method": METHODS.__contains__},
    "Gather": {
        "input": {"dtmf", "speech", "dtmf speech"}.__contains__,
        "numDigits": _int(1), "timeout": _int(0),
        "finishOnKey": lambda v: v == "" or v in KEYS,
        "action": _http_url, "method": METHODS.__contains__,
        "actionOnEmptyResult": BOOL.__contains__,
    },
    "Dial": {"action": _http_url, "method": METHODS.__contains__,
             "hangupOnStar": BOOL.__contains__, "timeLimit": _int(1)},
    "Conference": {
        "muted": BOOL.__contains__, "beep": {"true", "false", "onEnter", "onExit"}.__contains__,
        "startConferenceOnEnter": BOOL.__contains__, "endConferenceOnExit": BOOL.__contains__,
        "participantLabel": _label, "waitUrl": _http_url, "waitMethod": METHODS.__contains__,
        "statusCallback": _http_url, "statusCallbackMethod": METHODS.__contains__,
        "statusCallbackEvent": lambda v: bool(v.split()) and set(v.split()) <= EVENTS,
        "maxParticipants": lambda v: v.isdigit() and 1 <= int(v) <= 250,
    },
    "Start": {},
    "Stream": {"url": _ws_url, "name": lambda v: bool(v),
               "track": {"inbound_track", "outbound_track", "both_tracks"}.__contains__},
    "Parameter": {"name": lambda v: bool(v), "value": lambda v: True},
}

CHILDREN: dict[str, set[str]] = {
    "Response": {"Say", "Play", "Pause", "Hangup", "Redirect", "Gather", "Dial", "Start"},
    "Gather": {"Say", "Play", "Pause"},
    "Dial": {"Conference"},
    "Start": {"Stream"},
    "Stream": {"Parameter"},
}
MEDIA_ONLY = {"Say", "Play", "Pause", "Redirect"}


def check_twiml(document: str, *, media_only: bool = False) -> ET.Element:
    """Parse ``document`` and raise AssertionError on any rule it breaks; return the root."""
    root = ET.fromstring(document)
    assert root.tag == "Response", f"root is <{root.tag}>"
    if media_only:
        bad = [el.tag for el in root if el.tag not in MEDIA_ONLY]
        assert not bad, f"waitUrl/announceUrl documents may only hold Say/Play/Pause/Redirect: {bad}"
    _check(root)
    return root


def _check(el: ET.Element) -> None:
    allowed = ATTRS.get(el.tag)
    assert allowed is not None, f"unknown element <{el.tag}>"
    for name, value in el.attrib.items():
        assert name in allowed, f"<{el.tag}> has unknown attribute {name}"
        assert allowed[name](value), f"<{el.tag} {name}={value!r}> is not a valid value"
    children = list(el)
    kinds = CHILDREN.get(el.tag, set())
    for child in children:
        assert child.tag in kinds, f"<{child.tag}> cannot be nested in <{el.tag}>"
        _check(child)
    if el.tag in ("Dial", "Start"):
        assert len(children) == 1, f"<{el.tag}> needs exactly one noun"
    if el.tag == "Conference":
        assert (el.text or "").strip(), "<Conference> needs a name"
    if el.tag == "Redirect":
        assert _http_url((el.text or "").strip()), "<Redirect> needs an absolute URL"
    if el.tag == "Stream":
        assert "url" in el.attrib
    if el.tag == "Say":
        assert (el.text or "").strip(), "<Say> with nothing to say"
    if el.tag == "Hangup":
        assert not children
