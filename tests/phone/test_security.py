"""Signature validation helpers: the public URL, not the Host header; wss for WebSockets."""

from __future__ import annotations

import pytest
from quart import Quart, websocket
from quart.testing import WebsocketResponseError
from twilio.request_validator import RequestValidator

from handraise.config import Settings
from handraise.phone.security import (
    public_request_url,
    signature_valid,
    twilio_signed_websocket,
    websocket_signature_valid,
    websocket_url,
)

TOKEN = "abcdef0123456789abcdef0123456789"


def test_the_signed_url_is_the_public_one_with_its_query() -> None:
    assert public_request_url("https://hr.example.org/", "/voice/prejoin", b"room=r1&pid=p1") == \
        "https://hr.example.org/voice/prejoin?room=r1&pid=p1"
    assert public_request_url("https://hr.example.org", "/voice/incoming", b"") == \
        "https://hr.example.org/voice/incoming"


def test_a_signature_for_the_internal_address_is_refused_behind_a_proxy() -> None:
    params = {"CallSid": "CA" + "1" * 32, "Digits": "123456"}
    validator = RequestValidator(TOKEN)
    public = "https://hr.example.org/voice/incoming"
    assert signature_valid(TOKEN, public, params, validator.compute_signature(public, params))
    internal = "http://10.0.0.5:8000/voice/incoming"
    assert not signature_valid(TOKEN, public, params, validator.compute_signature(internal, params))
    assert not signature_valid(TOKEN, public, params | {"Digits": "999999"},
                               validator.compute_signature(public, params))
    assert not signature_valid(None, public, params, validator.compute_signature(public, params))
    assert not signature_valid(TOKEN, public, params, "")


def test_websocket_upgrades_are_checked_against_the_wss_url() -> None:
    settings = Settings(public_url="https://hr.example.org", twilio_auth_token=TOKEN)
    assert websocket_url("https://hr.example.org", "/voice/stream") == "wss://hr.example.org/voice/stream"
    good = RequestValidator(TOKEN).compute_signature("wss://hr.example.org/voice/stream", {})
    https = RequestValidator(TOKEN).compute_signature("https://hr.example.org/voice/stream", {})
    assert websocket_signature_valid(settings, "/voice/stream", b"", good)
    assert not websocket_signature_valid(settings, "/voice/stream", b"", https)
    assert not websocket_signature_valid(Settings(twilio_auth_token=TOKEN), "/voice/stream", b"", good)


async def test_a_signed_websocket_view_refuses_unsigned_upgrades() -> None:
    app = Quart("ws-test")
    app.config["HANDRAISE_SETTINGS"] = Settings(public_url="https://hr.example.org",
                                                twilio_auth_token=TOKEN)

    @app.websocket("/voice/stream")
    @twilio_signed_websocket
    async def ws_stream() -> None:
        await websocket.accept()
        await websocket.send("hello")

    client = app.test_client()
    with pytest.raises(WebsocketResponseError) as refused:
        async with client.websocket("/voice/stream", headers={"X-Twilio-Signature": "Zm9v"}) as ws:
            await ws.receive()
    assert refused.value.response.status_code == 403
    good = RequestValidator(TOKEN).compute_signature("wss://hr.example.org/voice/stream", {})
    async with client.websocket("/voice/stream", headers={"X-Twilio-Signature": good}) as ws:
        assert await ws.receive() == "hello"
