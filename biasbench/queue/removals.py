"""Removing tasks that have not started, together: deletes that arrive while one is being carried
out go in the next call of Prefect's `/flow_runs/bulk_delete`, one server transaction for up to
50 runs instead of one each.

Why: on the Prefect server's SQLite every write takes its turn, and 50 clients deleting at once
waited for 50 transactions one after another (p95 about 15 s, perf/README.md run F).

The call's filter also names the states a removable task may be in (held, scheduled, pending), so
the server reads and deletes in one transaction: a run that started since its status was read is
not deleted, and its caller is told (False)."""

from __future__ import annotations

import asyncio
import weakref
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

BULK_DELETE_LIMIT = 50  # the most runs Prefect's bulk delete takes in one call
# The Prefect state types of the statuses a task may be removed in (model.REMOVABLE).
REMOVABLE_STATE_TYPES = (StateType.PAUSED, StateType.SCHEDULED, StateType.PENDING)


@dataclass
class _Batch:
    """The deletes one Prefect server has not been sent yet, and who sends them."""

    waiting: dict[str, asyncio.Future[bool]] = field(default_factory=dict)
    sender: asyncio.Future[None] | None = None


# Per event loop (a future belongs to its loop), per Prefect server.
_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Batch]] = (
    weakref.WeakKeyDictionary()
)


async def delete_if_removable(client: PrefectClient, run_id: str) -> bool:
    """Delete the run if it is still held, scheduled or pending; True if it was deleted (by this
    call or one at the same time), False if it had started or was gone."""
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
            deleted = await _bulk_delete(client, run_ids)
        except Exception as exc:  # each caller gets the error, the next call goes on
            for future in futures.values():
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # retrieved: its caller may be gone
            continue
        for run_id, future in futures.items():
            if not future.done():
                future.set_result(run_id in deleted)


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
