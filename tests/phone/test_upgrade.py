"""The media stream's WebSocket upgrade as ``handraise serve`` answers it (fastmedia.py)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from twilio.request_validator import RequestValidator

from handraise.config import Settings
from handraise.phone.fastmedia import _BadUpgrade, close_frame, upgrade_response

TOKEN = "abcdef0123456789abcdef0123456789"
SETTINGS = Settings.from_env({"TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": TOKEN,
                              "HANDRAISE_PUBLIC_URL": "https://hr.example.org",
                              "HANDRAISE_SECRET_KEY": "k" * 32, "HANDRAISE_HOST_PASSWORD": "p" * 12})
KEY = base64.b64encode(b"sixteen byte key").decode()


def head(target: str = "/voice/stream", *, signature: str | None = None, version: str = "13",
         upgrade: str = "websocket", key: str = KEY, method: str = "GET") -> bytes:
    if signature is None:
        signature = RequestValidator(TOKEN).compute_signature("wss://hr.example.org" + target, {})
    lines = [f"{method} {target} HTTP/1.1", "Host: hr.example.org", f"Upgrade: {upgrade}",
             "Connection: keep-alive, Upgrade", f"Sec-WebSocket-Key: {key}",
             f"Sec-WebSocket-Version: {version}", f"X-Twilio-Signature: {signature}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_signed_upgrade_is_switched_with_the_accept_key_of_rfc_6455() -> None:
    answer = upgrade_response(head("/voice/stream?x=1"), SETTINGS)
    accept = base64.b64encode(hashlib.sha1(KEY.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
                              .digest()).decode()
    assert answer.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert f"Sec-WebSocket-Accept: {accept}\r\n".encode() in answer and answer.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(("request_head", "status"), [
    (head(signature="forged"), 403),
    (head(signature=""), 403),
    (head("/voice/streams"), 404),
    (head(method="POST"), 400),
    (head(upgrade="h2c"), 400),
    (head(key="short"), 400),
    (head(version="8"), 426),
])
def test_a_bad_upgrade_is_refused_with_a_status_and_a_sentence(request_head: bytes, status: int) -> None:
    with pytest.raises(_BadUpgrade) as refused:
        upgrade_response(request_head, SETTINGS)
    response = refused.value.response()
    assert response.startswith(f"HTTP/1.1 {status} ".encode())
    body = response.split(b"\r\n\r\n", 1)[1]
    assert body.endswith(b".\n") and len(body) > 10
    if status == 426:
        assert b"Sec-WebSocket-Version: 13\r\n" in response


def test_a_close_frame_carries_the_code_and_a_reason_cut_to_fit() -> None:
    assert close_frame(1000, "stream stopped") == b"\x88\x10\x03\xe8stream stopped"
    long = close_frame(1001, "x" * 200)
    assert long[1] == 125 and len(long) == 127
