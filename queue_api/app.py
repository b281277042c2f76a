"""The /queue REST API of the original system, over Prefect (original-system.md §1).

Reads come from Prefect (and, for result ids and progress, the domain database); writes go
through `biasbench.queue` (submit, control), the same code the CLI routes and tests use. Refused
requests create nothing: every check runs before the one Prefect call that creates a run."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from prefect import get_client
from prefect.exceptions import PrefectHTTPStatusError
from prefect.settings import PREFECT_API_ENABLE_HTTP2, PREFECT_API_URL

from biasbench.db.engine import ready_engine
from biasbench.errors import BiasBenchError, NotAllowedNow, NotFound, QueueBusy
from biasbench.settings import Settings
from queue_api.guard import RequestGuard
from queue_api.health import PrefectHealth
from queue_api.ids import TaskIds
from queue_api.outbox import CreateTicket, GivenUp
from queue_api.page_config import router as page_config_router
from queue_api.routes import router
from queue_api.settings import ApiSettings
from queue_api.tasks import TaskViews
from queue_api.writes import WritesBusy, one_writer_transport

log = logging.getLogger("queue_api")


def create_app(api: ApiSettings | None = None, domain: Settings | None = None) -> FastAPI:
    domain = domain or Settings()
    engine = ready_engine(domain.db_url)
    settings = api or ApiSettings()
    catalogue = domain.catalogue  # read once: a broken catalogue stops the API at its start

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One Prefect client for the app's life: a client per request costs a new connection
        # and an SSL context, which was half of a request's time (perf/README.md).
        health = PrefectHealth(PREFECT_API_URL.value())
        async with get_client(httpx_settings=_client_settings(settings, health)) as client:
            app.state.prefect = client
            app.state.health = health
            watching = asyncio.create_task(health.watch())
            # Adds answered but not yet created, also those a previous process left (outbox.py).
            sending = asyncio.create_task(app.state.views.outbox.send_forever(client))
            try:
                yield
            finally:
                watching.cancel()
                sending.cancel()

    app = FastAPI(
        lifespan=lifespan,
        title="biasbench queue API",
        version="1.0",
        description="The original /queue API, served over the Prefect-based queue.",
    )
    app.state.settings = settings
    app.state.catalogue = catalogue
    app.state.views = TaskViews(
        engine, TaskIds(engine), swap_seconds=domain.queue_model_swap_seconds
    )
    app.add_exception_handler(BiasBenchError, _refused)
    app.add_exception_handler(RequestValidationError, _malformed)
    app.add_exception_handler(httpx.TransportError, _prefect_down)
    app.add_exception_handler(WritesBusy, _busy)
    app.add_exception_handler(GivenUp, _busy)  # (its client has had its 503 already)
    app.add_exception_handler(PrefectHTTPStatusError, _prefect_refused)
    app.middleware("http")(_while_prefect_answers)
    # Outermost but for CORS: nothing reads a request the guard refuses.
    app.add_middleware(
        RequestGuard,
        hosts=settings.host_names,
        origins=settings.cors_origins,
        max_body=settings.max_body_bytes,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.include_router(router)
    app.include_router(page_config_router)
    return app


async def _while_prefect_answers(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """A request that needs a Prefect server that does not answer gets a 503 at once, or as
    soon as the server stops answering while it waits."""
    # Shared with the route (set before it gets its copy of the request's scope): an add marks
    # it once its create is sent. The route is not stopped by a 503 here (the app runs on in
    # its own task), so a given-up add must not be created later (outbox.py).
    request.state.create = ticket = CreateTicket()
    health: PrefectHealth | None = getattr(request.app.state, "health", None)
    if health is None or request.url.path in _NEEDS_NO_PREFECT:
        return await call_next(request)
    if health.down:
        return _unavailable(health.reason())
    answer = asyncio.ensure_future(call_next(request))
    while True:
        done, _ = await asyncio.wait({answer}, timeout=0.25)
        if done:
            return answer.result()
        if health.down:
            if ticket.sent:  # a 503 now and the client's retry would add it twice
                done, _ = await asyncio.wait({answer}, timeout=CREATE_OUTCOME_WAIT_SECONDS)
                if done:
                    return answer.result()
            ticket.given_up = True
            answer.cancel()
            return _unavailable(health.reason())


# How long an add whose create was sent waits for Prefect's answer while the server is silent: a
# server back within this time has created it, and the client gets its id.
CREATE_OUTCOME_WAIT_SECONDS = 25.0

_NEEDS_NO_PREFECT = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/config"}


async def _prefect_down(request: Request, exc: Exception) -> JSONResponse:
    return _unavailable(
        f"the Prefect server does not answer ({type(exc).__name__}); no task is lost"
    )


def _client_settings(api: ApiSettings, health: PrefectHealth) -> dict[str, object]:
    """The Prefect client's: every answer tells `health` the server is up; writes go one at a
    time (writes.py) when the server is remote (an in-process one gets the client's own ASGI
    transport)."""
    settings: dict[str, object] = {"event_hooks": {"response": [health.heard]}}
    if api.one_writer and PREFECT_API_URL.value() is not None:
        settings["transport"] = one_writer_transport(
            max_wait=api.write_wait_seconds, http2=bool(PREFECT_API_ENABLE_HTTP2.value())
        )
    return settings


async def _busy(request: Request, exc: Exception) -> JSONResponse:
    log.warning("refused %s %s (503): %s", request.method, request.url.path, exc)
    return _unavailable(str(exc))


async def _prefect_refused(request: Request, exc: Exception) -> JSONResponse:
    """Prefect still answered 5xx after its client's retries (e.g. 503 "database is locked"
    from another writer): the change was not made; say so, never a bare 500. Any other status
    is a bug of ours and stays a 500."""
    assert isinstance(exc, PrefectHTTPStatusError)
    status = exc.response.status_code
    if status < 500:
        raise exc
    log.warning(
        "%s %s: Prefect answered %s after retries", request.method, request.url.path, status
    )
    return _unavailable(
        f"the Prefect server is overloaded (it answered {status}); the request was not carried "
        "out, try again in a few seconds"
    )


def _unavailable(reason: str) -> JSONResponse:
    return JSONResponse(status_code=503, content={"detail": reason}, headers={"Retry-After": "5"})


async def _malformed(request: Request, exc: Exception) -> JSONResponse:
    """422 naming each field, without echoing what was sent (it may be megabytes, or a
    secret), and one log line."""
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": e["loc"], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    log.info(
        "refused %s %s (422): %s",
        request.method,
        request.url.path,
        "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg'][:200]}" for e in errors[:5]),
    )
    return JSONResponse(status_code=422, content={"detail": errors})


async def _refused(request: Request, exc: Exception) -> JSONResponse:
    """Unknown ids are 404, what a task's status forbids now is 409, a busy Prefect 503, other
    refusals 400."""
    if isinstance(exc, QueueBusy):
        return await _busy(request, exc)
    status = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, NotAllowedNow) else 400
    return JSONResponse(status_code=status, content={"detail": str(exc)})
