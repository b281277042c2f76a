"""Who may call the API: the optional bearer token, and browser origins (CORS)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from asgi_lifespan import LifespanManager

from biasbench.settings import Settings
from queue_api.app import create_app
from queue_api.settings import ApiSettings


def call(api: ApiSettings, db_url: str, *requests: tuple[str, str, dict]) -> list[httpx.Response]:  # type: ignore[type-arg]
    app = create_app(api, Settings(db_url=db_url))

    async def send() -> list[httpx.Response]:
        async with LifespanManager(app) as running:  # as uvicorn would: startup, then requests
            transport = httpx.ASGITransport(app=running.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
                return [await client.request(m, path, **kw) for m, path, kw in requests]

    return asyncio.run(send())


def test_with_a_token_set_mutating_endpoints_refuse_callers_without_it(db_url: str) -> None:
    bad_body = {"json": {"task_type": "nonsense"}}
    no_token, wrong, right = call(
        ApiSettings(QUEUE_API_TOKEN="t0ken"),
        db_url,
        ("POST", "/queue/add", bad_body),
        ("POST", "/queue/add", {**bad_body, "headers": {"Authorization": "Bearer nope"}}),
        ("POST", "/queue/add", {**bad_body, "headers": {"Authorization": "Bearer t0ken"}}),
    )
    assert (no_token.status_code, wrong.status_code) == (401, 401)
    assert "t0ken" not in no_token.text + wrong.text
    assert right.status_code == 422  # past the token check, on to validating the body


def test_browser_origins_are_allowed_only_when_configured(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    preflight = {
        "headers": {
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "POST",
        }
    }
    (closed,) = call(ApiSettings(), db_url, ("OPTIONS", "/queue/add", preflight))
    monkeypatch.setenv("QUEUE_API_CORS_ORIGINS", '["http://localhost:3000"]')
    (allowed,) = call(ApiSettings(), db_url, ("OPTIONS", "/queue/add", preflight))
    assert allowed.headers.get("access-control-allow-origin") == "http://localhost:3000"
    assert "access-control-allow-origin" not in closed.headers
