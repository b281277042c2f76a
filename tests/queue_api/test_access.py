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
            async with httpx.AsyncClient(
                transport=transport, base_url="http://127.0.0.1"
            ) as client:
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


FORM = {
    "content": b"task_type=pool_gen",
    "headers": {"Content-Type": "application/x-www-form-urlencoded"},
}


@pytest.mark.parametrize(
    ("method", "path", "request_args", "status"),
    [
        # What a cross-site <form> or a no-preflight fetch can send: refused before any work.
        ("POST", "/queue/add", FORM, 415),
        ("POST", "/queue/pause", FORM, 415),
        (
            "POST",
            "/queue/add",
            {"content": b"--x--", "headers": {"Content-Type": "multipart/form-data; boundary=x"}},
            415,
        ),
        (
            "POST",
            "/queue/add",
            {"content": b'{"task_type": "pool_gen"}', "headers": {"Content-Type": "text/plain"}},
            415,
        ),
        (
            "DELETE",
            "/queue/1",
            {"content": b"x", "headers": {"Content-Type": "text/plain;charset=UTF-8"}},
            415,
        ),
        ("POST", "/queue/add", {"content": b'{"task_type": "pool_gen"}'}, 415),  # a body, no type
        # A page on another origin, even with a JSON body (it would need a preflight first).
        ("POST", "/queue/pause", {"headers": {"Origin": "http://evil.example"}}, 403),
        ("GET", "/queue/stats", {"headers": {"Origin": "http://evil.example"}}, 403),
        ("POST", "/queue/add", {"json": {}, "headers": {"Origin": "null"}}, 403),
        # DNS rebinding: the attacker's name resolves to 127.0.0.1, the Host header keeps it.
        ("GET", "/queue/stats", {"headers": {"Host": "evil.example"}}, 400),
        ("POST", "/queue/pause", {"headers": {"Host": "evil.example:8765"}}, 400),
    ],
)
def test_what_a_foreign_page_can_send_is_refused(
    db_url: str,
    method: str,
    path: str,
    request_args: dict,
    status: int,  # type: ignore[type-arg]
) -> None:
    (response,) = call(ApiSettings(), db_url, (method, path, request_args))
    assert response.status_code == status, response.text
    assert response.json()["detail"]


def test_own_clients_pass_the_guard(db_url: str) -> None:
    """A POST without a body and without a content type (the original page's fetch), JSON,
    the API's own origin (its /docs page), a configured origin, and localhost by name."""
    bad = {"json": {"task_type": "nonsense"}}
    api = ApiSettings(QUEUE_API_CORS_ORIGINS=["http://localhost:3000"])
    no_body, as_json, own_page, configured, by_name, charset = call(
        api,
        db_url,
        ("POST", "/queue/999999/cancel", {}),
        ("POST", "/queue/add", bad),
        ("POST", "/queue/add", {**bad, "headers": {"Origin": "http://127.0.0.1"}}),
        ("POST", "/queue/add", {**bad, "headers": {"Origin": "http://localhost:3000"}}),
        ("POST", "/queue/add", {**bad, "headers": {"Host": "localhost:8765"}}),
        (
            "POST",
            "/queue/add",
            {"content": b"{}", "headers": {"Content-Type": "application/json; charset=utf-8"}},
        ),
    )
    assert no_body.status_code == 404  # past the guard: the task does not exist
    assert {r.status_code for r in (as_json, own_page, configured, by_name, charset)} == {422}


def test_more_host_names_can_be_allowed(db_url: str) -> None:
    api = ApiSettings(QUEUE_API_ALLOWED_HOSTS=["gpu-box.lan"])
    (answer,) = call(
        api, db_url, ("POST", "/queue/add", {"json": {}, "headers": {"Host": "gpu-box.lan"}})
    )
    assert answer.status_code == 422


def test_an_empty_token_setting_means_no_token(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUEUE_API_TOKEN", "")
    assert ApiSettings().token is None
    (response,) = call(ApiSettings(), db_url, ("POST", "/queue/add", {"json": {}}))
    assert response.status_code == 422  # not 401


def test_a_body_over_the_limit_is_413_and_not_echoed(db_url: str) -> None:
    secret = "s3cret" * 400
    body = {"task_type": "pool_gen", "config": {"note": secret}}
    (response,) = call(
        ApiSettings(QUEUE_API_MAX_BODY_BYTES=1000), db_url, ("POST", "/queue/add", {"json": body})
    )
    assert response.status_code == 413 and secret not in response.text
