"""User actions on the queue: cancel, retry, remove, pause, resume, start, stop. Each checks
what the task's status allows, then makes one Prefect change through the gateway; the manager
does the rest on its next look."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from prefect.client.orchestration import PrefectClient
from sqlalchemy import Engine

from biasbench.db.engine import session_scope
from biasbench.errors import NotAllowedNow
from biasbench.queue import gateway, removals
from biasbench.queue.attempt import USER_CANCEL
from biasbench.queue.model import (
    HELD_QUEUED,
    HELD_WAITING,
    REMOVABLE,
    RETRYABLE,
    QueueRun,
)
from biasbench.results import forget_results


async def cancel(client: PrefectClient, run_id: str) -> QueueRun:
    """Held → Cancelled at once; running → its process is stopped by the worker, then
    Cancelled. Dependents follow (cancelled) through the manager."""
    run = await gateway.run_by_id(client, run_id)
    if run.is_final:
        raise NotAllowedNow(f"task {run_id} has already finished", field="status")
    await gateway.request_cancel(client, run, USER_CANCEL)
    return run


async def retry(
    client: PrefectClient, run_id: str, *, forget_results_in: Engine | None = None
) -> list[str]:
    """Queue a failed, cancelled, crashed or skipped task again, in its original place. It resumes
    its run (stored answers are kept, unless `forget_results_in` names the database to delete
    them from), and the dependents it took down wait for it again. Returns the ids put back."""
    run = await gateway.run_by_id(client, run_id)
    if run.status not in RETRYABLE:
        raise NotAllowedNow(
            f"task {run_id} is {run.status}; only failed, cancelled or skipped tasks can be "
            "retried",
            field="status",
        )
    if forget_results_in is not None:
        with session_scope(forget_results_in) as session:
            forget_results(session, run_id)
    await gateway.requeue(client, run, HELD_QUEUED)
    requeued = [run_id]
    frontier = [run_id]
    while frontier:  # level by level: the dependents of this level's tasks, read at once
        # Only the runs a cascade from these tasks took down, not ones a user cancelled.
        taken_down = {
            r.id: r for r in await gateway.runs_ended_by(client, frontier) if r.id not in requeued
        }
        await gateway.requeue_all(client, list(taken_down.values()), HELD_WAITING)
        frontier = list(taken_down)
        requeued += frontier
    return requeued


async def remove(client: PrefectClient, run_id: str, *, dependents_not_created: int = 0) -> None:
    """Delete a task that has not started, unless another task waits for it (also one whose
    run the caller has not created yet: `dependents_not_created`)."""
    removal = (
        removals.Removal(removed=False, dependents=dependents_not_created)
        if dependents_not_created
        else await removals.remove(client, run_id)
    )
    if removal.removed:
        return
    run = await gateway.run_by_id(client, run_id)  # gone: NotFound
    if run.status not in REMOVABLE:
        raise NotAllowedNow(
            f"task {run_id} is {run.status}: only queued or waiting tasks can be removed; "
            "cancel it instead",
            field="status",
        )
    if removal.dependents:
        raise NotAllowedNow(
            f"task {run_id} has {removal.dependents} waiting dependent(s); "
            "remove or cancel them first"
        )
    raise NotAllowedNow(f"task {run_id} changed while it was being removed; try again")


async def set_paused(client: PrefectClient, paused: bool) -> None:
    """Pause: the running task finishes, nothing new starts (enforced by the server for every
    submission route). Resume: the queue goes on in order."""
    await gateway.set_pool_paused(client, paused)


@dataclass(frozen=True)
class QueueState:
    """What the queue is doing, read from Prefect (never from a copy of our own)."""

    executor_running: bool  # a queue-manager flow run is running
    executor_paused: bool  # the GPU work pool is paused: nothing new starts
    slots: int  # tasks that may run at once (the GPU pool's concurrency limit)
    gpu_workers_alive: int  # GPU workers with recent heartbeats: with none, nothing starts


async def queue_state(client: PrefectClient) -> QueueState:
    pool, running, workers = await asyncio.gather(
        gateway.read_pool(client),
        gateway.manager_running(client),
        gateway.gpu_workers_alive(client),
    )
    return QueueState(
        executor_running=running,
        executor_paused=pool.paused,
        slots=pool.slots,
        gpu_workers_alive=workers,
    )


async def stop() -> None:
    """The running task finishes, nothing new starts, then the manager ends. Queued tasks stay
    queued for the next start."""
    await gateway.request_stop()


async def start(client: PrefectClient, *, after_reboot: bool = False) -> str | None:
    """Start the queue manager (its worker runs it) unless one is active, and cancel a pending
    stop. Returns the new manager run's id, or None when one was already active."""
    await gateway.clear_stop()
    return await gateway.start_manager(client, after_reboot=after_reboot)
