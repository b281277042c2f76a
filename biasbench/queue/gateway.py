"""Every Prefect API call the queue makes: the manager, the controls, submission, the turn guard
and the /queue shim read and write task runs only through here, as `QueueRun`s.

Prefect is the only record of a task's lifecycle; this module reads and writes states, never a
copy of them. Reads page through every matching run: the server returns at most 200 per call."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import DeploymentFlowRunCreate, WorkPoolUpdate
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterType,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterEndTime,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateName,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, State, StateType, WorkerStatus
from prefect.client.schemas.responses import OrchestrationResult, SetStateStatus
from prefect.client.schemas.sorting import FlowRunSort
from prefect.events import Event
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.states import (
    Cancelled,
    Cancelling,
    Crashed,
    Failed,
    Paused,
    Scheduled,
    to_state_create,
)
from prefect.variables import Variable

from biasbench.errors import CRASHED, NotFound, QueueBusy, QueueError
from biasbench.llm.model_host import HOST_VARIABLE_PREFIX
from biasbench.queue.attempt import StateRecord
from biasbench.queue.collisions import collision_pauses
from biasbench.queue.decide import Action, Cancel, Relabel, Release, Requeue, Skip
from biasbench.queue.gpus import Gpu, machine_slug, parse_worker_name, retagged
from biasbench.queue.model import (
    DEPLOYMENT_NAME,
    ENDED_BY_TAG,
    EXECUTING_TYPES,
    FINAL_TYPES,
    GPU_POOL,
    HELD_QUEUED,
    HELD_WAITING,
    MANAGER_ACTIVE_TYPES,
    MANAGER_DEPLOYMENT,
    MANAGER_FLOW,
    QUEUE_TAG,
    RELEASED,
    RELEASING,
    SKIPPED,
    STALLED,
    STOP_VARIABLE,
    UNFINISHED_TYPES,
    QueueRun,
    QueueStatus,
    TaskType,
    queue_status,
)

PAGE = 200  # the most runs the Prefect server returns per read
BULK_STATE_LIMIT = 50  # runs per call of Prefect's /flow_runs/bulk_set_state (its limit)
ENDED_BY_READ = 100  # upstreams per read of the runs they took down: a filter of bounded size
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # before any run of this queue


# --- reading task runs ----------------------------------------------------------------------


def _types(values: Iterable[str]) -> list[StateType]:
    return [StateType(v) for v in sorted(values)]


def _task_filter(state_types: Iterable[str] | None = None, **more: Any) -> FlowRunFilter:
    """The queue's runs (every task run carries the tag), optionally of these state types."""
    if state_types is not None:
        more["state"] = FlowRunFilterState(type=FlowRunFilterStateType(any_=_types(state_types)))
    return FlowRunFilter(tags=FlowRunFilterTags(all_=[QUEUE_TAG]), **more)


async def _read_all(
    client: PrefectClient,
    flow_run_filter: FlowRunFilter,
    *,
    sort: FlowRunSort = FlowRunSort.EXPECTED_START_TIME_ASC,
    limit: int | None = None,
    **filters: Any,
) -> list[FlowRun]:
    """Every matching run (or the first `limit`), page by page. A run that moves between pages
    while we read is kept once."""
    runs: dict[UUID, FlowRun] = {}
    offset = 0
    while limit is None or len(runs) < limit:
        page = await client.read_flow_runs(
            flow_run_filter=flow_run_filter,
            sort=sort,
            limit=PAGE if limit is None else min(PAGE, limit - len(runs)),
            offset=offset,
            **filters,
        )
        offset += len(page)
        runs.update((r.id, r) for r in page)
        if len(page) < PAGE:
            break
    return list(runs.values())


_flow_names: dict[UUID, str] = {}  # flow id -> name: flows never change their name


async def _task_type(client: PrefectClient, flow_id: UUID) -> TaskType | None:
    if flow_id not in _flow_names:
        _flow_names[flow_id] = (await client.read_flow(flow_id)).name
    try:
        return TaskType(_flow_names[flow_id])
    except ValueError:  # not a task flow (e.g. the manager)
        return None


def as_queue_run(flow_run: FlowRun, task_type: TaskType) -> QueueRun:
    parameters = dict(flow_run.parameters)
    state = flow_run.state
    ended_by = [t.removeprefix(ENDED_BY_TAG) for t in flow_run.tags if t.startswith(ENDED_BY_TAG)]
    run_time = flow_run.total_run_time or None
    if run_time is None and flow_run.start_time and flow_run.end_time:
        run_time = flow_run.end_time - flow_run.start_time
    final = state is not None and state.type.value in FINAL_TYPES
    return QueueRun(
        id=str(flow_run.id),
        name=flow_run.name,
        task_type=task_type,
        state_type=state.type.value if state else "SCHEDULED",
        state_name=state.name if state else None,
        created=_joined_queue_at(flow_run),
        priority=int(parameters.get("priority") or 0),
        upstream=tuple(str(u) for u in parameters.get("upstream") or ()),
        parameters=parameters,
        state_message=state.message if state else None,
        state_since=state.timestamp if state else None,
        state_id=str(state.id) if state else None,
        ended_by=ended_by[0] if ended_by else None,
        tags=tuple(flow_run.tags),
        submitted_at=flow_run.created,
        started_at=flow_run.start_time,
        ended_at=flow_run.end_time if final else None,
        run_time=run_time,
    )


def _joined_queue_at(flow_run: FlowRun) -> datetime:
    """A run joins the queue when it was created, or, if it was scheduled for later (a
    deployment schedule creates runs ahead of time), when it was meant to start."""
    times = [t for t in (flow_run.created, flow_run.expected_start_time) if t is not None]
    return max(times)


async def _as_queue_runs(client: PrefectClient, flow_runs: Iterable[FlowRun]) -> list[QueueRun]:
    runs = []
    for flow_run in flow_runs:
        if (task_type := await _task_type(client, flow_run.flow_id)) is not None:
            runs.append(as_queue_run(flow_run, task_type))
    return runs


async def unfinished_runs(client: PrefectClient) -> list[QueueRun]:
    """Every unfinished task: few, however long the history is."""
    return await _as_queue_runs(client, await _read_all(client, _task_filter(UNFINISHED_TYPES)))


async def waiting_runs(client: PrefectClient) -> list[QueueRun]:
    """Tasks held until their upstream tasks complete: the only ones that can depend on a task
    that has not started (submission and every requeue hold a dependent as Waiting; the manager
    relabels it Queued only once its upstream tasks are done)."""
    held = FlowRunFilterState(
        type=FlowRunFilterStateType(any_=[StateType.PAUSED]),
        name=FlowRunFilterStateName(any_=[HELD_WAITING]),
    )
    return await _as_queue_runs(client, await _read_all(client, _task_filter(state=held)))


async def runs_by_id(client: PrefectClient, run_ids: Iterable[str]) -> dict[str, QueueRun]:
    """The task runs with these ids that exist (ids that are not even UUIDs do not)."""
    ids = [UUID(i) for i in set(run_ids) if _is_uuid(i)]
    if not ids:
        return {}
    flow_runs = await _read_all(client, _task_filter(id=FlowRunFilterId(any_=ids)))
    return {r.id: r for r in await _as_queue_runs(client, flow_runs)}


async def run_by_id(client: PrefectClient, run_id: str) -> QueueRun:
    if (run := (await runs_by_id(client, [run_id])).get(run_id)) is None:
        raise NotFound("task", f"task {run_id} does not exist")
    return run


async def read_queue(client: PrefectClient) -> dict[str, QueueRun]:
    """The manager's snapshot: every unfinished task run, the crashed ones it has still to
    judge (they hold their slot, and the queue is not drained while they wait), plus the
    (possibly finished) upstreams they name."""
    runs = {r.id: r for r in [*await unfinished_runs(client), *await crashed_runs(client)]}
    missing = {u for r in runs.values() for u in r.upstream if u not in runs}
    runs.update(await runs_by_id(client, missing))
    return runs


async def model_hosts(client: PrefectClient) -> dict[str, dict[str, Any]]:
    """What each GPU's model host published (deployments/model_host.py): its loaded model and
    servers, by variable name (`model-host-<machine>-<slot>`)."""
    variables = await client.read_variables()
    return {
        v.name: v.value
        for v in variables
        if v.name.startswith(HOST_VARIABLE_PREFIX) and isinstance(v.value, dict)
    }


async def model_loads(client: PrefectClient) -> dict[str, dict[str, Any]]:
    """The hosts' latest model loads (start, wake, reuse) by the flow run they were for."""
    return {
        str(load["task"]): load
        for host in (await model_hosts(client)).values()
        for load in host.get("loads", [])
        if isinstance(load, dict) and load.get("task")
    }


async def newest_finished_runs(client: PrefectClient, limit: int) -> list[QueueRun]:
    """The finished runs that joined the queue last (a run's first state, its submission, sets
    its expected start time; releases keep it), as the /queue listing shows them."""
    if limit <= 0:
        return []
    flow_runs = await _read_all(
        client, _task_filter(FINAL_TYPES), sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=limit
    )
    return await _as_queue_runs(client, flow_runs)


async def finished_since(client: PrefectClient, since: datetime) -> list[QueueRun]:
    """Task runs that ended after `since`."""
    flow_runs = await _read_all(
        client,
        _task_filter(FINAL_TYPES, end_time=FlowRunFilterEndTime(after_=since)),
        sort=FlowRunSort.END_TIME_DESC,
    )
    return await _as_queue_runs(client, flow_runs)


async def runs_ended_by(client: PrefectClient, upstream_ids: Sequence[str]) -> list[QueueRun]:
    """Runs that a cascade from any of these upstreams skipped or cancelled, and that are still
    so: one read per ENDED_BY_READ upstreams, not one per upstream (a retry of a task with 205
    dependents read 206 times)."""
    found: list[FlowRun] = []
    for start in range(0, len(upstream_ids), ENDED_BY_READ):
        ended_by = [ENDED_BY_TAG + u for u in upstream_ids[start : start + ENDED_BY_READ]]
        found += await _read_all(
            client,
            FlowRunFilter(
                tags=FlowRunFilterTags(all_=[QUEUE_TAG], any_=ended_by),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CANCELLED])),
            ),
        )
    return await _as_queue_runs(client, found)


async def crashed_runs(client: PrefectClient) -> list[QueueRun]:
    """Task runs in Prefect's CRASHED state: crashes the manager has not judged yet (it requeues
    them or fails them for good, which leaves that state)."""
    return await _as_queue_runs(client, await _read_all(client, _task_filter({"CRASHED"})))


async def crash_count(client: PrefectClient, run_id: str) -> int:
    """How often the run's process died, from its state history: a Crashed state that follows
    an executing one. (The worker may report one death twice, the second after the manager
    has requeued the run; that one follows a held state and is not counted.)"""
    states = sorted(await client.read_flow_run_states(UUID(run_id)), key=lambda s: s.timestamp)
    return sum(
        1
        for before, after in itertools.pairwise(states)
        if after.type == StateType.CRASHED and before.type.value in EXECUTING_TYPES
    )


async def fail_crashed(client: PrefectClient, run: QueueRun, message: str) -> None:
    """A crash judged final: Failed("Crashed"), which the queue no longer revisits."""
    await client.set_flow_run_state(
        UUID(run.id), Failed(name=CRASHED.name, message=message), force=True
    )


async def state_history(client: PrefectClient, run_id: str) -> list[StateRecord]:
    states = await client.read_flow_run_states(UUID(run_id))
    return [StateRecord(s.type.value, s.name, s.message, s.timestamp) for s in states]


async def count_by_status(client: PrefectClient) -> dict[QueueStatus, int]:
    """Tasks per status, counted by the Prefect server in one call: its run history, as one
    interval spanning every run, grouped by state type and name (no run is transferred)."""
    end = datetime.now(UTC) + timedelta(days=36_500)  # schedules may lie in the future
    response = await client.request(
        "POST",
        "/flow_runs/history",
        json={
            "history_start": _EPOCH.isoformat(),
            "history_end": end.isoformat(),
            "history_interval_seconds": (end - _EPOCH).total_seconds(),
            "flow_runs": _task_filter().model_dump(mode="json", exclude_unset=True),
        },
    )
    counts = dict.fromkeys(QueueStatus, 0)
    for interval in response.json():
        for state in interval["states"]:
            counts[queue_status(state["state_type"], state["state_name"])] += state["count_runs"]
    return counts


async def count_scheduled_later(client: PrefectClient, now: datetime) -> int:
    """Task runs a deployment schedule (or `--start-in`) made for a time still to come: counted
    apart from the queue's work (`QueueRun.is_scheduled_later`)."""
    return await client.count_flow_runs(
        flow_run_filter=_task_filter(
            state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]),
                name=FlowRunFilterStateName(not_any_=[RELEASED]),
            ),
            expected_start_time=FlowRunFilterExpectedStartTime(after_=now),
        )
    )


async def last_progress(client: PrefectClient, run_id: str) -> datetime | None:
    """When a running task last showed progress: its progress artifact's last update, or when
    it entered Running. None when it is not running."""
    flow_run = await client.read_flow_run(UUID(run_id))
    if flow_run.state is None or flow_run.state.type != StateType.RUNNING:
        return None
    artifacts = await client.read_artifacts(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(run_id)])),
        artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"])),
    )
    return max([flow_run.state.timestamp, *(a.updated for a in artifacts if a.updated)])


async def released_by_manager(client: PrefectClient, run_id: str) -> bool:
    """Whether the run's latest Scheduled state is the manager's release (the turn guard asks
    this from inside the run)."""
    states = await client.read_flow_run_states(UUID(run_id))
    scheduled = [s for s in states if s.type == StateType.SCHEDULED]
    return bool(scheduled) and max(scheduled, key=lambda s: s.timestamp).name == RELEASED


def _is_uuid(value: str) -> bool:
    try:
        UUID(value)
    except ValueError:
        return False
    return True


# --- changing task runs ---------------------------------------------------------------------


def deployment_name(task_type: TaskType | str) -> str:
    return f"{task_type}/{DEPLOYMENT_NAME}"


def held_state(name: str = HELD_QUEUED) -> State[Any]:
    """PAUSED with reschedule: no worker picks it, the UI lists it (with its creation time) and
    can cancel it, and releasing it to Scheduled(created) keeps its place in line."""
    return Paused(name=name, reschedule=True)


@dataclass(frozen=True)
class TaskDeployment:
    id: UUID
    parameter_schema: dict[str, Any]  # what a submission's config is checked against


# A task type's deployment is read at most this often per server, and adds that find it stale
# at the same time share one read: 50 clients adding at once would otherwise send the same 50
# reads to a server busy creating runs (with a 5 s cache alone, a burst after a pause still
# did: the deployment reads were 17 % of the API's time, perf/README.md run F).
DEPLOYMENT_FRESH_SECONDS = 5.0
_deployments: dict[tuple[str, TaskType], tuple[float, TaskDeployment]] = {}
_deployment_reads: dict[tuple[str, TaskType], asyncio.Future[TaskDeployment]] = {}


async def task_deployment(client: PrefectClient, task_type: TaskType) -> TaskDeployment:
    key = (str(client.api_url), task_type)
    if (known := _deployments.get(key)) and time.monotonic() - known[0] < DEPLOYMENT_FRESH_SECONDS:
        return known[1]
    reading = _deployment_reads.get(key)
    # A future belongs to its event loop (another loop's, e.g. of an earlier asyncio.run, is
    # not shared).
    if reading is None or reading.done() or reading.get_loop() is not asyncio.get_running_loop():
        reading = asyncio.ensure_future(_read_deployment(client, task_type, key))
        _deployment_reads[key] = reading
    # Shielded: one waiting request given up (a client gone) does not fail the others' read.
    return await asyncio.shield(reading)


async def _read_deployment(
    client: PrefectClient, task_type: TaskType, key: tuple[str, TaskType]
) -> TaskDeployment:
    try:
        deployment = await client.read_deployment_by_name(deployment_name(task_type))
    except ObjectNotFound as exc:
        _deployments.pop(key, None)
        raise QueueError(
            f"deployment {deployment_name(task_type)} does not exist: "
            "run `python -m deployments setup`"
        ) from exc
    found = TaskDeployment(deployment.id, deployment.parameter_openapi_schema or {})
    _deployments[key] = (time.monotonic(), found)
    return found


async def create_held_run(
    client: PrefectClient,
    deployment: TaskDeployment,
    parameters: dict[str, Any],
    *,
    label: str | None,
    held_as: str,
    tags: Sequence[str] = (),
) -> str:
    """Create one run held in the queue; its flow-run id. The way the API's adds go
    (`create_held_runs`): a create that collides with the server's own writes is made again
    after a short pause, where the Prefect client alone would give up after its retries (a
    submission failed so on a loaded machine), and its idempotency key makes a create whose
    answer was lost count once."""
    run = HeldRun(parameters, label, held_as, tags, idempotency_key=f"submit-{uuid4()}")
    (outcome,) = await create_held_runs(client, deployment, [run])
    if isinstance(outcome, QueueError):
        raise outcome
    return outcome


_log = logging.getLogger(__name__)

BULK_CREATE_LIMIT = 100  # the most runs Prefect's bulk route creates in one call


@dataclass(frozen=True)
class HeldRun:
    """A run to create held in the queue (as `create_held_run` takes it)."""

    parameters: dict[str, Any]
    label: str | None
    held_as: str
    tags: Sequence[str] = ()
    # Prefect's own: a create sent again with the same key returns the run the first one made
    # (a unique index on the server), so a create whose answer was lost cannot make two runs.
    idempotency_key: str | None = None


# How long to keep creating again what a bulk call could not (biasbench/queue/collisions.py): a
# burst of adds collides several times in a row with the server's own writes.
BULK_RETRY_SECONDS = 20.0
BULK_SMALLEST_CALL = 5  # runs: what a call shrinks to at most while creates collide


async def create_held_runs(
    client: PrefectClient, deployment: TaskDeployment, runs: Sequence[HeldRun]
) -> list[str | QueueError]:
    """Create up to BULK_CREATE_LIMIT runs of one deployment, in order, in as few calls (one
    transaction each on the server) as the server's load allows; each item is its flow-run id,
    or why it was not created.

    Prefect's bulk route reports each item, and on SQLite an item can fail with "database is
    locked", which rolls the whole transaction back: the items it reported CREATED before then
    do not exist. So after any failure the reported ids are checked, and whatever does not
    exist is created again after a short pause, in calls half as large: a shorter transaction
    is less likely to meet one of the server's own writers (a cascade of hundreds of state
    changes refused 81 creates in one call for 20 s in a row, tests/queue_api/test_many_tasks)."""
    outcomes: list[str | QueueError] = [
        QueueBusy("Prefect's database stayed busy; the task was not created, try again")
    ] * len(runs)
    todo = list(range(len(runs)))
    size = len(todo)
    pauses = collision_pauses(BULK_RETRY_SECONDS)
    for attempt in itertools.count(1):
        call = todo[:size]  # the earliest first: runs are created in the order given
        results = await _bulk_create(client, deployment, [runs[i] for i in call])
        made = {
            i: r["flow_run_id"]
            for i, r in zip(call, results, strict=True)
            if r["status"] == "CREATED"
        }
        collided = len(made) < len(call)
        if collided:  # a failure may have rolled back what was reported made
            exist = await runs_by_id(client, made.values())
            made = {i: run_id for i, run_id in made.items() if run_id in exist}
        for i, run_id in made.items():
            outcomes[i] = str(run_id)
        todo = [i for i in todo if i not in made]
        if not todo:
            break
        if collided:
            if (pause := next(pauses, None)) is None:
                break
            _log.info(
                "bulk create, attempt %d: %d of %d runs not made", attempt, len(todo), len(runs)
            )
            size = max(BULK_SMALLEST_CALL, size // 2)
            await asyncio.sleep(pause)
    return outcomes


async def _bulk_create(
    client: PrefectClient, deployment: TaskDeployment, runs: Sequence[HeldRun]
) -> list[dict[str, Any]]:
    body = [
        DeploymentFlowRunCreate(
            parameters=run.parameters,
            state=to_state_create(held_state(run.held_as)),
            name=run.label,
            tags=[QUEUE_TAG, *run.tags],
            idempotency_key=run.idempotency_key,
        ).model_dump(mode="json", exclude_unset=True)
        for run in runs
    ]
    response = await client.request(
        "POST",
        "/deployments/{id}/create_flow_run/bulk",  # type: ignore[arg-type]
        path_params={"id": deployment.id},
        json=body,
    )
    results: list[dict[str, Any]] = response.json()["results"]
    return results


async def run_ids_tagged(client: PrefectClient, tag: str) -> list[str]:
    """The task runs that carry this tag (besides the queue's)."""
    flow_runs = await _read_all(
        client, FlowRunFilter(tags=FlowRunFilterTags(all_=[QUEUE_TAG, tag]))
    )
    return [str(r.id) for r in flow_runs]


async def apply(
    client: PrefectClient, runs: Mapping[str, QueueRun], actions: Sequence[Action]
) -> None:
    """Carry out the manager's decisions, each only on the state it was decided on: a run that
    moved on meanwhile (the user cancelled it) is left as it is, and the next look decides
    again from the truth."""
    for action in actions:
        run = runs[action.run_id]
        match action:
            case Release(parameters=parameters, gpu=gpu):
                # Via a blocking pause: leaving a *rescheduling* pause marks the run as
                # "resuming", which keeps its run count at 0, and Prefect then retries a
                # failure once more than it should. Leaving a blocking pause for Scheduled
                # starts a fresh attempt (Prefect's core_policy says so).
                releasing = await _write_unless_moved(
                    client, run.id, run.state_id, Paused(name=RELEASING, reschedule=False)
                )
                if releasing is None:
                    continue
                # Prefect replaces the whole parameter dict: `parameters` is already merged.
                # The GPU's tag goes in the same write: its worker takes the run once it is
                # Scheduled, the others leave it (deployments/gpu_worker.py).
                tags = retagged(run.tags, gpu)
                if tags != list(run.tags):
                    await client.update_flow_run(UUID(run.id), parameters=parameters, tags=tags)
                else:
                    await client.update_flow_run(UUID(run.id), parameters=parameters)
                released: State[Any] = Scheduled(name=RELEASED, scheduled_time=run.created)
                await _write_unless_moved(client, run.id, releasing, released)
            case Requeue(reason=reason):
                back: State[Any] = Paused(name=HELD_QUEUED, reschedule=True, message=reason)
                await _write_unless_moved(client, run.id, run.state_id, back)
            case Skip(reason=reason, upstream=upstream):
                skipped: State[Any] = Cancelled(name=SKIPPED, message=reason)
                if await _write_unless_moved(client, run.id, run.state_id, skipped):
                    await _mark_ended_by(client, run, upstream)
            case Cancel(reason=reason, upstream=upstream):
                cancelled: State[Any] = Cancelled(message=reason)
                if await _write_unless_moved(client, run.id, run.state_id, cancelled):
                    await _mark_ended_by(client, run, upstream)
            case Relabel(name=name):
                await _write_unless_moved(client, run.id, run.state_id, held_state(name))


async def _write_unless_moved(
    client: PrefectClient, run_id: str, decided_on: str | None, state: State
) -> str | None:
    """Write `state` (forced: the queue's own transitions are not in Prefect's policy) only if
    the run is still in the state `decided_on`. Prefect has no compare-and-set, so the check
    is made before and after: a state written by someone else between the two (a user's
    cancel) is put back on top, as it was. Returns the id of the state written, or None."""
    flow_run_id = UUID(run_id)
    current = (await client.read_flow_run(flow_run_id)).state
    if decided_on is not None and (current is None or str(current.id) != decided_on):
        return None
    written = await client.set_flow_run_state(flow_run_id, state, force=True)
    if written.state is None:
        return None
    history = sorted(await client.read_flow_run_states(flow_run_id), key=lambda s: s.timestamp)
    ids = [str(s.id) for s in history]
    mine = ids.index(str(written.state.id)) if str(written.state.id) in ids else -1
    before = history[mine - 1] if mine > 0 else None
    if decided_on is not None and before is not None and str(before.id) != decided_on:
        await client.set_flow_run_state(
            flow_run_id,
            State(type=before.type, name=before.name, message=before.message),
            force=True,
        )
        return None
    return str(written.state.id)


async def _mark_ended_by(client: PrefectClient, run: QueueRun, upstream: str | None) -> None:
    """Record which upstream's end takes this run down, as data a retry of it reads back."""
    tags = [t for t in run.tags if not t.startswith(ENDED_BY_TAG)]
    if upstream is not None:
        tags.append(ENDED_BY_TAG + upstream)
    if tags != list(run.tags):
        await client.update_flow_run(UUID(run.id), tags=tags)


async def requeue(client: PrefectClient, run: QueueRun, held_as: str) -> None:
    """Back into the queue in its original place (held; a retry resumes its run)."""
    await _mark_ended_by(client, run, None)
    await client.set_flow_run_state(UUID(run.id), held_state(held_as), force=True)


async def requeue_all(client: PrefectClient, runs: Sequence[QueueRun], held_as: str) -> None:
    """`requeue` for many runs: their marks cleared one by one, their states set in Prefect's
    bulk calls (a retry of 205 dependents made 410 calls one after another)."""
    for run in runs:
        await _mark_ended_by(client, run, None)
    state = to_state_create(held_state(held_as)).model_dump(mode="json", exclude_unset=True)
    for start in range(0, len(runs), BULK_STATE_LIMIT):
        ids = [r.id for r in runs[start : start + BULK_STATE_LIMIT]]
        only_these = FlowRunFilter(id=FlowRunFilterId(any_=[UUID(i) for i in ids]))
        response = await client.request(
            "POST",
            "/flow_runs/bulk_set_state",  # type: ignore[arg-type]
            json={
                "flow_runs": only_these.model_dump(mode="json", exclude_unset=True),
                "state": state,
                "force": True,
                "limit": len(ids),
            },
        )
        accepted = {
            r["flow_run_id"]
            for r in response.json()["results"]
            if r["status"] == SetStateStatus.ACCEPT.value
        }
        for run_id in ids:  # each run is its own transaction there: one may have been refused
            if run_id not in accepted:
                await client.set_flow_run_state(UUID(run_id), held_state(held_as), force=True)


async def request_cancel(client: PrefectClient, run: QueueRun, message: str) -> None:
    """Held or released (no process of this attempt yet) → Cancelled at once; executing → its
    worker stops the process, then Cancelled. Prefect itself ends a waiting run at once only
    if it never had a process: a released run that ran before (retried, requeued) would stay
    Cancelling, shown as running and holding its slot, until the watchdog."""
    if run.is_held or run.is_released:
        cancelled: State[Any] = Cancelled(message=message)
        if await _write_unless_moved(client, run.id, run.state_id, cancelled):
            return
    await client.set_flow_run_state(UUID(run.id), Cancelling(message=message))


async def delete_run(client: PrefectClient, run_id: str) -> None:
    await client.delete_flow_run(UUID(run_id))


async def stop_stalled(client: PrefectClient, run_id: str, reason: str) -> None:
    """Stop a stalled run's process through Prefect's cancellation (its worker kills it)."""
    await client.set_flow_run_state(UUID(run_id), Cancelling(message=reason), force=True)


async def fail_stalled(client: PrefectClient, run_id: str, reason: str) -> bool:
    """Once a stalled run's process is gone, record it as Failed("Stalled"). Returns False while
    it is still being stopped."""
    state = (await client.read_flow_run(UUID(run_id))).state
    if state is None or not state.is_final():
        return False
    if state.type == StateType.CANCELLED:
        await client.set_flow_run_state(
            UUID(run_id), Failed(name=STALLED, message=reason), force=True
        )
    return True


# --- the queue as a whole: pool, manager, stop request ---------------------------------------


@dataclass(frozen=True)
class PoolState:
    paused: bool  # nothing new starts, whatever route submitted it
    slots: int  # tasks that may run at once (the GPU pool's concurrency limit)


async def read_pool(client: PrefectClient) -> PoolState:
    """The GPU pool's pause and slots; before `setup` made the pool, a queue that is not paused
    (with nothing in it: the views still answer on a server set up later)."""
    try:
        pool = await client.read_work_pool(GPU_POOL)
    except ObjectNotFound:
        return PoolState(paused=False, slots=1)
    return PoolState(paused=bool(pool.is_paused), slots=pool.concurrency_limit or 1)


async def gpu_workers_alive(client: PrefectClient) -> int:
    """GPU workers whose heartbeats the server still receives (it marks a silent one OFFLINE)."""
    workers = await client.read_workers_for_work_pool(GPU_POOL)
    return sum(1 for w in workers if w.status == WorkerStatus.ONLINE)


GPU_FRESH = timedelta(seconds=30)  # a per-GPU worker heard from within this is alive
GPU_FORGET = timedelta(minutes=10)  # one silent for longer is not a GPU of the pool any more


async def read_gpus(
    client: PrefectClient, now: datetime | None = None, pool: str = GPU_POOL
) -> list[Gpu]:
    """The GPUs of the pool when each has a worker of its own (`gpu-<slot>@<host>`, see
    biasbench.queue.gpus), with the model their host of the same machine and slot has loaded;
    empty when a plain worker serves the pool (it takes every run, so releases name no GPU)
    or when no per-GPU worker is alive.
    Alive is judged from the worker's last heartbeat: Prefect shows a dead worker ONLINE for a
    while (prefect-notes §12)."""
    now = now or datetime.now(UTC)
    workers = await client.read_workers_for_work_pool(pool)
    recent = [
        w for w in workers if w.last_heartbeat_time and now - w.last_heartbeat_time <= GPU_FORGET
    ]
    fresh = {w.name for w in recent if now - w.last_heartbeat_time <= GPU_FRESH}  # type: ignore[operator]
    if not any(parse_worker_name(name) for name in fresh) or any(
        parse_worker_name(name) is None for name in fresh
    ):
        # No per-GPU worker alive (releases wait for whichever worker comes back: the same
        # names take their runs), or a plain worker serves the pool.
        return []
    hosts = await model_hosts(client) if recent else {}
    gpus = []
    for worker in recent:
        if (parsed := parse_worker_name(worker.name)) is None:
            continue
        slot, host = parsed
        published = hosts.get(f"{HOST_VARIABLE_PREFIX}{machine_slug(host)}-{slot}") or {}
        model = published.get("model")
        gpus.append(Gpu(worker.name, worker.name in fresh, str(model) if model else None))
    return sorted(gpus, key=lambda g: g.worker)


async def set_pool_paused(client: PrefectClient, paused: bool) -> None:
    await client.update_work_pool(GPU_POOL, WorkPoolUpdate(is_paused=paused))


async def manager_running(client: PrefectClient) -> bool:
    running = await client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=[MANAGER_FLOW])),
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
        ),
        limit=1,
    )
    return bool(running)


async def start_manager(client: PrefectClient, *, after_reboot: bool) -> str | None:
    """Create a queue-manager run (its worker starts it) unless one is active. Returns the new
    run's id, or None when one was already active.

    after_reboot: the caller knows no manager process survives (the stack has just started), so
    managers still marked active are stale: they are marked Cancelled (not Crashed, which would
    have the server start yet another one), so that the deployment's concurrency slot does not
    block the new one."""
    deployment = await client.read_deployment_by_name(MANAGER_DEPLOYMENT)
    active = await _read_all(
        client,
        FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id]),
            state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=_types(MANAGER_ACTIVE_TYPES))
            ),
        ),
    )
    if active and not after_reboot:
        return None
    for run in active:
        await client.set_flow_run_state(
            run.id, Cancelled(message="stale: the stack was restarted"), force=True
        )
    return str((await client.create_flow_run_from_deployment(deployment.id)).id)


async def wind_down(client: PrefectClient, timeout: float | None = None) -> None:
    """Stop the queue's processes for a shutdown: cancel the manager, then the executing tasks
    (their workers stop the processes), then put back in the queue, at their place, the tasks
    that this cancellation ended. What happened meanwhile stays: a task that completed stays
    Completed, one a user cancelled stays Cancelled.

    Each step waits for its runs to end, up to `timeout` (default: longer than the worker's
    kill grace), and returns at once when none is executing. The manager goes first, so that
    it does not see the tasks' cancellation and cascade it to their dependents."""
    timeout = WIND_DOWN_SECONDS if timeout is None else timeout
    deployment = await client.read_deployment_by_name(MANAGER_DEPLOYMENT)
    managers = await _read_all(
        client,
        FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id]),
            state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=_types({*EXECUTING_TYPES, "SCHEDULED"}))
            ),
        ),
    )
    for manager in managers:
        await client.set_flow_run_state(manager.id, Cancelling(message=QUEUE_STOPPING))
    await _until_final(client, [m.id for m in managers], timeout)
    tasks = [r for r in await unfinished_runs(client) if r.state_type in EXECUTING_TYPES]
    ours: dict[str, UUID] = {}  # task -> the Cancelling state this shutdown gave it
    for task in tasks:
        if task.state_type == "CANCELLING":
            continue  # someone is stopping it already: a user, or the manager (stalled)
        # Not forced: a run that has just ended stays as it ended.
        result: OrchestrationResult[Any] = await client.set_flow_run_state(
            UUID(task.id), Cancelling(message=QUEUE_STOPPING)
        )
        if result.status == SetStateStatus.ACCEPT and result.state is not None:
            ours[task.id] = result.state.id
    await _until_final(client, [UUID(t.id) for t in tasks], timeout)
    for task_id, cancelling_id in ours.items():
        if await _stopped_only_by(client, task_id, cancelling_id):
            await requeue(client, await run_by_id(client, task_id), HELD_QUEUED)


async def request_stop() -> None:
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


# --- winding down: helpers --------------------------------------------------------------------

# How long the process worker gives a cancelled run between SIGTERM and SIGKILL: hard-coded in
# Prefect 3.9 (prefect/runner/_cancellation_manager.py, `grace_seconds = 30.0`; no setting).
WORKER_KILL_GRACE = 30.0
# A shutdown waits past that grace for the worker to report the run Cancelled (~4 s measured).
WIND_DOWN_SECONDS = WORKER_KILL_GRACE + 15
QUEUE_STOPPING = "the queue is stopping"  # the message of the cancellations wind_down makes


async def _until_final(client: PrefectClient, run_ids: Sequence[UUID], timeout: float) -> None:
    """Until every run has ended, or `timeout` seconds; at once when none is running."""
    deadline = asyncio.get_running_loop().time() + timeout
    waiting = list(run_ids)
    while waiting and asyncio.get_running_loop().time() < deadline:
        states = [(await client.read_flow_run(run_id)).state for run_id in waiting]
        waiting = [i for i, s in zip(waiting, states, strict=True) if s and not s.is_final()]
        if waiting:
            await asyncio.sleep(0.5)


async def _stopped_only_by(client: PrefectClient, run_id: str, cancelling_id: UUID) -> bool:
    """Whether this attempt of the run was ended by that Cancelling state and nothing else:
    it is Cancelled (or still being cancelled, its process about to go with the stack), and
    nobody else asked for a cancel since it was last released."""
    states = sorted(await client.read_flow_run_states(UUID(run_id)), key=lambda s: s.timestamp)
    released = [
        i for i, s in enumerate(states) if s.type in {StateType.SCHEDULED, StateType.PAUSED}
    ]
    attempt = states[released[-1] + 1 :] if released else states
    if not attempt or attempt[-1].type not in {StateType.CANCELLED, StateType.CANCELLING}:
        return False  # it completed, failed or crashed on its own
    cancels = [s.id for s in attempt if s.type == StateType.CANCELLING]
    return cancels == [cancelling_id]


# --- messages --------------------------------------------------------------------------------


async def publish_events(client: PrefectClient, events: Sequence[Event]) -> None:
    """Hand events to the server's automations over HTTP: once this returns, the server has
    taken them. (`emit_event` buffers them in a websocket client that sends the last 30 s of
    events again after a reconnect, and a restarted server forwards those again.)"""
    if events:
        await client.request("POST", "/events", json=[e.model_dump(mode="json") for e in events])


# --- processes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    """A task run that a worker started: which worker, and the process it recorded."""

    run_id: str
    state_type: str
    worker: str | None  # the worker's name (Prefect labels each run it submits)
    pid: int | None


async def started_runs(client: PrefectClient) -> list[Started]:
    """Task runs Prefect shows as executing (Pending, Running, Cancelling)."""
    runs = await _read_all(client, _task_filter(set(EXECUTING_TYPES)))
    return [
        Started(
            run_id=str(run.id),
            state_type=run.state_type.value if run.state_type else "",
            worker=str(run.labels.get("prefect.worker.name", "")) or None,
            pid=_pid(run.infrastructure_pid),
        )
        for run in runs
    ]


def _pid(infrastructure_pid: str | None) -> int | None:
    """The process worker records `pid` (older versions `host:pid`)."""
    tail = (infrastructure_pid or "").rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None


async def end_orphan(client: PrefectClient, run: Started, why: str) -> None:
    """A run whose process is gone: Crashed, which the manager judges (requeues once, see
    QUEUE_CRASH_RETRIES); one the user was cancelling ends Cancelled, as asked."""
    if run.state_type == "CANCELLING":
        await client.set_flow_run_state(UUID(run.run_id), Cancelled(message=why))
    else:
        await client.set_flow_run_state(UUID(run.run_id), Crashed(message=why))
