"""Every task run waits for the queue manager's release, whatever route created it."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID, uuid4

from prefect import get_client, get_run_logger
from prefect.context import FlowRunContext
from prefect.flow_runs import asuspend_flow_run
from pydantic import Field

from biasbench.queue import gateway

# The two queue parameters every task flow accepts, so that `prefect deployment run`, the UI and
# schedules can declare what a task waits for and how urgent it is.
Upstream = Annotated[
    list[str] | None,
    Field(
        description="Flow-run ids of tasks that must complete first; their results are wired in."
    ),
]
Priority = Annotated[
    int, Field(description="Higher runs first; equal priorities run in submission order.")
]

PARKING = "Not released by the queue manager yet: joining the queue."


def _deployment_run_id() -> UUID | None:
    context = FlowRunContext.get()
    if context is None or context.flow_run is None or context.flow_run.deployment_id is None:
        return None
    return context.flow_run.id


async def wait_for_turn() -> None:
    """A deployment run the manager did not release (CLI, UI, schedule, the UI's Retry) parks
    itself back in the queue (suspended, no slot held) instead of jumping it. Direct calls of a
    flow (tests, scripts) have no deployment and run at once."""
    if (flow_run_id := _deployment_run_id()) is None:
        return
    async with get_client() as client:
        if await gateway.released_by_manager(client, str(flow_run_id)):
            return
    get_run_logger().info(PARKING)
    # A fresh key each time: Prefect ignores a second suspend with a key it has already seen.
    await asuspend_flow_run(timeout=None, key=str(uuid4()))
