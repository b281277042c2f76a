"""User actions on the queue: cancel, retry, pause, resume. Each is one Prefect state change
(or a work-pool flag); the manager does the rest on its next look."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import WorkPoolUpdate
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import StateType
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.states import Cancelling, Crashed
from prefect.variables import Variable

from biasbench.errors import InvalidSubmission, QueueError, UnknownTask
from biasbench.queue.gateway import held_state
from biasbench.queue.model import (
    GPU_POOL,
    HELD_QUEUED,
    HELD_WAITING,
    MANAGER_DEPLOYMENT,
    MANAGER_FLOW,
    QUEUE_TAG,
    QueueStatus,
    queue_status,
)

MANAGER_ACTIVE = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING]
RETRYABLE = {QueueStatus.FAILED, QueueStatus.CANCELLED, QueueStatus.SKIPPED}


async def _status(client: PrefectClient, run_id: str) -> QueueStatus:
    try:
        flow_run = await client.read_flow_run(UUID(run_id))
    except (ObjectNotFound, ValueError):
        raise UnknownTask(f"task {run_id} does not exist") from None
    if QUEUE_TAG not in flow_run.tags or flow_run.state is None:
        raise UnknownTask(f"task {run_id} is not a queue task")
    return queue_status(flow_run.state.type.value, flow_run.state.name)


async def cancel(client: PrefectClient, run_id: str) -> None:
    """Held → Cancelled at once; running → its process is stopped by the worker, then
    Cancelled. Dependents follow (cancelled) through the manager."""
    if (await _status(client, run_id)) in {
        QueueStatus.DONE,
        QueueStatus.FAILED,
        QueueStatus.CANCELLED,
        QueueStatus.SKIPPED,
    }:
        raise InvalidSubmission("status", f"task {run_id} has already finished")
    await client.set_flow_run_state(UUID(run_id), Cancelling(message="cancelled by a user"))


async def retry(client: PrefectClient, run_id: str) -> list[str]:
    """Queue a failed, cancelled, crashed or skipped task again, in its original place. It resumes
    its run (stored answers are kept), and the dependents it took down wait for it again.
    Returns the ids put back in the queue."""
    if (status := await _status(client, run_id)) not in RETRYABLE:
        raise InvalidSubmission(
            "status", f"task {run_id} is {status}; only finished, unsuccessful tasks can be retried"
        )
    requeued = [run_id]
    await client.set_flow_run_state(UUID(run_id), held_state(HELD_QUEUED), force=True)
    ended = await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=[QUEUE_TAG]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CANCELLED])),
        )
    )
    frontier = [run_id]
    while frontier:
        upstream = frontier.pop()
        for run in ended:
            # only the dependents this task took down, not ones a user cancelled on purpose
            took_down = run.state is not None and upstream[:8] in (run.state.message or "")
            if (
                took_down
                and upstream in (run.parameters.get("upstream") or [])
                and str(run.id) not in requeued
            ):
                requeued.append(str(run.id))
                frontier.append(str(run.id))
                await client.set_flow_run_state(run.id, held_state(HELD_WAITING), force=True)
    return requeued


async def set_paused(client: PrefectClient, paused: bool) -> None:
    """Pause: the running task finishes, nothing new starts (enforced by the server for every
    submission route). Resume: the queue goes on in order."""
    await client.update_work_pool(GPU_POOL, WorkPoolUpdate(is_paused=paused))


@dataclass(frozen=True)
class QueueState:
    """What the queue is doing, read from Prefect (never from a copy of our own)."""

    executor_running: bool  # a queue-manager flow run is running
    executor_paused: bool  # the GPU work pool is paused: nothing new starts
    slots: int  # tasks that may run at once (the GPU pool's concurrency limit)


async def queue_state(client: PrefectClient) -> QueueState:
    pool, running = await asyncio.gather(
        client.read_work_pool(GPU_POOL),
        client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[MANAGER_FLOW])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
            ),
            limit=1,
        ),
    )
    return QueueState(
        executor_running=bool(running),
        executor_paused=bool(pool.is_paused),
        slots=pool.concurrency_limit or 1,
    )


STOP_VARIABLE = "biasbench-queue-stop"  # set: the manager ends once no task holds a slot


async def stop() -> None:
    """The running task finishes, nothing new starts, then the manager ends. Queued tasks stay
    queued for the next start."""
    for _ in range(3):
        try:
            await Variable.aset(STOP_VARIABLE, True, overwrite=True)
            return
        except ObjectNotFound:  # a manager that just stopped removed it between read and write
            continue
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code != 404:
                raise
    raise QueueError("could not record the stop request; try again")


async def clear_stop() -> None:
    await Variable.aunset(STOP_VARIABLE)


async def stop_requested() -> bool:
    return bool(await Variable.aget(STOP_VARIABLE, default=False))


async def start(client: PrefectClient, *, after_reboot: bool = False) -> str | None:
    """Start the queue manager (its worker runs it) unless one is active, and cancel a pending
    stop. Returns the new manager run's id, or None when one was already active.

    after_reboot: the caller knows no manager process survives (the stack has just started), so
    managers still marked active are stale: they are marked Crashed, so that the deployment's
    concurrency slot does not block the new one."""
    await Variable.aunset(STOP_VARIABLE)
    deployment = await client.read_deployment_by_name(MANAGER_DEPLOYMENT)
    active = await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=MANAGER_ACTIVE)),
        )
    )
    if active and not after_reboot:
        return None
    for run in active:
        await client.set_flow_run_state(
            run.id, Crashed(message="the stack was restarted"), force=True
        )
    return str((await client.create_flow_run_from_deployment(deployment.id)).id)
