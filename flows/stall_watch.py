"""Stall detection: a running task that makes no progress for too long is stopped and failed.

Progress is what a task shows users: its progress artifact (updated as answers arrive) or, before
the first one, the moment it entered Running. A stalled task's process is stopped through
Prefect's cancellation (the worker kills it), then the run is marked Failed/"Stalled", which
notifications treat as critical: it almost always means the LLM server hangs."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterType,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.objects import StateType
from prefect.states import Cancelling, Failed

from biasbench.queue.model import STALLED, QueueRun


async def last_progress(client: PrefectClient, run_id: str) -> datetime | None:
    flow_run = await client.read_flow_run(UUID(run_id))
    if flow_run.state is None or flow_run.state.type != StateType.RUNNING:
        return None
    artifacts = await client.read_artifacts(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(run_id)])),
        artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"])),
    )
    moments = [flow_run.state.timestamp, *(a.updated for a in artifacts if a.updated)]
    return max(moments)


class StallWatch:
    def __init__(self, after_seconds: float, *, every_seconds: float = 5.0) -> None:
        self.after_seconds = after_seconds
        self.every_seconds = every_seconds  # stalls are minutes long: no need to look each tick
        self._last_look = 0.0
        self._stopping: dict[str, str] = {}  # run id -> the reason, until its process is gone
        self._stalled: set[str] = set()  # every run this watch stopped

    def view(self, runs: Mapping[str, QueueRun]) -> dict[str, QueueRun]:
        """The snapshot as the decisions must see it: a stalled run that was cancelled to stop
        its process counts as failed, so its dependents are skipped, not cancelled. (While
        still CANCELLING it keeps its slot: its process may still be alive.)"""
        return {
            run_id: replace(run, state_type="FAILED", state_name=STALLED)
            if run_id in self._stalled and run.state_type == "CANCELLED"
            else run
            for run_id, run in runs.items()
        }

    async def check(self, client: PrefectClient, runs: Mapping[str, QueueRun]) -> list[str]:
        """Returns the ids of runs found stalled in this check."""
        if time.monotonic() - self._last_look < self.every_seconds and not self._stopping:
            return []
        self._last_look = time.monotonic()
        now = datetime.now(UTC)
        stalled = []
        for run in runs.values():
            if run.state_type != "RUNNING" or run.id in self._stopping:
                continue
            last = await last_progress(client, run.id)
            if last is not None and (now - last).total_seconds() > self.after_seconds:
                reason = (
                    f"stalled: no progress for {self.after_seconds:.0f} s "
                    "(is the LLM server responding?)"
                )
                await client.set_flow_run_state(
                    UUID(run.id), Cancelling(message=reason), force=True
                )
                self._stopping[run.id] = reason
                self._stalled.add(run.id)
                stalled.append(run.id)
        for run_id, reason in list(self._stopping.items()):
            state = (await client.read_flow_run(UUID(run_id))).state
            if state is not None and state.is_final():
                if state.type == StateType.CANCELLED:
                    await client.set_flow_run_state(
                        UUID(run_id), Failed(name=STALLED, message=reason), force=True
                    )
                del self._stopping[run_id]
        return stalled
