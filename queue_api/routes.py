"""The /queue endpoints: each validates, makes one call into the queue, and returns. Domain
errors rise to the one handler in app.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from biasbench.errors import InvalidSubmission
from biasbench.queue import control
from biasbench.queue.payload import MAX_LABEL_LENGTH
from biasbench.queue.submit import SubmitRequest, check_submission
from queue_api.deps import (
    DomainDb,
    FlowRunId,
    Mutating,
    Prefect,
    TaskId,
    Views,
    flow_run_of,
)
from queue_api.labels import default_label
from queue_api.schemas import Message, QueueStats, TaskCreated, TaskPublic, TaskSubmit

router = APIRouter(prefix="/queue")


@router.post("/add", response_model=TaskCreated, dependencies=[Mutating])
async def add(
    body: TaskSubmit, client: Prefect, db: DomainDb, views: Views, request: Request
) -> TaskCreated:
    """Checked in full, then kept in the outbox: the answer does not wait for Prefect to create
    the run (outbox.py), but an upstream task still in the outbox is waited for."""
    upstream = await views.outbox.flow_runs_for(body.upstream_ids)
    for task_id in body.upstream_ids:
        if task_id not in upstream:
            raise InvalidSubmission("depends_on", f"task {task_id} does not exist")
    submission = await check_submission(
        client,
        SubmitRequest(
            body.task_type,
            body.config,
            upstream=[upstream[task_id] for task_id in body.upstream_ids],
            priority=body.priority,
            label=body.label or default_label(body.task_type, body.config)[:MAX_LABEL_LENGTH],
            db=db,
            upstream_field="depends_on",
            upstream_names={run: str(task_id) for task_id, run in upstream.items()},
            catalogue=request.app.state.catalogue,
        ),
    )
    task_id = views.outbox.put(
        submission, depends_on=body.upstream_ids, ticket=request.state.create
    )
    return TaskCreated(task_id=task_id)


@router.get("", response_model=list[TaskPublic], response_model_exclude_unset=True)
async def list_tasks(
    client: Prefect,
    views: Views,
    include_done: bool = True,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[TaskPublic]:
    return await views.listing(client, include_done=include_done, limit=limit)


@router.get("/stats", response_model=QueueStats)
async def stats(client: Prefect, views: Views) -> QueueStats:
    return await views.stats(client)


@router.get("/{task_id}", response_model=TaskPublic, response_model_exclude_unset=True)
async def get_task(task_id: TaskId, client: Prefect, views: Views) -> TaskPublic:
    return await views.one(client, task_id)


@router.delete("/{task_id}", response_model=Message, dependencies=[Mutating])
async def remove(task_id: TaskId, client: Prefect, views: Views) -> Message:
    if views.outbox.withdraw(task_id):  # an add not created yet
        return Message(ok=True, message=f"task {task_id} removed")
    await control.remove(
        client,
        await flow_run_of(task_id, views, client),
        dependents_not_created=views.outbox.dependents_of(task_id),
    )
    return Message(ok=True, message=f"task {task_id} removed")


@router.post("/{task_id}/cancel", response_model=Message, dependencies=[Mutating])
async def cancel(task_id: TaskId, run_id: FlowRunId, client: Prefect) -> Message:
    await control.cancel(client, run_id)
    return Message(ok=True, message=f"task {task_id} cancelled")


@router.post("/{task_id}/retry", response_model=Message, dependencies=[Mutating])
async def retry(
    task_id: TaskId, run_id: FlowRunId, client: Prefect, db: DomainDb, delete_results: bool = False
) -> Message:
    requeued = await control.retry(client, run_id, forget_results_in=db if delete_results else None)
    again = len(requeued) - 1
    extra = f", with {again} dependent(s) waiting for it again" if again else ""
    return Message(ok=True, message=f"task {task_id} queued again{extra}")


@router.post("/start", response_model=Message, dependencies=[Mutating])
async def start(client: Prefect) -> Message:
    await control.set_paused(client, False)
    started = await control.start(client)
    return Message(ok=True, message="queue started" if started else "queue already running")


@router.post("/stop", response_model=Message, dependencies=[Mutating])
async def stop() -> Message:
    await control.stop()
    return Message(ok=True, message="queue stops after the current task")


@router.post("/pause", response_model=Message, dependencies=[Mutating])
async def pause(client: Prefect) -> Message:
    await control.set_paused(client, True)
    return Message(ok=True, message="queue paused: the running task finishes, nothing new starts")


@router.post("/resume", response_model=Message, dependencies=[Mutating])
async def resume(client: Prefect) -> Message:
    await control.set_paused(client, False)
    return Message(ok=True, message="queue resumed")
