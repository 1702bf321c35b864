"""The application factory: settings, Redis, the domain services, blueprints, lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quart import Quart, jsonify

from .config import Settings
from .errors import HandraiseError
from .events import REDIS_ERRORS, EventHub
from .hooks import HookWorker
from .metrics import app_metrics
from .phone.control import HostControls, TwilioControl
from .phone.twiml import PhoneUrls
from .queue import Queue
from .store import Redis, connect

log = logging.getLogger(__name__)


def asset_dir(name: str) -> Path:
    """``templates`` or ``static``: beside the package in a checkout, inside it when installed."""
    package = Path(__file__).resolve().parent
    for candidate in (package.parent / name, package / "_data" / name):
        if candidate.is_dir():
            return candidate
    return package.parent / name


@dataclass
class Services:
    """What handlers need, created once per app at start-up."""

    settings: Settings
    redis: Redis
    queue: Queue
    hub: EventHub
    twilio: TwilioControl
    urls: PhoneUrls
    #: The host's actions: the dashboard, the API and the keypad all call these.
    host: HostControls


def services(app: Quart) -> Services:
    svc: Services | None = app.extensions.get("handraise")
    if svc is None:
        raise RuntimeError("handraise services are not started (is the app serving?)")
    return svc


def create_app(config: Settings | None = None, *, redis: Redis | None = None) -> Quart:
    """Build a handraise app. ``redis`` may be given (tests); else it is connected at start-up."""
    settings = config or Settings.from_env()
    app = Quart(
        "handraise",
        template_folder=str(asset_dir("templates")),
        static_folder=str(asset_dir("static")),
    )
    if settings.secret_key is None:
        log.warning("HANDRAISE_SECRET_KEY is not set: host sessions end when this process stops")
    app.config["SECRET_KEY"] = settings.secret_key or secrets.token_hex(32)
    app.config["HANDRAISE_SETTINGS"] = settings
    stack = contextlib.AsyncExitStack()

    @app.before_serving
    async def start_services() -> None:
        client = redis
        if client is None:
            client = await stack.enter_async_context(connect(settings))
        hub = EventHub(client)
        stack.push_async_callback(hub.close)
        queue = Queue(client, maxlen=settings.events_maxlen)
        twilio = TwilioControl(settings, metrics=app_metrics(app))
        stack.push_async_callback(twilio.close)
        urls = PhoneUrls(settings.public_url or "http://localhost", companion_url=settings.companion_url)
        app.extensions["handraise"] = Services(
            settings=settings, redis=client, queue=queue, hub=hub, twilio=twilio, urls=urls,
            host=HostControls(queue, twilio, urls),
        )
        # Outbound events (webhooks) are sent while the app serves.
        hooks = HookWorker(client)
        hooks.start()
        stack.push_async_callback(hooks.stop)
        if twilio.configured:  # "You're next." needs Twilio to say it
            from .phone.nextup import NextWatcher

            next_up = app.extensions["handraise_next"] = NextWatcher(queue, app.extensions["handraise"].host)
            next_up.start()
            stack.push_async_callback(next_up.stop)

    @app.after_serving
    async def stop_services() -> None:
        from .phone.media import drain

        # Open media streams finish first: their pending raise or announcement still
        # needs Redis and the Twilio session, which close after.
        await drain(app)
        svc = app.extensions.get("handraise")
        if svc is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                await app_metrics(app).flush(svc.redis)  # the counts since the last flush
        app.extensions.pop("handraise", None)
        await stack.aclose()

    @app.get("/healthz")
    async def get_healthz() -> Any:
        """Liveness plus Redis reachability (503 when Redis cannot be reached)."""
        try:
            await asyncio.wait_for(services(app).redis.ping(), timeout=2.0)
        except REDIS_ERRORS as exc:  # includes TimeoutError (an OSError)
            log.warning("healthz: redis unreachable: %s", exc)
            return jsonify(status="unavailable", redis="unreachable",
                           detail="Redis cannot be reached; hands cannot be raised until it is back."), 503
        return jsonify(status="ok", redis="ok")

    @app.errorhandler(HandraiseError)
    async def handle_domain_error(error: HandraiseError) -> Any:
        return jsonify(error=error.message), error.status

    from .phone.webhooks import init_phone  # here: webhooks imports this module
    from .web import init_web

    init_phone(app)  # after start_services, so the phone services find the core ones
    init_web(app)
    return app
