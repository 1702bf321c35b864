"""Fixtures for the emulator's fidelity tests (helpers live in simkit.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from simkit import TwimlApp, make_sim

from handraise.sim import Simulator


@pytest.fixture
async def twiml_app() -> AsyncIterator[TwimlApp]:
    app = TwimlApp()
    async with app.server:
        yield app


@pytest.fixture
async def sim(twiml_app: TwimlApp) -> AsyncIterator[Simulator]:
    async with make_sim(twiml_app) as simulator:
        yield simulator
