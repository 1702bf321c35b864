"""Twilio's fetch of a fixed private announcement, answered by ``serve`` without Quart.

Every keypad press in the conference ends with a private announcement ("Hand raised. You
are number 3 in line."): the app asks Twilio to update the participant with an
``AnnounceUrl``, and Twilio then fetches that URL. Most of those announcements are fixed
sentences (:data:`~.twiml.ANNOUNCEMENTS`, with at most a number in them), so the answer
needs nothing but the request: ``serve`` answers ``POST /voice/announce?msg=<one of them>``
itself, as it answers a media stream's upgrade, and leaves every other request (and every
other announcement, which reads Redis) to the app.

At 1000 streams with each caller pressing every 15 s (65 announcements a second), hypercorn
and Quart serving these fetches took 18 % of serve's CPU (py-spy, ``bench/media.py``); the
answer here is the same document as the route's (``webhooks.post_announce``), after the
same signature check (:func:`.security.signature_valid` over the public URL and the POST
parameters), with the same headers, and counted in the same request metrics.

A request that is not plainly one of these is left whole to the app: no ``Content-Length``
or a chunked body, ``Expect``, HTTP/1.0, another content type, a body that is not UTF-8,
a request over :data:`MAX_REQUEST_BYTES`. Its bytes are only looked at (``MSG_PEEK``) until
then, so the app reads the request as it came.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from email.utils import formatdate
from urllib.parse import parse_qsl

from ..config import Settings
from .security import public_request_url, signature_valid
from .twiml import ANNOUNCEMENTS, announcement

log = logging.getLogger(__name__)

ANNOUNCE_PATH = "/voice/announce"
MAX_REQUEST_BYTES = 16 * 1024
"""Longest fetch (head and body) answered here; Twilio's is under 1 kB. Longer ones go to
the app."""
_PREFIX = f"POST {ANNOUNCE_PATH}?".encode()
_FORM = "application/x-www-form-urlencoded"
_FORBIDDEN = b"Forbidden: invalid Twilio signature.\n"


def is_fixed_announcement(head: bytes) -> bool:
    """Whether the request starting ``head`` (its request line at least) fetches a fixed
    announcement: ``POST /voice/announce?...msg=<one of ANNOUNCEMENTS>...``."""
    if not head.startswith(_PREFIX):
        return False
    target = head.split(b" ", 2)[1]
    return _msg_and_n(target.partition(b"?")[2].decode("latin-1"))[0] in ANNOUNCEMENTS


def _msg_and_n(query: str) -> tuple[str, int | None]:
    """The ``msg`` and ``n`` the route reads (first values; ``n`` only as a few ASCII digits)."""
    msg = n_raw = None
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "msg" and msg is None:
            msg = value
        elif name == "n" and n_raw is None:
            n_raw = value
    n = int(n_raw) if n_raw and n_raw.isascii() and n_raw.isdigit() and len(n_raw) <= 6 else None
    return msg or "", n


@dataclass(frozen=True, slots=True)
class Fetch:
    """One announcement fetch, whole."""

    #: Bytes of the request, head and body: what to take off the socket.
    length: int
    query: str
    params: dict[str, str]
    signature: str
    #: The client keeps the connection for its next request (HTTP/1.1, no ``close``).
    keep_alive: bool


class NotHere(Exception):
    """The request is for the app (see the module docstring for which)."""


def request_length(seen: bytes) -> int | None:
    """How many bytes the request at the start of ``seen`` takes, head and body, or None
    while its head is not all in.

    Raises
    ------
    NotHere
        When it is not one to answer here.
    """
    end = seen.find(b"\r\n\r\n")
    if end < 0:
        if len(seen) >= MAX_REQUEST_BYTES:
            raise NotHere
        return None
    length = end + 4 + _content_length(_headers(seen[:end]))
    if length > MAX_REQUEST_BYTES:
        raise NotHere
    return length


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].endswith(" HTTP/1.1"):
        raise NotHere
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or name != name.strip():
            raise NotHere  # let the app's parser say what is wrong with it
        key = name.lower()
        if key in headers:  # a repeated header: not the plain request Twilio sends
            raise NotHere
        headers[key] = value.strip()
    if "transfer-encoding" in headers or "expect" in headers:
        raise NotHere
    return headers


def _content_length(headers: dict[str, str]) -> int:
    value = headers.get("content-length", "")
    if not (value.isascii() and value.isdigit() and len(value) <= 6):
        raise NotHere
    return int(value)


def parse(request: bytes) -> Fetch:
    """The fetch in ``request`` (exactly :func:`request_length` bytes).

    Raises
    ------
    NotHere
        When it is not one to answer here.
    """
    end = request.find(b"\r\n\r\n")
    headers = _headers(request[:end])
    body = request[end + 4:]
    if len(body) != _content_length(headers):
        raise NotHere
    if body and headers.get("content-type", "").partition(";")[0].strip().lower() != _FORM:
        raise NotHere
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise NotHere from None
    params: dict[str, str] = {}
    for name, value in parse_qsl(text, keep_blank_values=True):
        params.setdefault(name, value)  # the first value, as the route's form.items()
    target = request.split(b" ", 2)[1].decode("latin-1")
    connection = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    return Fetch(length=len(request), query=target.partition("?")[2], params=params,
                 signature=headers.get("x-twilio-signature", ""),
                 keep_alive="close" not in connection)


def answer(fetch: Fetch, settings: Settings, security_headers: dict[str, str]) -> tuple[int, bytes]:
    """The HTTP status and the whole response to ``fetch``: the route's TwiML, or 403."""
    ok = False
    if settings.public_url:
        url = public_request_url(settings.public_url, ANNOUNCE_PATH, fetch.query)
        ok = signature_valid(settings.twilio_auth_token, url, fetch.params, fetch.signature)
    else:
        log.error("HANDRAISE_PUBLIC_URL is not set: Twilio webhooks cannot be validated")
    if not ok:
        log.warning("refused POST %s: missing or invalid X-Twilio-Signature", ANNOUNCE_PATH)
        status, phrase, kind, body = 403, "Forbidden", "text/plain", _FORBIDDEN
    else:
        status, phrase, kind = 200, "OK", "text/xml"
        body = _document(*_msg_and_n(fetch.query))
    head = [f"HTTP/1.1 {status} {phrase}", f"Content-Type: {kind}",
            f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in security_headers.items()),
            f"Date: {_date(int(time.time()))}"]
    if not fetch.keep_alive:
        head.append("Connection: close")
    return status, ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


@functools.lru_cache(maxsize=4096)
def _document(msg: str, n: int | None) -> bytes:
    return announcement(msg, n).encode()


@functools.lru_cache(maxsize=2)
def _date(second: int) -> str:
    return formatdate(second, usegmt=True)
