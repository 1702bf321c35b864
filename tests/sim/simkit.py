"""Helpers for the emulator's fidelity tests: a tiny TwiML app, waiting, DTMF checks."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from quart import Quart, Response, request, websocket
from twilio.request_validator import RequestValidator

from handraise.dsp import mulaw
from handraise.sim import ServedApp, SimConfig, Simulator

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "sim-test-token-0123456789abcdef"

Route = Callable[[dict[str, str]], "str | tuple[str, str]"]


@dataclass
class Hit:
    """One webhook request the app received."""

    path: str
    method: str
    url: str
    params: dict[str, str]
    signature: str
    valid: bool


@dataclass
class Socket:
    """One Media Streams WebSocket connection the app accepted."""

    path: str
    url: str
    signature: str
    valid: bool
    messages: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False


class TwimlApp:
    """A TwiML app written in the test: ``app.routes["/voice"] = lambda p: "<Response/>"``.

    Every request is recorded with whether its ``X-Twilio-Signature`` validates (§5);
    ``/ws/<name>`` accepts Media Streams and records their messages (§1.4, §1.6).
    """

    def __init__(self, auth_token: str = AUTH_TOKEN) -> None:
        self.validator = RequestValidator(auth_token)
        self.routes: dict[str, Route] = {}
        self.hits: list[Hit] = []
        self.sockets: list[Socket] = []
        self.close_ws_after: dict[str, int] = {}  # path -> close after N messages
        self.app = Quart("twiml-app")
        self.app.add_url_rule("/<path:path>", "hook", self._hook, methods=["GET", "POST"])
        self.app.add_url_rule("/", "root", self._root, methods=["GET"])
        self.app.add_websocket("/ws/<name>", "ws", self._ws)
        self.server = ServedApp(self.app)

    @property
    def url(self) -> str:
        return self.server.base_url

    async def _root(self) -> str:
        return "ok"

    async def _hook(self, path: str) -> Response:
        params = dict((await request.form).items()) if request.method == "POST" else {}
        signature = request.headers.get("X-Twilio-Signature", "")
        url = request.url
        valid = self.validator.validate(url, params, signature)
        key = "/" + path
        self.hits.append(Hit(key, request.method, url, params, signature, valid))
        route = self.routes.get(key)
        if route is None:
            return Response("no such route", status=404)
        result = route(params | dict(request.args.items()))
        body, content_type = result if isinstance(result, tuple) else (result, "text/xml")
        return Response(body, content_type=content_type)

    async def _ws(self, name: str) -> None:
        signature = websocket.headers.get("X-Twilio-Signature", "")
        url = websocket.url
        sock = Socket("/ws/" + name, url, signature,
                      self.validator.compute_signature(url, {}) == signature)
        self.sockets.append(sock)
        await websocket.accept()
        limit = self.close_ws_after.get(sock.path)
        try:
            while True:
                message = json.loads(await websocket.receive())
                sock.messages.append(message)
                if message.get("event") == "stop":
                    break
                if limit is not None and len(sock.messages) >= limit:
                    break
        finally:
            sock.closed = True

    def hits_to(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Poll with a deadline (for state outside the sim's event feed, e.g. the app's sockets)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.01)


def make_sim(app: TwimlApp, **overrides: Any) -> Simulator:
    options: dict[str, Any] = {"media_time_scale": 0.0, "seed": 7}
    options |= overrides
    return Simulator(SimConfig(voice_url=app.url + "/voice", account_sid=ACCOUNT_SID,
                               auth_token=AUTH_TOKEN, **options))


LOW = (697.0, 770.0, 852.0, 941.0)
HIGH = (1209.0, 1336.0, 1477.0, 1633.0)
KEYS = ("123A", "456B", "789C", "*0#D")


def goertzel_power(block: npt.NDArray[np.float64], freq: float) -> float:
    """Energy of ``block`` at ``freq`` (same scale as ``sum(block**2)``)."""
    n = len(block)
    coeff = 2.0 * np.cos(2.0 * np.pi * freq / 8000.0)
    s1 = s2 = 0.0
    for x in block:
        s1, s2 = float(x) + coeff * s1 - s2, s1
    return 2.0 * (s1 * s1 + s2 * s2 - coeff * s1 * s2) / n


def detect_digits(audio: npt.NDArray[np.float64]) -> str:
    """A deliberately simple DTMF check: 20 ms blocks dominated by one row + one column."""
    found: list[str] = []
    previous = ""
    for start in range(0, len(audio) - 159, 160):
        block = audio[start:start + 160]
        energy = float(np.sum(block * block))
        key = ""
        if energy > 160 * 1e-4:  # well above the -65 dBm0 comfort noise
            low = [goertzel_power(block, f) for f in LOW]
            high = [goertzel_power(block, f) for f in HIGH]
            r, c = int(np.argmax(low)), int(np.argmax(high))
            if (low[r] + high[c]) > 0.6 * energy and min(low[r], high[c]) > 0.1 * energy:
                key = KEYS[r][c]
        if key and key != previous:
            found.append(key)
        previous = key
    return "".join(found)


def media_of(sock: Socket) -> list[dict[str, Any]]:
    return [m for m in sock.messages if m["event"] == "media"]


def stream_audio(sock: Socket) -> npt.NDArray[np.float64]:
    payloads = b"".join(base64.b64decode(m["media"]["payload"]) for m in media_of(sock))
    return np.asarray(mulaw.decode(payloads), dtype=np.float64)
