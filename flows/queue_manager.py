"""The queue manager: the one place that decides which held task runs next (design.md §6).

A thin loop: snapshot the queue from Prefect → decide (biasbench.queue.decide, pure) → apply.
It keeps no state of its own, so a restart simply reconciles from Prefect. It runs in its own
work pool and never takes a GPU slot; the GPU pool's concurrency limit is the number of slots."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Annotated

from prefect import flow, get_client, get_run_logger
from pydantic import Field

from biasbench.db.engine import session_scope
from biasbench.queue import gateway
from biasbench.queue.decide import decide
from biasbench.queue.model import MANAGER_FLOW, QueueRun, QueueStatus
from biasbench.results import TaskResult, result_of_flow_run
from biasbench.settings import Settings
from flows.notices import Notices
from flows.runtime import database
from flows.stall_watch import StallWatch


@flow(name=MANAGER_FLOW)
async def queue_manager(
    poll_seconds: Annotated[float, Field(gt=0, le=60, description="Seconds between looks.")] = 0.5,
    stall_seconds: Annotated[
        float | None,
        Field(
            gt=0,
            description="A running task without progress this long fails as stalled. "
            "Default: QUEUE_STALL_SECONDS (600).",
        ),
    ] = None,
) -> None:
    logger = get_run_logger()
    settings = Settings()
    engine = database(settings)
    stall_watch = StallWatch(stall_seconds or settings.queue_stall_seconds)
    results: dict[str, TaskResult] = {}  # results never change once known
    notices = Notices(logger, engine)
    was_busy = False
    idle_since: float | None = None
    was_paused: bool | None = None
    async with get_client() as client:
        while True:
            pool = await gateway.read_pool(client)
            stopping = await gateway.stop_requested()
            runs = await gateway.read_queue(client)
            if was_paused is None:
                notices.queue("started", waiting=sum(r.is_held for r in runs.values()))
            if pool.paused != was_paused and (pool.paused or was_paused is not None):
                # Also when it starts paused: users learn the queue is up but holding.
                notices.queue("paused" if pool.paused else "resumed")
            was_paused = pool.paused

            for run_id in await stall_watch.check(client, runs):
                logger.warning(
                    "Task %s made no progress for %.0f s: stopping it.",
                    run_id,
                    stall_watch.after_seconds,
                )
            await notices.tasks(client, runs, stall_watch.stalled)
            with session_scope(engine) as session:
                for run_id in _completed_upstreams(runs):
                    if run_id not in results and (found := result_of_flow_run(session, run_id)):
                        results[run_id] = found
            actions = decide(
                runs,
                slots=pool.slots,
                accepting=not (pool.paused or stopping),
                results=results,
                now=datetime.now(UTC),
                stalled=stall_watch.stalled,
            )
            if actions:
                logger.info("Queue: %s", "; ".join(_describe(a) for a in actions))
                await gateway.apply(client, runs, actions)

            if stopping and not any(r.occupies_slot for r in runs.values()):
                await gateway.clear_stop()
                notices.queue("stopped")
                logger.info(
                    "Queue stopped: the current task has finished; queued tasks stay queued."
                )
                return
            if not all(r.is_final for r in runs.values()):
                was_busy, idle_since = True, None
            elif was_busy:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= DRAINED_AFTER_SECONDS:
                    notices.queue("drained")
                    was_busy = False
            await asyncio.sleep(poll_seconds)


# "All queued tasks processed" only once nothing new came for this long: a script submitting a
# batch, or a user adding the next task, would otherwise get it between two submissions.
DRAINED_AFTER_SECONDS = 3.0


def _completed_upstreams(runs: dict[str, QueueRun]) -> set[str]:
    return {
        u
        for r in runs.values()
        if r.is_held
        for u in r.upstream
        if u in runs and runs[u].status is QueueStatus.DONE
    }


def _describe(action: object) -> str:
    return f"{type(action).__name__.lower()} {getattr(action, 'run_id', '')[:8]}"
