"""What every page shares: the host session, CSRF tokens, rate limits and security headers.

* **Host session** (quart-auth): one cookie, HttpOnly, SameSite=Lax, Secure whenever
  ``HANDRAISE_PUBLIC_URL`` is https. Its id is random per sign-in, so each session has its
  own CSRF token: ``HMAC(secret key, session id)``, nothing stored.
* **Guards**: :func:`host_required` marks and protects a view. A page without a session
  redirects to the sign-in (and back after it); an action or an event stream answers 401.
  Every request that changes state must carry the session's CSRF token (form field
  ``csrf_token`` or header ``X-CSRF-Token``) and, when the browser sends one, a same-origin
  ``Origin``; otherwise 403 and nothing changes. ``tests/web/test_guards.py`` walks the
  url_map and fails on a ``/host`` view without the mark.
* **Rate limits**: counters in Redis (every process agrees), a fixed window from the first
  failure, keyed by a hash of the client address (no address is stored).
* **Headers** on every response: a strict Content-Security-Policy (no inline script or
  style), ``frame-ancestors 'none'``, ``Referrer-Policy: same-origin``, ``nosniff``.

Only blueprint-facing helpers live here; no routes.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import math
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Literal, ParamSpec, TypeVar
from urllib.parse import urlsplit

from quart import Quart, Response, current_app, redirect, request, url_for
from quart_auth import Action, AuthUser, QuartAuth, current_user

from ..store import Redis, eval_script, global_key

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
GuardKind = Literal["page", "action", "stream"]

#: Attribute set on every view wrapped by :func:`host_required` (read by the meta-test).
HOST_MARK = "_handraise_host_only"
#: The same for :func:`participant_required` (the companion page's linked views).
LINK_MARK = "_handraise_linked_only"
#: The blueprint whose pages belong to a linked caller, not to the host.
PARTICIPANT_BLUEPRINT = "participant"
LINK_SESSION_S = 12 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SESSION_S = 24 * 3600
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"

CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def init_security(app: Quart) -> None:
    """The host session, the CSRF template global and the headers, for one app."""
    settings = app.config["HANDRAISE_SETTINGS"]
    secure = bool(settings.public_url and settings.public_url.startswith("https://"))
    QuartAuth(app, cookie_name="handraise_host", cookie_samesite="Lax", cookie_http_only=True,
              cookie_secure=secure, duration=SESSION_S, salt="handraise host session")
    # A caller's link to their own call: a separate cookie, so it never carries host rights.
    app.extensions["handraise_link_auth"] = QuartAuth(
        app, cookie_name="handraise_link", cookie_samesite="Lax", cookie_http_only=True,
        cookie_secure=secure, duration=LINK_SESSION_S, salt="handraise participant link",
        attribute_name="handraise_link_user", singleton=False)

    @app.context_processor
    async def csrf_context() -> dict[str, Any]:
        return {"csrf_token": await current_csrf_token()}

    @app.after_request
    async def add_security_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


# --- the host session --------------------------------------------------------------------


def password_matches(given: str, expected: str | None) -> bool:
    """Constant-time comparison; no password configured never matches."""
    if not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def new_host_session() -> AuthUser:
    """A fresh session id for a host who just signed in (its CSRF token follows from it)."""
    return AuthUser("host:" + secrets.token_urlsafe(18))


def csrf_token_for(auth_id: str) -> str:
    secret = str(current_app.secret_key).encode()
    return hmac.new(secret, b"csrf:" + auth_id.encode(), hashlib.sha256).hexdigest()


async def current_csrf_token() -> str:
    """The CSRF token of this page's session (the caller's link on the companion page, the
    host's elsewhere), or "" without one."""
    if request.blueprint == PARTICIPANT_BLUEPRINT:
        link = current_link()
        return csrf_token_for("link:" + ":".join(link)) if link else ""
    if not await current_user.is_authenticated or current_user.auth_id is None:
        return ""
    return csrf_token_for(current_user.auth_id)


# --- the participant's link ------------------------------------------------------------


def _link_auth() -> QuartAuth:
    auth: QuartAuth = current_app.extensions["handraise_link_auth"]
    return auth


def current_link() -> tuple[str, str] | None:
    """(room, participant) this browser is linked to, or None."""
    auth_id = _link_auth().load_user().auth_id
    room, sep, pid = (auth_id or "").partition(":")
    return (room, pid) if sep and room and pid else None


def link_session(room: str, pid: str) -> None:
    """Link this browser to one participant: the cookie names the room and them, nothing else."""
    _link_auth().login_user(AuthUser(f"{room}:{pid}", Action.WRITE))


def unlink_session() -> None:
    _link_auth().logout_user()


def participant_required(
    kind: GuardKind,
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[Any]]]:
    """Guard a companion-page view: it needs a linked call (``page``: else to ``/join``;
    ``action``/``stream``: 401), and writes need the link's CSRF token (403)."""

    def decorate(view: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[Any]]:
        @functools.wraps(view)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> Any:
            if current_link() is None:
                wants_page = request.headers.get("HX-Request") != "true"
                if kind == "page" and request.method in SAFE_METHODS and wants_page:
                    return redirect(url_for("participant.get_join"))
                return Response("Link your call first: open /join and type the PIN you heard.\n",
                                status=401, content_type="text/plain; charset=utf-8")
            if request.method not in SAFE_METHODS and not await csrf_valid():
                log.warning("refused %s %s: missing or wrong CSRF token", request.method, request.path)
                return Response("Refused: this form is out of date. Reload the page and try again.\n",
                                status=403, content_type="text/plain; charset=utf-8")
            return await view(*args, **kwargs)

        setattr(guarded, LINK_MARK, kind)
        return guarded

    return decorate


async def csrf_valid() -> bool:
    """The request carries this session's token, and no foreign ``Origin``."""
    origin = request.headers.get("Origin")
    if origin is not None and not same_origin(origin):
        log.warning("refused %s %s: cross-origin request from %s", request.method, request.path, origin)
        return False
    expected = await current_csrf_token()
    if not expected:
        return False
    given = request.headers.get(CSRF_HEADER) or (await request.form).get(CSRF_FIELD, "")
    return hmac.compare_digest(given.encode(), expected.encode())


def same_origin(origin: str) -> bool:
    """``Origin`` names this server: the public URL's origin or the Host the browser used."""
    allowed = {f"{request.scheme}://{request.host}"}
    public = current_app.config["HANDRAISE_SETTINGS"].public_url
    if public:
        parts = urlsplit(public)
        allowed.add(f"{parts.scheme}://{parts.netloc}")
    return origin in allowed


def safe_next(target: str | None) -> str | None:
    """A local path to return to after sign-in; anything else (another site) is dropped."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    return target


def host_required(
    kind: GuardKind,
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[Any]]]:
    """Guard a host view: ``page`` redirects to the sign-in, ``action``/``stream`` answer 401.

    Writes (anything but GET/HEAD/OPTIONS) also need the CSRF token: 403 without it.
    """

    def decorate(view: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[Any]]:
        @functools.wraps(view)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> Any:
            if not await current_user.is_authenticated:
                # htmx swaps what it gets: a poll must not paste the sign-in page into a list.
                wants_page = request.headers.get("HX-Request") != "true"
                if kind == "page" and request.method in SAFE_METHODS and wants_page:
                    return redirect(url_for("auth.get_login", next=request.full_path.rstrip("?")))
                return Response("Sign in first: your host session is missing or has ended.\n",
                                status=401, content_type="text/plain; charset=utf-8")
            if request.method not in SAFE_METHODS and not await csrf_valid():
                log.warning("refused %s %s: missing or wrong CSRF token", request.method, request.path)
                return Response("Refused: this form is out of date or came from another site. "
                                "Reload the page and try again.\n",
                                status=403, content_type="text/plain; charset=utf-8")
            return await view(*args, **kwargs)

        setattr(guarded, HOST_MARK, kind)
        return guarded

    return decorate


# --- rate limits -------------------------------------------------------------------------

_COUNT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""


def client_id() -> str:
    """Who is asking, for rate limits: a hash of the client address (never stored in clear)."""
    return hashlib.sha256((request.remote_addr or "unknown").encode()).hexdigest()[:24]


def _limit_key(name: str, who: str) -> str:
    return global_key("limit", name, who)


async def retry_after(redis: Redis, name: str, who: str, *, limit: int) -> int:
    """Seconds until ``who`` may try ``name`` again; 0 while under ``limit`` failures."""
    limit_key = _limit_key(name, who)
    count = await redis.get(limit_key)
    if count is None or int(count) < limit:
        return 0
    ttl = await redis.ttl(limit_key)
    return max(1, int(ttl))


async def count_failure(redis: Redis, name: str, who: str, *, window_s: int) -> int:
    """One more failure in ``who``'s window (which starts at their first); returns the count."""
    return int(await eval_script(redis, _COUNT, 1, _limit_key(name, who), window_s))


async def clear_failures(redis: Redis, name: str, who: str) -> None:
    await redis.delete(_limit_key(name, who))


def minutes(seconds: int) -> str:
    """``"1 minute"``, ``"7 minutes"``: a wait rounded up to whole minutes."""
    n = max(1, math.ceil(seconds / 60))
    return f"{n} minute{'s' if n != 1 else ''}"
