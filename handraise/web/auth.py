"""Host sign-in: ``/host/login`` and ``/host/logout`` (the ``auth`` blueprint)."""

from __future__ import annotations

import logging
from typing import Any

from quart import Blueprint, Response, current_app, redirect, render_template, request, url_for
from quart_auth import login_user, logout_user

from ..app import services
from ..events import REDIS_ERRORS
from .security import (
    clear_failures,
    client_id,
    count_failure,
    host_required,
    minutes,
    new_host_session,
    password_matches,
    retry_after,
    safe_next,
)

log = logging.getLogger(__name__)

bp = Blueprint("auth", __name__, url_prefix="/host")

#: Wrong passwords allowed per client and window before 429.
LOGIN_LIMIT = 10
LOGIN_WINDOW_S = 600


async def _login_page(error: str | None = None, status: int = 200, **headers: str) -> Response:
    body = await render_template("host/login.html", error=error, next=safe_next(request.args.get("next")))
    return Response(body, status=status, headers=headers)


def _too_many(wait_s: int) -> str:
    return f"Too many wrong passwords from this device. Try again in {minutes(wait_s)}."


@bp.get("/login")
async def get_login() -> Response:
    """The sign-in form."""
    return await _login_page()


@bp.post("/login")
async def post_login() -> Any:
    """Check the host password; 429 after too many wrong ones from this client."""
    redis = services(current_app).redis
    who = client_id()
    form = await request.form
    try:
        wait = await retry_after(redis, "host-login", who, limit=LOGIN_LIMIT)
        if wait:
            return await _login_page(_too_many(wait), 429, **{"Retry-After": str(wait)})
        expected = services(current_app).settings.host_password
        if not password_matches(form.get("password", ""), expected):
            if not expected:
                return await _login_page("Sign-in is not set up on this server: set "
                                         "HANDRAISE_HOST_PASSWORD and restart it.", 503)
            count = await count_failure(redis, "host-login", who, window_s=LOGIN_WINDOW_S)
            log.info("host sign-in: wrong password (%d in this window)", count)
            if count >= LOGIN_LIMIT:
                wait = await retry_after(redis, "host-login", who, limit=LOGIN_LIMIT)
                return await _login_page(_too_many(wait), 429, **{"Retry-After": str(wait)})
            return await _login_page("Wrong password.")
        await clear_failures(redis, "host-login", who)
    except REDIS_ERRORS as exc:
        log.warning("host sign-in: redis unavailable: %r", exc)
        return await _login_page("Sign-in is briefly unavailable (the server's database cannot be "
                                 "reached). Try again in a moment.", 503)
    login_user(new_host_session())
    log.info("host signed in")
    return redirect(safe_next(form.get("next")) or url_for("host.get_rooms"), 303)


@bp.post("/logout")
@host_required("action")
async def post_logout() -> Any:
    """End the host session."""
    logout_user()
    return redirect(url_for("auth.get_login"), 303)
