"""Every Prefect API call of the queue: read a snapshot, apply decisions, submit tasks.

Prefect is the only record of a task's lifecycle; this module reads and writes states, never a
copy of them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.states import Cancelled, Paused, Scheduled

from biasbench.queue.decide import Action, Cancel, Relabel, Release, Skip
from biasbench.queue.model import (
    DEPLOYMENT_NAME,
    HELD_QUEUED,
    QUEUE_TAG,
    RELEASED,
    RELEASING,
    SKIPPED,
    TASK_TYPES,
    QueueRun,
    TaskType,
)

UNFINISHED = [
    StateType.PAUSED,
    StateType.SCHEDULED,
    StateType.PENDING,
    StateType.RUNNING,
    StateType.CANCELLING,
]
PAGE = 200


async def read_all_runs(client: PrefectClient, flow_run_filter: FlowRunFilter) -> list[FlowRun]:
    runs: list[FlowRun] = []
    while True:
        page = await client.read_flow_runs(
            flow_run_filter=flow_run_filter,
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            limit=PAGE,
            offset=len(runs),
        )
        runs.extend(page)
        if len(page) < PAGE:
            return runs


class FlowNames:
    """flow id -> task type, cached: flows never change their name."""

    def __init__(self) -> None:
        self._names: dict[UUID, str] = {}

    async def task_type(self, client: PrefectClient, flow_id: UUID) -> TaskType | None:
        if flow_id not in self._names:
            self._names[flow_id] = (await client.read_flow(flow_id)).name
        name = self._names[flow_id]
        return name if name in TASK_TYPES else None


def as_queue_run(flow_run: FlowRun, task_type: TaskType) -> QueueRun:
    parameters = dict(flow_run.parameters)
    upstream = parameters.get("upstream") or []
    state = flow_run.state
    return QueueRun(
        id=str(flow_run.id),
        name=flow_run.name,
        task_type=task_type,
        state_type=state.type.value if state else "SCHEDULED",
        state_name=state.name if state else None,
        created=_joined_queue_at(flow_run),
        priority=int(parameters.get("priority") or 0),
        upstream=tuple(str(u) for u in upstream),
        parameters=parameters,
    )


def _joined_queue_at(flow_run: FlowRun) -> datetime:
    """A run joins the queue when it was created, or, if it was scheduled for later (a
    deployment schedule creates runs ahead of time), when it was meant to start."""
    times = [t for t in (flow_run.created, flow_run.expected_start_time) if t is not None]
    return max(times)


async def read_queue(client: PrefectClient, names: FlowNames) -> dict[str, QueueRun]:
    """Every unfinished task run, plus the (possibly finished) upstreams they name."""
    unfinished = await read_all_runs(
        client,
        FlowRunFilter(
            tags=FlowRunFilterTags(all_=[QUEUE_TAG]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=UNFINISHED)),
        ),
    )
    runs = await _to_queue_runs(client, names, unfinished)
    missing = {u for r in runs.values() for u in r.upstream if u not in runs}
    ids = [UUID(u) for u in missing if _is_uuid(u)]
    if ids:
        upstreams = await read_all_runs(client, FlowRunFilter(id=FlowRunFilterId(any_=ids)))
        runs.update(await _to_queue_runs(client, names, upstreams))
    return runs


async def _to_queue_runs(
    client: PrefectClient, names: FlowNames, flow_runs: Iterable[FlowRun]
) -> dict[str, QueueRun]:
    runs: dict[str, QueueRun] = {}
    for flow_run in flow_runs:
        task_type = await names.task_type(client, flow_run.flow_id)
        if task_type is not None:
            runs[str(flow_run.id)] = as_queue_run(flow_run, task_type)
    return runs


def _is_uuid(value: str) -> bool:
    try:
        UUID(value)
    except ValueError:
        return False
    return True


async def apply(
    client: PrefectClient, runs: Mapping[str, QueueRun], actions: Sequence[Action]
) -> None:
    """Carry out the decisions. A state the server refuses (the user cancelled the run a moment
    ago) is simply not applied: the next snapshot shows the truth."""
    for action in actions:
        run_id = UUID(action.run_id)
        match action:
            case Release(parameters=parameters):
                # Prefect replaces the whole parameter dict: `parameters` is already merged.
                await client.update_flow_run(run_id, parameters=parameters)
                # Via a blocking pause: leaving a *rescheduling* pause marks the run as
                # "resuming", which keeps its run count at 0, and Prefect then retries a
                # failure once more than it should. Leaving a blocking pause for Scheduled
                # starts a fresh attempt (Prefect's core_policy says so).
                await client.set_flow_run_state(
                    run_id, Paused(name=RELEASING, reschedule=False), force=True
                )
                await client.set_flow_run_state(
                    run_id, Scheduled(name=RELEASED, scheduled_time=runs[action.run_id].created)
                )
            case Skip(reason=reason):
                await client.set_flow_run_state(
                    run_id, Cancelled(name=SKIPPED, message=reason), force=True
                )
            case Cancel(reason=reason):
                await client.set_flow_run_state(run_id, Cancelled(message=reason), force=True)
            case Relabel(name=name):
                await client.set_flow_run_state(run_id, held_state(name), force=True)


def held_state(name: str = HELD_QUEUED) -> Any:
    """PAUSED with reschedule: no worker picks it, the UI lists it (with its creation time) and
    can cancel it, and releasing it to Scheduled(created) keeps its place in line."""
    return Paused(name=name, reschedule=True)


def deployment_name(task_type: TaskType) -> str:
    return f"{task_type}/{DEPLOYMENT_NAME}"
