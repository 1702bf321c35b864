"""Helpers of the browser tests: a signed-in page, console errors, a cuttable TCP proxy."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from phonekit import HOST_PASSWORD
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page

from handraise.sim import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: Where screenshots are saved (a test artefact, not committed).
ARTIFACTS = Path(__file__).resolve().parent.parent.parent / "test-artifacts"
#: As the machine's probe found: without these, Chromium keeps dialling Google's hosts.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required"]
PHONE = {"width": 360, "height": 740}
LAPTOP = {"width": 1280, "height": 800}


@dataclass
class Watched:
    """A page and what its console said that a user would call broken (CSP refusals, errors)."""

    page: Page
    context: BrowserContext
    problems: list[str] = field(default_factory=list)

    def _note(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.problems.append(message.text)


async def open_signed_in(browser: Browser, base_url: str, path: str, *,
                         viewport: dict[str, int] | None = None, bypass_csp: bool = False) -> Watched:
    """Open ``path``; the sign-in page appears, the host signs in and lands on ``path``."""
    context = await browser.new_context(base_url=base_url, viewport=viewport or LAPTOP,  # type: ignore[arg-type]
                                        bypass_csp=bypass_csp)
    page = await context.new_page()
    watched = Watched(page, context)
    page.on("console", watched._note)
    page.on("pageerror", lambda exc: watched.problems.append(str(exc)))
    await page.goto(path)
    await page.get_by_label("Password").fill(HOST_PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"**{path}")
    return watched


def accept_dialogs(page: Page) -> list[str]:
    """Accept every confirm() (End meeting, Remove); returns their messages as they come."""
    seen: list[str] = []

    async def accept(dialog: object) -> None:
        seen.append(dialog.message)  # type: ignore[attr-defined]
        await dialog.accept()  # type: ignore[attr-defined]

    page.on("dialog", lambda d: asyncio.ensure_future(accept(d)))
    return seen


class CuttableProxy:
    """A TCP forwarder between the browser and the app whose open connections can be cut."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.accepted = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}

    def cut(self) -> int:
        """Drop every open connection (as a flaky network would); returns how many."""
        n = len(self._writers)
        for w in list(self._writers):
            w.transport.abort()
        return n

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CuttableProxy]:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        try:
            yield self
        finally:
            self.cut()
            self._server.close()
            await self._server.wait_closed()
