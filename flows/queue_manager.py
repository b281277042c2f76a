"""The queue manager: the one place that decides which held task runs next (design.md §6).

A thin loop: snapshot the queue from Prefect → decide (biasbench.queue.decide, pure) → apply.
It keeps no state of its own, so a restart simply reconciles from Prefect. It runs in its own
work pool and never takes a GPU slot; the GPU pool's concurrency limit is the number of slots.

It must not die of what a night brings: each look is guarded, so a run that vanished or a
Prefect error is logged and the next look goes on, and a Prefect outage is waited out with
backoff. If its process dies anyway, a server-side automation starts a new manager
(deployments/manager_revival.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from prefect import flow, get_client, get_run_logger
from prefect.client.orchestration import PrefectClient
from pydantic import Field
from sqlalchemy import Engine, select

from biasbench.db.engine import session_scope
from biasbench.db.models import QueueOutbox
from biasbench.queue import gateway
from biasbench.queue.decide import Release, decide
from biasbench.queue.grouping import ModelGrouping
from biasbench.queue.model import HELD_QUEUED, MANAGER_FLOW, QueueRun, QueueStatus
from biasbench.results import TaskResult, result_of_flow_run
from biasbench.settings import Settings
from flows.notices import Notices
from flows.queue_plan import QueuePlanner
from flows.runtime import database
from flows.stall_watch import StallWatch

# "All queued tasks processed" only once nothing new came for this long: a script submitting a
# batch, or a user adding the next task, would otherwise get it between two submissions.
DRAINED_AFTER_SECONDS = 3.0
# A crash is judged once it is this old: a worker reports one process death twice, seconds
# apart, and a run requeued in between would be crashed again by the second report.
CRASH_SETTLE_SECONDS = 10.0
# A crash older than this is not rerun, only failed for good: a queue first started long after
# (or an upgrade meeting old Crashed runs) must not start yesterday's work by surprise.
CRASH_RETRY_HORIZON = timedelta(hours=24)
# Waiting out a Prefect outage: the first retry at once, then doubling up to this.
MAX_BACKOFF_SECONDS = 10.0


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
    manager = Manager(
        logger,
        database(settings),
        stall_seconds=stall_seconds or settings.queue_stall_seconds,
        crash_retries=settings.queue_crash_retries,
        grouping=ModelGrouping(
            loaded=frozenset(),
            max_overtake=settings.queue_max_overtake,
            max_wait=timedelta(seconds=settings.queue_max_wait),
        )
        if settings.queue_model_grouping
        else None,
        planner=QueuePlanner(
            logger,
            database(settings),
            timezone=settings.queue_timezone,
            swap_seconds=settings.queue_model_swap_seconds,
        ),
    )
    trouble = Trouble(logger)
    async with get_client() as client:
        while True:
            try:
                if await manager.look(client):
                    return
            except Exception as exc:  # the queue must go on: see Trouble
                await asyncio.sleep(trouble.seen(exc))
                continue
            trouble.over()
            await asyncio.sleep(poll_seconds)


class Trouble:
    """A look that failed: say so once (not every 0.5 s for an hour), back off, and say when it
    is over. Whatever failed is read again from Prefect on the next look, so nothing is lost."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        self._logger = logger
        self._since: float | None = None
        self._backoff = 0.0

    def seen(self, exc: Exception) -> float:
        """Seconds to wait before the next look."""
        if self._since is None:
            self._since = time.monotonic()
            self._logger.warning(
                "A look at the queue failed (%s: %s); trying again with backoff until it works.",
                type(exc).__name__,
                exc,
                exc_info=exc,
            )
        self._backoff = min(max(self._backoff * 2, 0.5), MAX_BACKOFF_SECONDS)
        return self._backoff

    def over(self) -> None:
        if self._since is not None:
            self._logger.warning(
                "The queue works again after %.0f s of failed looks.",
                time.monotonic() - self._since,
            )
        self._since, self._backoff = None, 0.0


class Manager:
    """One look at a time; what it keeps between looks is only what saves reads (known results,
    the last snapshot for messages), never a copy of the queue."""

    def __init__(
        self,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        engine: Engine,
        *,
        stall_seconds: float,
        crash_retries: int,
        grouping: ModelGrouping | None = None,
        planner: QueuePlanner,
    ) -> None:
        """grouping: the bounds of model grouping (its loaded models are read at each look);
        None: strict FIFO."""
        self.logger = logger
        self.planner = planner
        self.engine = engine
        self.crash_retries = crash_retries
        self.grouping = grouping
        self.stall_watch = StallWatch(stall_seconds)
        self.notices = Notices(logger, engine)
        self.results: dict[str, TaskResult] = {}  # results never change once known
        self.was_busy = False
        self.idle_since: float | None = None
        self.was_paused: bool | None = None

    async def look(self, client: PrefectClient) -> bool:
        """Returns True when the queue has stopped (a stop was asked for and nothing runs)."""
        await self.notices.send(client)  # what a failed look could not send
        pool = await gateway.read_pool(client)
        stopping = await gateway.stop_requested()
        await self.judge_crashes(client)
        runs = await gateway.read_queue(client)
        await self.planner.look(runs, pool.slots, lambda: gateway.model_hosts(client))
        if self.was_paused is None:
            await self.notices.announce_missed(client)
            waiting = sum(r.is_held for r in runs.values())
            self.notices.queue("started", waiting=waiting, forecast=self.planner.forecast())
        if pool.paused != self.was_paused and (pool.paused or self.was_paused is not None):
            # Also when it starts paused: users learn the queue is up but holding.
            self.notices.queue("paused" if pool.paused else "resumed")
        self.was_paused = pool.paused

        for run_id in await self.stall_watch.check(client, runs):
            self.logger.warning(
                "Task %s made no progress for %.0f s: stopping it.",
                run_id,
                self.stall_watch.after_seconds,
            )
        await self.notices.tasks(client, runs, self.stall_watch.stalled)
        self.learn_results(runs)
        actions = decide(
            runs,
            slots=pool.slots,
            accepting=not (pool.paused or stopping),
            results=self.results,
            now=datetime.now(UTC),
            stalled=self.stall_watch.stalled,
            grouping=await self.model_grouping(client, runs),
            gpus=await gateway.read_gpus(client),
        )
        if actions:
            self.logger.info("Queue: %s", "; ".join(_describe(a) for a in actions))
            await gateway.apply(client, runs, actions)

        if stopping and not any(r.occupies_slot for r in runs.values()):
            await gateway.clear_stop()
            self.notices.queue("stopped")
            await self.notices.send(client)
            self.logger.info(
                "Queue stopped: the current task has finished; queued tasks stay queued."
            )
            return True
        self.watch_drain(runs, datetime.now(UTC))
        await self.notices.send(client)
        return False

    async def model_grouping(
        self, client: PrefectClient, runs: dict[str, QueueRun]
    ) -> ModelGrouping | None:
        """The models the GPUs have loaded (as their hosts published them) and the runs that
        started since the oldest held run was submitted (for the bounds); None when grouping is
        off or no GPU has a model loaded (nothing to prefer)."""
        held = [r.created for r in runs.values() if r.is_held]
        if self.grouping is None or not held:
            return None
        hosts = await gateway.model_hosts(client)
        loaded = frozenset(str(h["model"]) for h in hosts.values() if h.get("model"))
        if not loaded:
            return None
        started = await gateway.finished_since(client, min(held))
        return replace(self.grouping, loaded=loaded, started=tuple(started))

    async def judge_crashes(self, client: PrefectClient) -> None:
        """A task whose process was killed from outside (worker or host gone, server lost) goes
        back in its place and resumes, up to QUEUE_CRASH_RETRIES times; after that, or with no
        retries, it fails for good as Crashed."""
        now = datetime.now(UTC)
        for run in await gateway.crashed_runs(client):
            if run.state_since and (now - run.state_since).total_seconds() < CRASH_SETTLE_SECONDS:
                continue  # its worker may still be reporting the same death
            crashes = await gateway.crash_count(client, run.id)
            recent = run.state_since is None or now - run.state_since < CRASH_RETRY_HORIZON
            if crashes <= self.crash_retries and recent:
                await gateway.requeue(client, run, HELD_QUEUED)
                self.logger.warning(
                    "Task %s (%s) was killed from outside (%s); it goes back in its place and "
                    "resumes (automatic retry %d of %d).",
                    run.name,
                    run.id,
                    run.state_message or "crashed",
                    crashes,
                    self.crash_retries,
                )
            else:
                await gateway.fail_crashed(client, run, run.state_message or "crashed")

    def learn_results(self, runs: dict[str, QueueRun]) -> None:
        with session_scope(self.engine) as session:
            for run_id in _completed_upstreams(runs):
                if run_id not in self.results and (found := result_of_flow_run(session, run_id)):
                    self.results[run_id] = found

    def watch_drain(self, runs: dict[str, QueueRun], now: datetime) -> None:
        if not all(r.is_settled or r.is_scheduled_later(now) for r in runs.values()):
            self.was_busy, self.idle_since = True, None
        elif self.was_busy and _adds_not_in_prefect_yet(self.engine):
            self.idle_since = None  # queued tasks, only not created yet: the queue is not done
        elif self.was_busy:
            self.idle_since = self.idle_since or time.monotonic()
            if time.monotonic() - self.idle_since >= DRAINED_AFTER_SECONDS:
                self.notices.queue("drained", forecast=self.planner.drained())
                self.was_busy = False


def _adds_not_in_prefect_yet(engine: Engine) -> bool:
    """Adds the /queue API answered but has not created in Prefect (queue_api/outbox.py): a
    cascade's writes can hold their creation back for minutes, and "all processed" before them
    would be told too soon (tests/queue_api/test_many_tasks)."""
    with session_scope(engine) as session:
        waiting = select(QueueOutbox.task_id).where(QueueOutbox.error.is_(None)).limit(1)
        return session.scalar(waiting) is not None


def _completed_upstreams(runs: dict[str, QueueRun]) -> set[str]:
    return {
        u
        for r in runs.values()
        if r.is_held
        for u in r.upstream
        if u in runs and runs[u].status is QueueStatus.DONE
    }


def _describe(action: object) -> str:
    gpu = f" to {action.gpu}" if isinstance(action, Release) and action.gpu else ""
    return f"{type(action).__name__.lower()} {getattr(action, 'run_id', '')[:8]}{gpu}"
