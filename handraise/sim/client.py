"""Point the official ``twilio`` client at the emulator, without patching the library.

``twilio.rest.Client`` always builds ``https://api.twilio.com/…`` URLs; its documented
extension point is a custom ``http_client``. This one rewrites the origin.
"""

from __future__ import annotations

from typing import Any

from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

TWILIO_API_ORIGIN = "https://api.twilio.com"


class RewritingHttpClient(TwilioHttpClient):
    """A ``TwilioHttpClient`` that sends ``https://api.twilio.com`` requests to ``base_url``."""

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        if url.startswith(TWILIO_API_ORIGIN):
            url = self.base_url + url[len(TWILIO_API_ORIGIN):]
        return super().request(method, url, *args, **kwargs)


class AsyncRewritingHttpClient(AsyncTwilioHttpClient):
    """The aiohttp-based async client, rewritten the same way (use the ``*_async`` calls).

    An app that serves webhooks and talks to an in-process emulator on the same event loop
    must not use the blocking client there: the loop would wait for itself.
    """

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")

    async def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        if url.startswith(TWILIO_API_ORIGIN):
            url = self.base_url + url[len(TWILIO_API_ORIGIN):]
        response: Response = await super().request(method, url, *args, **kwargs)
        return response


def emulator_client(base_url: str, account_sid: str, auth_token: str) -> Client:
    """A ``twilio.rest.Client`` talking to the emulator at ``base_url`` (blocking calls)."""
    return Client(account_sid, auth_token, http_client=RewritingHttpClient(base_url))


def async_emulator_client(base_url: str, account_sid: str, auth_token: str) -> Client:
    """A ``twilio.rest.Client`` for ``await client.….update_async(…)`` against the emulator."""
    return Client(account_sid, auth_token, http_client=AsyncRewritingHttpClient(base_url))
