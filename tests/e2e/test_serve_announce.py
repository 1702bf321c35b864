"""Twilio's fetch of a fixed private announcement, answered by ``handraise serve`` itself
(``fastannounce``) exactly as the app's route answers it, over raw sockets: signature,
document, headers, keep-alive, pieces, and what it leaves to the app."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from urllib.parse import urlencode

import httpx
import pytest
from phonekit import AUTH_TOKEN, until
from servekit import Served, serving
from twilio.request_validator import RequestValidator

pytestmark = [pytest.mark.slow]

PARAMS = {"AccountSid": "AC" + "0" * 32, "CallSid": "CA" + "1" * 32,
          "ConferenceSid": "CF" + "2" * 32, "CallStatus": "in-progress"}
#: A header sent twice: the fast path leaves such a request to the app, as it came.
TO_THE_APP = b"X-Twice: 1\r\nX-Twice: 2\r\n"


@pytest.fixture(scope="module")
def server(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(redis_server, tmp_path_factory.mktemp("announce") / "serve.log") as served:
        yield served


def fetch(server: Served, query: str, params: dict[str, str] | None = None, *,
          signature: str | None = None, extra: bytes = b"", close: bool = False) -> bytes:
    """A POST to the AnnounceUrl as Twilio makes it, signed unless ``signature`` is given."""
    params = PARAMS if params is None else params
    path = f"/voice/announce?{query}"
    if signature is None:
        signature = RequestValidator(AUTH_TOKEN).compute_signature(server.public + path, params)
    body = urlencode(params).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\nX-Twilio-Signature: {signature}\r\n"
            + ("Connection: close\r\n" if close else "")).encode() + extra + b"\r\n" + body


class Answer:
    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        self.headers = {k.strip().lower(): v.strip()
                        for k, _, v in (line.partition(":") for line in lines[1:])}

    def same_as_the_app(self) -> dict[str, str]:
        return {k: v for k, v in self.headers.items() if k not in ("date", "server", "connection")}


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    return Answer(head + await asyncio.wait_for(reader.readexactly(length), 10))


async def ask(server: Served, *requests: bytes, pieces: int = 1) -> list[Answer]:
    """Send ``requests`` on one connection (each in ``pieces`` writes) and read an answer each."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        answers = []
        for request in requests:
            step = -(-len(request) // pieces)
            for i in range(0, len(request), step):
                writer.write(request[i:i + step])
                await writer.drain()
            answers.append(await read_answer(reader))
        return answers
    finally:
        writer.close()


CASES = {
    "raised, with its number": ("msg=raised&n=3", None),
    "you're next": ("msg=next", None),
    "seconds left": ("n=30&msg=time_cue", None),
    "a number too long to be a place": ("msg=raised&n=1234567", None),
    "not ASCII digits": ("msg=raised&n=%C2%B2", None),
    "the first msg counts": ("msg=lowered&msg=pin", None),
    "a forged signature": ("msg=raised&n=3", "forged"),
    "no signature": ("msg=next", ""),
}


@pytest.mark.parametrize("query, signature", CASES.values(), ids=CASES.keys())
async def test_a_fixed_announcement_is_answered_as_the_app_answers_it(
        server: Served, query: str, signature: str | None) -> None:
    [here] = await ask(server, fetch(server, query, signature=signature))
    [app] = await ask(server, fetch(server, query, signature=signature, extra=TO_THE_APP))
    assert "hypercorn" in app.headers.get("server", "")
    assert "server" not in here.headers  # answered by serve, not handed to hypercorn
    assert (here.status, here.body) == (app.status, app.body)
    assert here.same_as_the_app() == app.same_as_the_app()
    if signature is None:
        assert here.status == 200 and here.body.startswith(b"<?xml")
    else:
        assert here.status == 403 and here.body == b"Forbidden: invalid Twilio signature.\n"


async def test_the_document_says_the_sentence_with_the_number(server: Served) -> None:
    [raised] = await ask(server, fetch(server, "msg=raised&n=7"))
    assert b"<Say>Hand raised. You are number 7 in line.</Say>" in raised.body
    [params] = await ask(server, fetch(server, "msg=next", {**PARAMS, "CallSid": "CA" + "9" * 32}))
    assert b"<Say>You're next.</Say>" in params.body


async def test_one_connection_carries_fetches_then_any_request(server: Served) -> None:
    health = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode()
    one, two, three, four = await ask(server, fetch(server, "msg=raised&n=1"),
                                      fetch(server, "msg=next"), fetch(server, "msg=lowered"),
                                      health)
    assert [a.status for a in (one, two, three)] == [200, 200, 200]
    assert b"number 1 in line" in one.body and b"next" in two.body and b"lowered" in three.body
    assert four.status == 200 and b'"status":"ok"' in four.body.replace(b" ", b"")


async def test_pipelined_fetches_are_answered_in_order(server: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"".join(fetch(server, f"msg=raised&n={n}") for n in (1, 2, 3)))
        answers = [await read_answer(reader) for _ in range(3)]
    finally:
        writer.close()
    assert [a.body.count(f"number {n} in line".encode()) for n, a in enumerate(answers, 1)] == [1, 1, 1]


async def test_a_fetch_in_pieces_is_answered(server: Served) -> None:
    [answer] = await ask(server, fetch(server, "msg=raised&n=4"), pieces=9)
    assert answer.status == 200 and b"number 4 in line" in answer.body
    assert "server" not in answer.headers


async def test_connection_close_is_answered_then_closed(server: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(fetch(server, "msg=next", close=True))
        answer = await read_answer(reader)
        assert answer.status == 200 and answer.headers["connection"] == "close"
        assert await asyncio.wait_for(reader.read(), 10) == b""
    finally:
        writer.close()


async def test_a_chunked_fetch_goes_to_the_app_and_is_answered(server: Served) -> None:
    path = "/voice/announce?msg=raised&n=5"
    signature = RequestValidator(AUTH_TOKEN).compute_signature(server.public + path, PARAMS)
    body = urlencode(PARAMS).encode()
    request = (f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
               "Content-Type: application/x-www-form-urlencoded\r\n"
               f"X-Twilio-Signature: {signature}\r\n\r\n").encode() \
        + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    [answer] = await ask(server, request)
    assert answer.status == 200 and b"number 5 in line" in answer.body
    assert "hypercorn" in answer.headers.get("server", "")


async def test_a_fetch_cut_off_mid_body_changes_nothing_for_the_next(server: Served) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(fetch(server, "msg=next")[:-10])
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    [answer] = await ask(server, fetch(server, "msg=next"))
    assert answer.status == 200
    assert "Traceback" not in server.log()


async def test_fetches_answered_here_are_counted_with_the_app_s_requests(server: Served) -> None:
    def voice_2xx(text: str) -> float:
        found = re.search(r'handraise_http_requests_total\{group="voice",status="2xx"\} (\S+)', text)
        return float(found.group(1)) if found else 0.0

    async with httpx.AsyncClient(base_url=server.public, trust_env=False) as client:
        before = voice_2xx((await client.get("/metrics")).text)
        await ask(server, *(fetch(server, "msg=next") for _ in range(5)))

        async def counted() -> float | None:
            value = voice_2xx((await client.get("/metrics")).text)
            return value if value >= before + 5 else None

        assert await until(counted) == before + 5
