"""Twilio's REST API as far as bench/media.py needs it, in a process of its own.

A keypad raise in the conference ends with a private announcement: serve asks Twilio to
update the participant with an ``AnnounceUrl``, and Twilio then fetches that URL from serve
(a signed webhook) for the TwiML to say. Both are work serve does for every press, so the
bench must not leave them out: this answers the participant update as Twilio does (200 and
the participant's JSON) and then fetches the ``AnnounceUrl``, signed with the account's
token, as Twilio would. Run pinned to the generator's core, it charges serve nothing of its
own. ``GET /stats`` says how many updates came and how many fetches serve answered.

    python bench/twilio_stub.py PORT AUTH_TOKEN
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator


def main(port: int, token: str) -> None:
    validator = RequestValidator(token)
    stats = {"updates": 0, "announce_urls": 0, "fetched": 0, "fetch_failed": 0}
    fetches: set[asyncio.Task[None]] = set()
    session: dict[str, aiohttp.ClientSession] = {}

    async def fetch(url: str, params: dict[str, str]) -> None:
        headers = {"X-Twilio-Signature": validator.compute_signature(url, params)}
        try:
            async with session["http"].post(url, data=params, headers=headers) as answer:
                await answer.read()
                stats["fetched" if answer.status == 200 else "fetch_failed"] += 1
        except aiohttp.ClientError:
            stats["fetch_failed"] += 1

    async def participant(request: web.Request) -> web.Response:
        account, conference, label = (request.match_info[k] for k in ("account", "conf", "label"))
        form = await request.post()
        stats["updates"] += 1
        url = form.get("AnnounceUrl")
        if isinstance(url, str):
            stats["announce_urls"] += 1
            task = asyncio.ensure_future(fetch(url, {
                "AccountSid": account, "ConferenceSid": conference, "CallSid": "CA" + "0" * 32}))
            fetches.add(task)
            task.add_done_callback(fetches.discard)
        body: dict[str, Any] = {"account_sid": account, "conference_sid": conference,
                                "call_sid": "CA" + "0" * 32, "label": label, "muted": True,
                                "hold": False, "status": "connected"}
        return web.json_response(body)

    async def show(_request: web.Request) -> web.Response:
        return web.json_response(stats)

    async def start(_app: web.Application) -> None:
        session["http"] = aiohttp.ClientSession()

    async def stop(_app: web.Application) -> None:
        await asyncio.gather(*fetches, return_exceptions=True)
        await session["http"].close()

    app = web.Application()
    app.router.add_post(
        "/2010-04-01/Accounts/{account}/Conferences/{conf}/Participants/{label}.json", participant)
    app.router.add_get("/stats", show)
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
