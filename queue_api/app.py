"""The /queue REST API of the original system, over Prefect (original-system.md §1).

Reads come from Prefect (and, for result ids and progress, the domain database); writes go
through `biasbench.queue` (submit, control), the same code the CLI routes and tests use. Refused
requests create nothing: every check runs before the one Prefect call that creates a run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from prefect import get_client

from biasbench.db.engine import ready_engine
from biasbench.errors import BiasBenchError, NotAllowedNow, NotFound
from biasbench.settings import Settings
from queue_api.ids import TaskIds
from queue_api.routes import router
from queue_api.settings import ApiSettings
from queue_api.tasks import TaskViews


def create_app(api: ApiSettings | None = None, domain: Settings | None = None) -> FastAPI:
    engine = ready_engine((domain or Settings()).db_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One Prefect client for the app's life: a client per request costs a new connection
        # and an SSL context, which was half of a request's time (perf/README.md).
        async with get_client() as client:
            app.state.prefect = client
            yield

    app = FastAPI(
        lifespan=lifespan,
        title="biasbench queue API",
        version="1.0",
        description="The original /queue API, served over the Prefect-based queue.",
    )
    app.state.settings = api = api or ApiSettings()
    app.state.views = TaskViews(engine, TaskIds(engine))
    if api.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=api.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )
    app.add_exception_handler(BiasBenchError, _refused)
    app.include_router(router)
    return app


async def _refused(_: Request, exc: Exception) -> JSONResponse:
    """Unknown ids are 404, what a task's status forbids now is 409, other refusals 400."""
    status = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, NotAllowedNow) else 400
    return JSONResponse(status_code=status, content={"detail": str(exc)})
