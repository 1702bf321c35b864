"""X-Twilio-Signature validation (TWILIO.md §5) for webhooks and the media WebSocket.

The signed URL is rebuilt from ``HANDRAISE_PUBLIC_URL`` plus the request's path and query,
never from the Host header, so validation works behind a TLS-terminating proxy.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from quart import Response, current_app, request, websocket
from twilio.request_validator import RequestValidator

from ..config import Settings

log = logging.getLogger(__name__)

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])

#: Attribute set on every view function that checks the signature (the meta-test reads it).
SIGNED_MARK = "_twilio_signed"


def public_request_url(public_url: str, path: str, query_string: bytes | str = b"") -> str:
    """The URL Twilio requested: public base + path (+ ``?query`` when there is one)."""
    query = query_string.decode("latin-1") if isinstance(query_string, bytes) else query_string
    base = public_url.rstrip("/")
    return f"{base}{path}" + (f"?{query}" if query else "")


def websocket_url(public_url: str, path: str, query_string: bytes | str = b"") -> str:
    """The ``wss://`` (or ``ws://``) URL Twilio signs for a Media Streams upgrade (§1.6)."""
    url = public_request_url(public_url, path, query_string)
    if url.startswith("https://"):
        return "wss://" + url[len("https://"):]
    if url.startswith("http://"):
        return "ws://" + url[len("http://"):]
    return url


def signature_valid(auth_token: str | None, url: str, params: Mapping[str, Any], signature: str) -> bool:
    """True when ``signature`` is Twilio's for ``url`` and POST ``params`` (constant time)."""
    if not auth_token or not signature:
        return False
    return bool(RequestValidator(auth_token).validate(url, dict(params), signature))


def websocket_signature_valid(settings: Settings, path: str, query_string: bytes | str,
                              signature: str) -> bool:
    """For media.py: validate a WebSocket upgrade (no body params, ``wss://`` URL)."""
    if not settings.public_url:
        return False
    url = websocket_url(settings.public_url, path, query_string)
    return signature_valid(settings.twilio_auth_token, url, {}, signature)


def twilio_signed(handler: Handler) -> Handler:
    """Decorate a Twilio-facing view: 403 unless ``X-Twilio-Signature`` validates."""

    @functools.wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        settings: Settings = current_app.config["HANDRAISE_SETTINGS"]
        signature = request.headers.get("X-Twilio-Signature", "")
        params: dict[str, str] = {}
        if request.method == "POST":
            params = dict((await request.form).items())
        ok = False
        if settings.public_url:
            url = public_request_url(settings.public_url, request.path, request.query_string)
            ok = signature_valid(settings.twilio_auth_token, url, params, signature)
        else:
            log.error("HANDRAISE_PUBLIC_URL is not set: Twilio webhooks cannot be validated")
        if not ok:
            log.warning("refused %s %s: missing or invalid X-Twilio-Signature", request.method,
                        request.path)
            return Response("Forbidden: invalid Twilio signature.\n", status=403,
                            content_type="text/plain")
        return await handler(*args, **kwargs)

    setattr(wrapper, SIGNED_MARK, True)
    return wrapper  # type: ignore[return-value]


def twilio_signed_websocket(handler: Handler) -> Handler:
    """Decorate a Media Streams WebSocket view: refuse the upgrade (403) unless it is signed.

    Twilio signs the ``wss://`` URL it connected to, with no body parameters (TWILIO.md §1.6).
    """

    @functools.wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        settings: Settings = current_app.config["HANDRAISE_SETTINGS"]
        signature = websocket.headers.get("X-Twilio-Signature", "")
        if not websocket_signature_valid(settings, websocket.path, websocket.query_string, signature):
            log.warning("refused websocket %s: missing or invalid X-Twilio-Signature", websocket.path)
            return Response("Forbidden: invalid Twilio signature.\n", status=403,
                            content_type="text/plain")
        return await handler(*args, **kwargs)

    setattr(wrapper, SIGNED_MARK, True)
    return wrapper  # type: ignore[return-value]
