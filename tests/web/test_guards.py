"""Host sign-in, the guards on every /host route, CSRF, rate limits and security headers."""

from __future__ import annotations

import re

import pytest
from webkit import PASSWORD, csrf_of, settings, sign_in, signed_in

from handraise.app import create_app
from handraise.queue import Queue
from handraise.rooms import create_room
from handraise.store import Redis
from handraise.web.security import HOST_MARK

OPEN_HOST_ROUTES = {"/host/login"}


def _host_rules(app) -> list:  # type: ignore[no-untyped-def]
    return [r for r in app.url_map.iter_rules()
            if r.rule.startswith("/host") and r.rule not in OPEN_HOST_ROUTES]


def _example_path(rule: str) -> str:
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: {"action": "lower-all"}.get(m.group(1), "x1"), rule)


def test_every_host_route_requires_the_host_session() -> None:
    app = create_app(settings())
    rules = _host_rules(app)
    assert len(rules) >= 8  # rooms, dashboard, events, actions, log, logout...
    for rule in rules:
        view = app.view_functions[rule.endpoint]
        assert getattr(view, HOST_MARK, None) in {"page", "action", "stream"}, \
            f"{rule.rule} does not check the host session"
    assert getattr(app.view_functions["host.get_dashboard_events"], HOST_MARK) == "stream"


async def test_without_a_session_pages_redirect_to_sign_in_and_actions_and_streams_answer_401(
        redis: Redis) -> None:
    app = create_app(settings(), redis=redis)
    async with app.test_app():
        client = app.test_client()
        for rule in _host_rules(app):
            path = _example_path(rule.rule)
            kind = getattr(app.view_functions[rule.endpoint], HOST_MARK)
            if "GET" in rule.methods:
                response = await client.get(path)
                if kind == "page":
                    assert response.status_code == 302, path
                    assert response.headers["Location"].startswith("/host/login?next=")
                else:
                    assert response.status_code == 401, path
            if "POST" in rule.methods:
                response = await client.post(path)
                assert response.status_code == 401, path


async def test_an_htmx_poll_without_a_session_gets_401_not_the_sign_in_page(redis: Redis) -> None:
    app = create_app(settings(), redis=redis)
    async with app.test_app():
        response = await app.test_client().get("/host/rooms/r1", headers={"HX-Request": "true"})
        assert response.status_code == 401


async def test_sign_in_returns_to_the_page_asked_for_and_never_to_another_site(redis: Redis) -> None:
    app = create_app(settings(), redis=redis)
    async with app.test_app():
        client = app.test_client()
        first = await client.get("/host/rooms/r1")
        assert first.headers["Location"] == "/host/login?next=/host/rooms/r1"
        form = await (await client.get(first.headers["Location"])).get_data(as_text=True)
        assert 'name="next" value="/host/rooms/r1"' in form
        back = await client.post("/host/login", form={"password": PASSWORD, "next": "/host/rooms/r1"})
        assert back.status_code == 303 and back.headers["Location"] == "/host/rooms/r1"
        evil = await client.post("/host/login", form={"password": PASSWORD, "next": "//evil.example"})
        assert evil.headers["Location"] == "/host"


async def test_a_wrong_password_shows_the_form_again(redis: Redis) -> None:
    app = create_app(settings(), redis=redis)
    async with app.test_app():
        response = await app.test_client().post("/host/login", form={"password": "nope"})
        body = await response.get_data(as_text=True)
        assert response.status_code == 200
        assert "Wrong password." in body and 'id="password"' in body
        assert "Set-Cookie" not in response.headers
        assert (await app.test_client().get("/host")).status_code == 302


async def test_ten_wrong_passwords_lock_that_client_out_in_every_process(redis: Redis) -> None:
    app, other = create_app(settings(), redis=redis), create_app(settings(), redis=redis)
    attacker = {"client": ("10.0.0.9", 5000)}
    async with app.test_app(), other.test_app():
        client = app.test_client()
        for _ in range(9):
            response = await client.post("/host/login", form={"password": "guess"}, scope_base=attacker)
            assert response.status_code == 200
        tenth = await client.post("/host/login", form={"password": "guess"}, scope_base=attacker)
        assert tenth.status_code == 429
        assert 590 <= int(tenth.headers["Retry-After"]) <= 600
        assert "Try again in 10 minutes." in await tenth.get_data(as_text=True)
        # The right password does not get through either, and not through the other process.
        again = await other.test_client().post("/host/login", form={"password": PASSWORD},
                                               scope_base=attacker)
        assert again.status_code == 429 and "Set-Cookie" not in again.headers
        # Another client is not locked out.
        fine = await client.post("/host/login", form={"password": PASSWORD},
                                 scope_base={"client": ("10.0.0.10", 5000)})
        assert fine.status_code == 303


@pytest.mark.filterwarnings("ignore:Secure cookies will be ignored")
@pytest.mark.parametrize(("public_url", "secure"), [("https://hr.example.org", True),
                                                    ("http://localhost", False)])
async def test_the_session_cookie_is_http_only_lax_and_secure_on_https(
        redis: Redis, public_url: str, secure: bool) -> None:
    app = create_app(settings(public_url=public_url), redis=redis)
    async with app.test_app():
        response = await app.test_client().post("/host/login", form={"password": PASSWORD})
        cookie = response.headers["Set-Cookie"]
        assert cookie.startswith("handraise_host=")
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
        assert ("Secure" in cookie) is secure


async def test_pages_send_a_strict_content_security_policy(redis: Redis) -> None:
    app = create_app(settings(), redis=redis)
    async with app.test_app():
        response = await app.test_client().get("/host/login")
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["Referrer-Policy"] == "same-origin"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        body = await response.get_data(as_text=True)
        assert not re.search(r"<script(?![^>]*\bsrc=)", body)  # no inline script
        assert not re.search(r"\son[a-z]+=", body)  # no inline event handlers


async def test_a_write_without_the_csrf_token_is_refused_and_changes_nothing(redis: Redis) -> None:
    async with signed_in(redis) as host:
        room = (await create_room(redis, "Guarded")).room
        queue = Queue(redis)
        pid = await queue.join(room.id, number="+15550100001")
        await queue.raise_hand(room.id, pid, source="keypad")
        path = f"/host/rooms/{room.id}/lower-all"
        assert (await host.client.post(path)).status_code == 403
        assert (await host.client.post(path, headers={"X-CSRF-Token": "0" * 64})).status_code == 403
        # A token of another session does not work either.
        other = host.app.test_client()
        other_token = await sign_in(other)
        assert other_token != host.csrf
        assert (await host.client.post(path, headers={"X-CSRF-Token": other_token})).status_code == 403
        # Nor does the right token from a foreign origin.
        foreign = await host.client.post(path, headers=host.headers(Origin="https://evil.example"))
        assert foreign.status_code == 403
        assert [h.participant for h in await queue.queue(room.id)] == [pid]
        ok = await host.client.post(path, form={"csrf_token": host.csrf},
                                    headers={"Origin": "http://localhost"})
        assert ok.status_code == 200
        assert await queue.queue(room.id) == []


async def test_sign_out_ends_the_session(redis: Redis) -> None:
    async with signed_in(redis) as host:
        assert (await host.client.post("/host/logout")).status_code == 403  # needs the token too
        out = await host.client.post("/host/logout", headers=host.headers())
        assert out.status_code == 303 and out.headers["Location"] == "/host/login"
        assert (await host.client.get("/host")).status_code == 302


async def test_the_token_is_in_forms_and_in_htmx_headers(redis: Redis) -> None:
    async with signed_in(redis) as host:
        page = await (await host.client.get("/host")).get_data(as_text=True)
        assert csrf_of(page) == host.csrf
        assert f'hx-headers=\'{{"X-CSRF-Token": "{host.csrf}"}}\'' in page
