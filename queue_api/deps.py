"""What the routes depend on: the app's Prefect client, its task views and ids, the token check.
All `async def`: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per
dependency per request (a tenth of an add's time under 50 clients, perf/README.md run F)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prefect.client.orchestration import PrefectClient
from sqlalchemy import Engine

from queue_api.ids import TaskIds
from queue_api.settings import ApiSettings
from queue_api.tasks import TaskViews

_bearer = HTTPBearer(auto_error=False)


async def _prefect(request: Request) -> PrefectClient:
    client: PrefectClient = request.app.state.prefect
    return client


async def _views(request: Request) -> TaskViews:
    views: TaskViews = request.app.state.views
    return views


async def _engine(request: Request) -> Engine:
    return (await _views(request)).engine


async def _ids(request: Request) -> TaskIds:
    return (await _views(request)).ids


async def _authorised(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    settings: ApiSettings = request.app.state.settings
    if settings.token is None:
        return
    given = credentials.credentials.encode() if credentials else b""
    # In constant time: how long a refusal takes tells nothing about the token.
    if not hmac.compare_digest(given, settings.token.get_secret_value().encode()):
        raise HTTPException(401, "a bearer token is required (QUEUE_API_TOKEN)")


Prefect = Annotated[PrefectClient, Depends(_prefect)]
Views = Annotated[TaskViews, Depends(_views)]
Ids = Annotated[TaskIds, Depends(_ids)]
DomainDb = Annotated[Engine, Depends(_engine)]
Mutating = Depends(_authorised)
TaskId = Annotated[int, PathParam(ge=1, le=2**63 - 1, description="The task's id.")]


async def flow_run_of(task_id: int, views: TaskViews, client: PrefectClient) -> str:
    """The task's flow run (waited for while its add is still in the outbox), or 404."""
    created = await views.outbox.flow_runs_for([task_id])
    return created.get(task_id) or await views.ids.flow_run_of(client, task_id)


async def _flow_run_id(task_id: TaskId, views: Views, client: Prefect) -> str:
    return await flow_run_of(task_id, views, client)


FlowRunId = Annotated[str, Depends(_flow_run_id)]
