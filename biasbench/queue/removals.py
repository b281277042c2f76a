"""Removing tasks that have not started, together: removals that arrive while some are being
carried out go in the next batch: one read of the waiting tasks (does any depend on them?) and one
call of Prefect's `/flow_runs/bulk_delete`, one server transaction for up to 50 runs.

Why: on the Prefect server's SQLite every write takes its turn, and 50 clients deleting at once
waited for 50 transactions one after another (p95 about 15 s, perf/README.md run F); then for
their 100 reads (a run's status and the waiting tasks each), about 2 s.

The delete's filter names the states a removable task may be in (held, scheduled, pending), so the
server checks the status and deletes in one transaction: a run that started since it was asked
for, or that is gone, is not deleted. A task some waiting task depends on is kept, unless that
task goes in the same batch."""

from __future__ import annotations

import asyncio
import weakref
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType

from biasbench.queue import gateway

BULK_DELETE_LIMIT = 50  # the most runs Prefect's bulk delete takes in one call
# The Prefect state types of the statuses a task may be removed in (model.REMOVABLE).
REMOVABLE_STATE_TYPES = (StateType.PAUSED, StateType.SCHEDULED, StateType.PENDING)


@dataclass(frozen=True)
class Removal:
    removed: bool
    dependents: int = 0  # waiting tasks that depend on it, if it was kept for them


@dataclass
class _Batch:
    """The removals one Prefect server has not been sent yet, and who sends them."""

    waiting: dict[str, asyncio.Future[Removal]] = field(default_factory=dict)
    sender: asyncio.Future[None] | None = None


# Per event loop (a future belongs to its loop), per Prefect server.
_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Batch]] = (
    weakref.WeakKeyDictionary()
)


async def remove(client: PrefectClient, run_id: str) -> Removal:
    """Delete the run if it is still held, scheduled or pending and no waiting task depends on
    it; whether it was deleted (by this call or one at the same time)."""
    loop = asyncio.get_running_loop()
    batch = _batches.setdefault(loop, {}).setdefault(str(client.api_url), _Batch())
    future = batch.waiting.get(run_id)
    if future is None:
        future = batch.waiting[run_id] = loop.create_future()
    if batch.sender is None or batch.sender.done():
        batch.sender = asyncio.ensure_future(_send(client, batch))
    # Shielded: a caller given up (its client went away) does not take the others' call down.
    return await asyncio.shield(future)


async def _send(client: PrefectClient, batch: _Batch) -> None:
    """Send what waits, up to the limit a call, until nothing does."""
    while batch.waiting:
        run_ids = list(batch.waiting)[:BULK_DELETE_LIMIT]
        futures = {run_id: batch.waiting.pop(run_id) for run_id in run_ids}
        try:
            outcomes = await _remove(client, run_ids)
        except Exception as exc:  # each caller gets the error, the next call goes on
            for future in futures.values():
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # retrieved: its caller may be gone
            continue
        for run_id, future in futures.items():
            if not future.done():
                future.set_result(outcomes[run_id])


async def _remove(client: PrefectClient, run_ids: Sequence[str]) -> dict[str, Removal]:
    dependents: dict[str, set[str]] = defaultdict(set)
    for run in await gateway.waiting_runs(client):
        for upstream in run.upstream:
            dependents[upstream].add(run.id)
    # What may go: those whose dependents all go too (a task and its dependent removed at once).
    going = set(run_ids)
    while kept := {r for r in going if not dependents[r] <= going}:
        going -= kept
    deleted = await _bulk_delete(client, sorted(going)) if going else set()
    return {
        r: Removal(r in deleted, 0 if r in going else len(dependents[r] - going)) for r in run_ids
    }


async def _bulk_delete(client: PrefectClient, run_ids: Sequence[str]) -> set[str]:
    removable = FlowRunFilter(
        id=FlowRunFilterId(any_=[UUID(r) for r in run_ids]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=list(REMOVABLE_STATE_TYPES))),
    )
    body: dict[str, Any] = {
        "flow_runs": removable.model_dump(mode="json", exclude_unset=True),
        "limit": len(run_ids),
    }
    response = await client.request("POST", "/flow_runs/bulk_delete", json=body)  # type: ignore[arg-type]
    return {str(r) for r in response.json()["deleted"]}
