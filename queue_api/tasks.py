"""Prefect flow runs (plus result ids and progress from the domain) → /queue tasks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterType,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import ArtifactSort, FlowRunSort
from sqlalchemy import Engine

from biasbench.db.engine import session_scope
from biasbench.queue.gateway import PAGE, FlowNames, read_all_runs
from biasbench.queue.model import QUEUE_TAG, QueueStatus, queue_status
from biasbench.queue.progress import parse_progress
from biasbench.results import result_of_flow_run
from queue_api.ids import TaskIds
from queue_api.schemas import Progress, QueueTask

QUEUE_PARAMETERS = ("upstream", "priority")
ACTIVE_TYPES = [
    StateType.SCHEDULED,
    StateType.PENDING,
    StateType.RUNNING,
    StateType.CANCELLING,
    StateType.PAUSED,
]
FINAL_TYPES = [StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED]
ACTIVE = {QueueStatus.QUEUED, QueueStatus.WAITING, QueueStatus.RUNNING}
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # before any run of this queue


class TaskReader:
    def __init__(self, engine: Engine, ids: TaskIds) -> None:
        self.engine, self.ids = engine, ids
        self.names = FlowNames()

    async def active_runs(self, client: PrefectClient) -> list[FlowRun]:
        """Every unfinished task: few, however long the history is."""
        return await read_all_runs(client, _queue_filter(ACTIVE_TYPES))

    async def newest_finished_runs(self, client: PrefectClient, limit: int) -> list[FlowRun]:
        runs: list[FlowRun] = []
        while len(runs) < limit:  # in pages: the server caps how many runs one read returns
            page = await client.read_flow_runs(
                flow_run_filter=_queue_filter(FINAL_TYPES),
                sort=FlowRunSort.END_TIME_DESC,
                limit=min(limit - len(runs), PAGE),
                offset=len(runs),
            )
            runs.extend(page)
            if len(page) < PAGE:
                break
        return runs

    async def counts(self, client: PrefectClient) -> dict[QueueStatus, int]:
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
                "flow_runs": _queue_filter().model_dump(mode="json", exclude_unset=True),
            },
        )
        counts = dict.fromkeys(QueueStatus, 0)
        for interval in response.json():
            for state in interval["states"]:
                status = queue_status(state["state_type"], state["state_name"])
                counts[status] += state["count_runs"]
        return counts

    async def run_of(self, client: PrefectClient, task_id: int) -> FlowRun | None:
        flow_run_id = self.ids.flow_run_for(task_id)
        if flow_run_id is None:
            return None
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)]))
        )
        return runs[0] if runs else None

    async def tasks(self, client: PrefectClient, runs: Sequence[FlowRun]) -> list[QueueTask]:
        ids = self.ids.ids_for(str(r.id) for r in sorted(runs, key=lambda r: r.created))  # type: ignore[arg-type, return-value]
        tasks = []
        for run in runs:
            task_type = await self.names.task_type(client, run.flow_id)
            if task_type is not None:
                tasks.append(await self._task(client, run, task_type, ids))
        return tasks

    async def _task(
        self, client: PrefectClient, run: FlowRun, task_type: str, ids: dict[str, int]
    ) -> QueueTask:
        state = run.state
        status = queue_status(state.type.value, state.name) if state else QueueStatus.QUEUED
        upstream = [str(u) for u in (run.parameters.get("upstream") or [])]
        upstream_ids = list(self.ids.ids_for(upstream).values())
        result = None
        if status is QueueStatus.DONE:
            with session_scope(self.engine) as session:
                result = result_of_flow_run(session, str(run.id))
        task_id = ids[str(run.id)]
        failed = status in {QueueStatus.FAILED, QueueStatus.CANCELLED, QueueStatus.SKIPPED}
        running = status is QueueStatus.RUNNING
        progress = await self._progress(client, run.id) if running else None
        return QueueTask(
            id=task_id,
            task_type=task_type,
            status=status.value,
            position=task_id,
            label=run.name,
            created_at=run.created,
            started_at=run.start_time,
            finished_at=run.end_time if state and state.is_final() else None,
            error=(state.message or state.name) if failed and state else None,
            depends_on=upstream_ids[0] if len(upstream_ids) == 1 else (upstream_ids or None),
            result_run_id=result.run_id if result else None,
            result_run_type=result.run_type if result else None,
            config={k: v for k, v in run.parameters.items() if k not in QUEUE_PARAMETERS},
            priority=int(run.parameters.get("priority") or 0),
            # Only running tasks that have reported progress carry the field (else "absent").
            **({"progress": progress} if progress is not None else {}),
        )

    async def _progress(self, client: PrefectClient, flow_run_id: UUID) -> Progress | None:
        artifacts = await client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"])),
            sort=ArtifactSort.UPDATED_DESC,
            limit=1,
        )
        count = parse_progress(artifacts[0].description) if artifacts else None
        if count is None:
            return None
        return Progress(done=count.done, total=count.total, percent=count.percent)


def _queue_filter(types: list[StateType] | None = None) -> FlowRunFilter:
    """The queue's runs (every task run carries the tag), optionally of these state types."""
    if types is None:
        return FlowRunFilter(tags=FlowRunFilterTags(all_=[QUEUE_TAG]))
    return FlowRunFilter(
        tags=FlowRunFilterTags(all_=[QUEUE_TAG]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=types)),
    )


def in_contract_order(tasks: list[QueueTask]) -> list[QueueTask]:
    """Active tasks first by position, then finished ones, newest first."""
    active = sorted((t for t in tasks if t.status in ACTIVE), key=lambda t: t.position)
    done = sorted(
        (t for t in tasks if t.status not in ACTIVE),
        key=lambda t: (t.finished_at or t.created_at, t.id),
        reverse=True,
    )
    return active + done
