"""The /queue REST API of the original system, over Prefect (original-system.md §1).

Reads come from Prefect (and, for result ids and progress, the domain database); writes go
through `biasbench.queue` (submit, control), the same code the CLI routes and tests use. Refused
requests create nothing: every check runs before the one Prefect call that creates a run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prefect import get_client
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun

from biasbench.db.engine import ready_engine, session_scope
from biasbench.errors import FieldError, QueueError, UnknownTask
from biasbench.queue import control
from biasbench.queue.model import QueueStatus, queue_status
from biasbench.queue.submit import submit
from biasbench.results import forget_results
from biasbench.settings import Settings
from queue_api.ids import TaskIds
from queue_api.labels import default_label
from queue_api.schemas import Added, AddTask, Ok, QueueTask, Stats
from queue_api.settings import ApiSettings
from queue_api.tasks import ACTIVE, TaskReader, in_contract_order

_bearer = HTTPBearer(auto_error=False)


def _prefect(request: Request) -> PrefectClient:
    return request.app.state.prefect


Prefect = Annotated[PrefectClient, Depends(_prefect)]
TaskId = Annotated[int, PathParam(ge=1, le=2**63 - 1, description="The task's id.")]


def create_app(api: ApiSettings | None = None, domain: Settings | None = None) -> FastAPI:
    api = api or ApiSettings()
    engine = ready_engine((domain or Settings()).db_url)
    ids = TaskIds(engine)
    reader = TaskReader(engine, ids)

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
    if api.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=api.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )

    def authorised(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        if api.token is None:
            return
        if credentials is None or credentials.credentials != api.token.get_secret_value():
            raise HTTPException(401, "a bearer token is required (QUEUE_API_TOKEN)")

    Mutating = Depends(authorised)

    @app.exception_handler(FieldError)
    @app.exception_handler(QueueError)
    async def refused(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": str(exc)})

    async def run_or_404(client: PrefectClient, task_id: int) -> FlowRun:
        run = await reader.run_of(client, task_id)
        if run is None:
            raise HTTPException(404, f"task {task_id} does not exist")
        return run

    @app.post("/queue/add", response_model=Added, dependencies=[Mutating])
    async def add(body: AddTask, client: Prefect) -> Added:
        wanted = body.depends_on if isinstance(body.depends_on, list) else [body.depends_on]
        upstream = []
        for task_id in (t for t in wanted if t is not None):
            if (flow_run_id := ids.flow_run_for(task_id)) is None:
                raise UnknownTask(f"depends_on: task {task_id} does not exist")
            upstream.append(flow_run_id)
        flow_run_id = await submit(
            client,
            body.task_type,
            body.config,
            upstream=upstream,
            priority=body.priority,
            label=body.label or default_label(body.task_type, body.config),
        )
        return Added(task_id=ids.id_for(flow_run_id))

    @app.get("/queue", response_model=list[QueueTask], response_model_exclude_unset=True)
    async def list_tasks(
        client: Prefect,
        include_done: bool = True,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> list[QueueTask]:
        active = await reader.active_runs(client)
        done = await reader.newest_finished_runs(client, limit - len(active) if include_done else 0)
        tasks = in_contract_order(await reader.tasks(client, [*active, *done]))
        return tasks[:limit]

    @app.get("/queue/stats", response_model=Stats)
    async def stats(client: Prefect) -> Stats:
        counts, state = await asyncio.gather(reader.counts(client), control.queue_state(client))
        return Stats(
            total=sum(counts.values()),
            **{status.value: count for status, count in counts.items()},
            executor_running=state.executor_running,
            executor_paused=state.executor_paused,
        )

    @app.get("/queue/{task_id}", response_model=QueueTask, response_model_exclude_unset=True)
    async def get_task(task_id: TaskId, client: Prefect) -> QueueTask:
        (task,) = await reader.tasks(client, [await run_or_404(client, task_id)])
        return task

    @app.delete("/queue/{task_id}", response_model=Ok, dependencies=[Mutating])
    async def remove(task_id: TaskId, client: Prefect) -> Ok:
        run = await run_or_404(client, task_id)
        if _status(run) not in {QueueStatus.QUEUED, QueueStatus.WAITING}:
            raise QueueError(
                f"task {task_id} is {_status(run)}: only queued or waiting tasks can be "
                "removed; cancel it instead"
            )
        dependents = [
            r
            for r in await reader.active_runs(client)
            if str(run.id) in (r.parameters.get("upstream") or []) and _status(r) in ACTIVE
        ]
        if dependents:
            raise QueueError(
                f"task {task_id} has {len(dependents)} waiting dependent(s); "
                "remove or cancel them first"
            )
        await client.delete_flow_run(run.id)
        return Ok(ok=True, message=f"task {task_id} removed")

    @app.post("/queue/{task_id}/cancel", response_model=Ok, dependencies=[Mutating])
    async def cancel(task_id: TaskId, client: Prefect) -> Ok:
        run = await run_or_404(client, task_id)
        await control.cancel(client, str(run.id))
        return Ok(ok=True, message=f"task {task_id} cancelled")

    @app.post("/queue/{task_id}/retry", response_model=Ok, dependencies=[Mutating])
    async def retry(task_id: TaskId, client: Prefect, delete_results: bool = False) -> Ok:
        run = await run_or_404(client, task_id)
        if _status(run) not in control.RETRYABLE:
            raise QueueError(
                f"task {task_id} is {_status(run)}: "
                "only failed, cancelled or skipped tasks can be retried"
            )
        if delete_results:
            with session_scope(engine) as session:
                forget_results(session, str(run.id))
        requeued = await control.retry(client, str(run.id))
        again = len(requeued) - 1
        extra = f", with {again} dependent(s) waiting for it again" if again else ""
        return Ok(ok=True, message=f"task {task_id} queued again{extra}")

    @app.post("/queue/start", response_model=Ok, dependencies=[Mutating])
    async def start(client: Prefect) -> Ok:
        await control.set_paused(client, False)
        started = await control.start(client)
        return Ok(ok=True, message="queue started" if started else "queue already running")

    @app.post("/queue/stop", response_model=Ok, dependencies=[Mutating])
    async def stop() -> Ok:
        await control.stop()
        return Ok(ok=True, message="queue stops after the current task")

    @app.post("/queue/pause", response_model=Ok, dependencies=[Mutating])
    async def pause(client: Prefect) -> Ok:
        await control.set_paused(client, True)
        return Ok(ok=True, message="queue paused: the running task finishes, nothing new starts")

    @app.post("/queue/resume", response_model=Ok, dependencies=[Mutating])
    async def resume(client: Prefect) -> Ok:
        await control.set_paused(client, False)
        return Ok(ok=True, message="queue resumed")

    return app


def _status(run: FlowRun) -> QueueStatus:
    return queue_status(run.state.type.value, run.state.name) if run.state else QueueStatus.QUEUED
