"""The app factory and its health check."""

from __future__ import annotations

from handraise.app import create_app
from handraise.config import Settings
from handraise.store import free_port


async def test_healthz_reports_redis_reachable(redis_server: str) -> None:
    app = create_app(Settings(redis_url=redis_server))
    async with app.test_app():
        response = await app.test_client().get("/healthz")
        assert response.status_code == 200
        assert await response.get_json() == {"status": "ok", "redis": "ok"}


async def test_healthz_says_503_when_redis_is_unreachable() -> None:
    app = create_app(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    async with app.test_app():
        response = await app.test_client().get("/healthz")
        assert response.status_code == 503
        body = await response.get_json()
        assert body["redis"] == "unreachable"
        assert "Redis" in body["detail"]
        # The process is still serving after the failure.
        assert (await app.test_client().get("/healthz")).status_code == 503
