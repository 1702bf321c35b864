"""GET /metrics: who may read it, and totals summed over processes sharing one Redis."""

from __future__ import annotations

import logging
import re

import httpx
import pytest
from twilio.request_validator import RequestValidator
from webkit import settings, signed_in

from handraise.app import create_app
from handraise.metrics import Metrics, render
from handraise.queue import Queue
from handraise.rooms import create_room
from handraise.sim import ServedApp
from handraise.store import Redis
from handraise.tokens import create_token

pytestmark = pytest.mark.filterwarnings("ignore:.*(BasicAuth|auth' parameter).*:DeprecationWarning")

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
TOKEN = "abcdef0123456789abcdef0123456789"


def value(text: str, series: str) -> float:
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    assert found, f"no {series} in\n{text}"
    return float(found.group(1))


def twilio_settings(**overrides: object) -> object:
    return settings(twilio_account_sid=ACCOUNT_SID, twilio_auth_token=TOKEN,
                    twilio_api_url="http://127.0.0.1:9", **overrides)  # nothing listens there


async def test_local_mode_answers_this_machine_only_not_a_proxied_request(redis: Redis) -> None:
    app = create_app(settings(), redis=redis)
    async with ServedApp(app, health_path="/healthz") as served, \
            httpx.AsyncClient(base_url=served.base_url) as client:
        ok = await client.get("/metrics")
        assert ok.status_code == 200 and ok.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert "# TYPE handraise_http_request_seconds histogram" in ok.text
        proxied = await client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
        assert proxied.status_code == 403 and "HANDRAISE_METRICS" in proxied.text
    # Quart's test client is no local address: refused as well.
    app = create_app(settings(), redis=redis)
    async with app.test_app():
        assert (await app.test_client().get("/metrics")).status_code == 403


async def test_host_mode_needs_a_signed_in_host_or_an_api_token_and_off_is_404(redis: Redis) -> None:
    async with signed_in(redis, metrics_access="host") as host:
        assert (await host.client.get("/metrics")).status_code == 200
        stranger = host.app.test_client()
        assert (await stranger.get("/metrics")).status_code == 403
        secret, _ = await create_token(redis, "prometheus")
        bearer = await stranger.get("/metrics", headers={"Authorization": f"Bearer {secret}"})
        assert bearer.status_code == 200
        wrong = await stranger.get("/metrics", headers={"Authorization": "Bearer hr_nope"})
        assert wrong.status_code == 403
    app = create_app(settings(metrics_access="off"), redis=redis)
    async with app.test_app():
        assert (await app.test_client().get("/metrics")).status_code == 404


async def test_two_processes_on_one_redis_report_the_same_totals_and_the_gauges(redis: Redis) -> None:
    room = (await create_room(redis, "Counted")).room
    queue = Queue(redis)
    pid_a = await queue.join(room.id, number="+15550101111")
    pid_b = await queue.join(room.id, number="+15550102222", call_sid="CA" + "2" * 32)
    await queue.raise_hand(room.id, pid_a, source="web")
    one = create_app(twilio_settings(metrics_access="host"), redis=redis)
    two = create_app(twilio_settings(metrics_access="host"), redis=redis)
    secret, _ = await create_token(redis, "prometheus")
    scrape = {"Authorization": f"Bearer {secret}"}
    async with one.test_app(), two.test_app():
        url = "http://localhost/voice/incoming"
        form = {"CallSid": "CA" + "1" * 32, "AccountSid": ACCOUNT_SID, "From": "+15550103333"}
        signature = RequestValidator(TOKEN).compute_signature(url, form)
        for _ in range(3):
            answered = await one.test_client().post("/voice/incoming", form=form,
                                                    headers={"X-Twilio-Signature": signature})
            assert answered.status_code == 200
        # A host's page in a third app: leaving its context stops it, which flushes its counts.
        async with signed_in(redis) as host:
            assert (await host.client.get(f"/host/rooms/{room.id}")).status_code == 200
        seen = [await (await app.test_client().get("/metrics", headers=scrape)).get_data(as_text=True)
                for app in (one, two)]
    for text in seen:
        assert value(text, 'handraise_http_request_seconds_count{group="voice"}') == 3
        assert value(text, 'handraise_http_requests_total{group="voice",status="2xx"}') == 3
        assert value(text, 'handraise_http_request_seconds_bucket{group="voice",le="+Inf"}') == 3
        assert value(text, "handraise_participants") == 2
        assert value(text, "handraise_hands_raised") == 1
        assert value(text, "handraise_rooms_open") == 1
        assert value(text, "handraise_room_events_total") >= 4  # created, 2 joined, raised
        assert value(text, 'handraise_http_requests_total{group="host",status="2xx"}') >= 2
    assert pid_b


async def test_twilio_rest_calls_are_timed_by_outcome() -> None:
    from handraise.phone.control import TwilioControl

    m = Metrics()
    twilio = TwilioControl(twilio_settings(), metrics=m)  # type: ignore[arg-type]
    try:
        outcome = await twilio.set_muted("CF" + "1" * 32, "CA" + "2" * 32, True)
    finally:
        await twilio.close()
    assert outcome.kind == "failed"
    counts = m.take()
    assert counts["handraise_twilio_rest_seconds_count|outcome=failed"] == 1


def test_counts_are_kept_when_a_flush_fails_and_buckets_are_cumulative() -> None:
    m = Metrics()
    m.observe("handraise_twilio_rest_seconds", 0.03, outcome="ok")
    m.observe("handraise_twilio_rest_seconds", 3.0, outcome="ok")
    counts = m.take()
    text = render({k: str(v) for k, v in counts.items()}, [])
    assert value(text, 'handraise_twilio_rest_seconds_bucket{outcome="ok",le="0.025"}') == 0
    assert value(text, 'handraise_twilio_rest_seconds_bucket{outcome="ok",le="0.05"}') == 1
    assert value(text, 'handraise_twilio_rest_seconds_bucket{outcome="ok",le="5.0"}') == 2
    assert value(text, 'handraise_twilio_rest_seconds_count{outcome="ok"}') == 2
    assert value(text, 'handraise_twilio_rest_seconds_sum{outcome="ok"}') == pytest.approx(3.03)
    buckets = re.findall(r'_bucket\{outcome="ok",le="([^"]+)"\}', text)
    bounds = [float(b) for b in buckets[:-1]]
    assert buckets[-1] == "+Inf" and bounds == sorted(bounds) and len(bounds) == 12


async def test_a_failed_flush_gives_the_counts_back() -> None:
    from handraise.store import client_from_url

    dead = client_from_url("redis://127.0.0.1:9/0")
    m = Metrics()
    m.count("handraise_http_requests_total", group="voice", status="2xx")
    with pytest.raises(Exception):  # noqa: B017 - whichever connection error redis-py raises
        await m.flush(dead)
    assert m.take() == {"handraise_http_requests_total|group=voice,status=2xx": 1}
    await dead.aclose()


async def test_a_redis_error_logged_anywhere_is_counted_by_module(redis: Redis) -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    app = create_app(settings(metrics_access="host"), redis=redis)
    async with app.test_app():
        secret, _ = await create_token(redis, "prometheus")
        logging.getLogger("handraise.phone.media").warning(
            "media stream: redis unavailable: %r", RedisConnectionError("gone"))
        scraped = await app.test_client().get("/metrics", headers={"Authorization": f"Bearer {secret}"})
        text = await scraped.get_data(as_text=True)
    assert value(text, 'handraise_redis_errors_total{where="phone.media"}') == 1
