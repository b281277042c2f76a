"""Queue runs (plus result ids and progress from the domain database) → /queue tasks."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from prefect.client.orchestration import PrefectClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from biasbench.db.engine import session_scope
from biasbench.queue import control, gateway
from biasbench.queue.attempt import Attempt
from biasbench.queue.eta import QueuePlan
from biasbench.queue.forecast import plan_now
from biasbench.queue.gateway import PoolState
from biasbench.queue.grouping import model_of
from biasbench.queue.model import ACTIVE, QueueRun, QueueStatus, places_in_line
from biasbench.queue.progress import ProgressCount
from biasbench.results import progress_of_flow_run, result_of_flow_run
from queue_api.attempts import Attempts
from queue_api.ids import TaskIds
from queue_api.outbox import Outbox, Waiting
from queue_api.schemas import Progress, QueueStats, TaskPublic

log = logging.getLogger(__name__)
PLAN_REUSE_SECONDS = 5.0
_SHOWS_ERROR = {QueueStatus.FAILED, QueueStatus.SKIPPED}  # their state's message; cancelled: why


class TaskViews:
    """What the read endpoints return, each in one call."""

    def __init__(self, engine: Engine, ids: TaskIds, *, swap_seconds: float) -> None:
        self.engine, self.ids = engine, ids
        self.swap_seconds = swap_seconds  # a model swap's cost until a host measured one
        self.attempts = Attempts()
        self.outbox = Outbox(engine, ids)  # POST /queue/add's adds until Prefect has them
        # The last plan, the queue it was made for and when: many clients poll one queue.
        self._last_plan: tuple[frozenset[tuple[str, str, str | None]], float, QueuePlan] | None
        self._last_plan = None

    async def listing(
        self, client: PrefectClient, *, include_done: bool, limit: int
    ) -> list[TaskPublic]:
        """Active tasks first by position, then finished ones, newest first."""
        now = datetime.now(UTC)
        waiting = self.outbox.waiting()  # before the runs: one created meanwhile shows once
        # The pool is read beside the runs, not after them: whether the queue is paused does not
        # depend on them, and each Prefect round trip in line costs about a bare read (issue 16:
        # `GET /queue?limit=50` was 2.2 x the bare read of its runs; perf/README.md).
        unfinished, pool = await asyncio.gather(
            gateway.unfinished_runs(client), gateway.read_pool(client)
        )
        removed = self.outbox.withdrawn_keys()  # created after their delete: being deleted
        active = [
            r for r in unfinished if not r.is_scheduled_later(now) and removed.isdisjoint(r.tags)
        ]
        done = await gateway.newest_finished_runs(
            client, limit - len(active) - len(waiting) if include_done else 0
        )
        held = _held(waiting)
        places = places_in_line([*active, *held], now)
        plan = await self._plan(client, [*active, *held], pool)
        tasks = await self.public(client, [*active, *done], places, plan)
        tasks += self._waiting_tasks(waiting, places, plan, shown={t.id for t in tasks})
        return await self._with_blockers(client, in_contract_order(tasks)[:limit], pool)

    async def one(self, client: PrefectClient, task_id: int) -> TaskPublic:
        if self.outbox.waiting([task_id]) and (task := await self._one_waiting(client, task_id)):
            return task
        run = await self.run_of(client, task_id)
        places: dict[str, int] = {}
        plan: QueuePlan | None = None
        pool: PoolState | None = None
        if not run.is_final:  # its place and times depend on every other unfinished task
            # The pool beside the runs, as in `listing`.
            runs, pool = await asyncio.gather(
                gateway.unfinished_runs(client), gateway.read_pool(client)
            )
            unfinished = [*runs, *_held(self.outbox.waiting())]
            places = places_in_line(unfinished, datetime.now(UTC))
            plan = await self._plan(client, unfinished, pool)
        (task,) = await self.public(client, [run], places, plan)
        (task,) = await self._with_blockers(client, [task], pool)
        return task

    async def _one_waiting(self, client: PrefectClient, task_id: int) -> TaskPublic | None:
        """An add answered but not in Prefect yet (None if its run was created meanwhile)."""
        waiting = self.outbox.waiting()
        unfinished = [*await gateway.unfinished_runs(client), *_held(waiting)]
        places = places_in_line(unfinished, datetime.now(UTC))
        plan = await self._plan(client, unfinished)
        tasks = self._waiting_tasks([w for w in waiting if w.task_id == task_id], places, plan)
        return (await self._with_blockers(client, tasks))[0] if tasks else None

    @staticmethod
    def _waiting_tasks(
        waiting: Sequence[Waiting],
        places: Mapping[str, int],
        plan: QueuePlan | None = None,
        shown: frozenset[int] | set[int] = frozenset(),
    ) -> list[TaskPublic]:
        """Adds still in the outbox, as the queued (or waiting) tasks they are; one refused by
        Prefect for good as failed, with why."""
        tasks = []
        for w in waiting:
            if w.task_id in shown:
                continue
            run = w.as_held_run()
            planned = plan.tasks.get(run.id) if plan and not w.error else None
            tasks.append(
                TaskPublic(
                    id=w.task_id,
                    task_type=run.task_type,
                    status=QueueStatus.FAILED if w.error else run.status,
                    position=places.get(run.id, w.task_id),
                    label=w.label,
                    created_at=w.submitted_at,
                    started_at=None,
                    finished_at=None,
                    error=w.error,
                    depends_on=w.depends_on[0]
                    if len(w.depends_on) == 1
                    else (w.depends_on or None),
                    result_run_id=None,
                    result_run_type=None,
                    config=run.config,
                    priority=run.priority,
                    eta=planned.end if planned else None,
                    eta_p90=planned.end_p90 if planned else None,
                    expected_start=planned.start if planned else None,
                )
            )
        return tasks

    async def _plan(
        self, client: PrefectClient, active: Sequence[QueueRun], pool: PoolState | None = None
    ) -> QueuePlan | None:
        """The queue's expected times (biasbench.queue.forecast), from the runs (and the pool,
        if the caller has it) already read; the last plan again while the queue is unchanged
        and the plan under PLAN_REUSE_SECONDS old (a plan of a long queue costs a little CPU
        and some database reads)."""
        if not active:
            return None
        seen = frozenset((r.id, r.state_type, r.state_name) for r in active)
        last = self._last_plan
        # Unchanged, or only runs that ended since: reuse it for a while (a cascade of hundreds
        # of ends would otherwise make a plan per request).
        if last and seen <= last[0] and time.monotonic() - last[1] < PLAN_REUSE_SECONDS:
            return last[2]
        try:
            runs = {r.id: r for r in active}
            missing = {u for r in active for u in r.upstream if u not in runs}
            runs.update(await gateway.runs_by_id(client, missing))
            if pool is None:
                pool, hosts = await asyncio.gather(
                    gateway.read_pool(client), gateway.model_hosts(client)
                )
            else:
                hosts = await gateway.model_hosts(client)
            # In a thread: a long queue's plan takes a moment, and this loop also answers the
            # health probe and every other client meanwhile.
            plan = await asyncio.to_thread(
                plan_now,
                self.engine,
                runs,
                slots=pool.slots,
                swap_seconds=self.swap_seconds,
                hosts=hosts,
            )
        except Exception:  # the times are an extension: the listing goes on without them
            log.warning("No queue plan for /queue this time", exc_info=True)
            return None
        self._last_plan = (seen, time.monotonic(), plan)
        return plan

    async def _recent_plan(self, client: PrefectClient) -> QueuePlan | None:
        """For /queue/stats: the last plan if it is fresh, so stats need not read every
        unfinished run each time."""
        if (last := self._last_plan) and time.monotonic() - last[1] < PLAN_REUSE_SECONDS:
            return last[2]
        return await self._plan(client, await gateway.unfinished_runs(client))

    async def _with_blockers(
        self, client: PrefectClient, tasks: list[TaskPublic], pool: PoolState | None = None
    ) -> list[TaskPublic]:
        """Queued tasks say what holds the whole queue, if anything does (`pool`: if the caller
        read it already)."""
        if not any(t.status is QueueStatus.QUEUED for t in tasks):
            return tasks
        if pool is None:
            pool = await gateway.read_pool(client)
        # The first reason that applies, in this order: a paused queue needs no more reads
        # (each Prefect read costs about as much as the listing's own, issue 16).
        if pool.paused:
            blocker: str | None = "the queue is paused"
        else:
            workers, manager = await asyncio.gather(
                gateway.gpu_workers_alive(client), gateway.manager_running(client)
            )
            blocker = (
                "no GPU worker is alive: nothing starts until one is"
                if workers == 0
                else "no queue manager runs: POST /queue/start"
                if not manager
                else None
            )
        if blocker is None:
            return tasks
        return [
            t.model_copy(update={"blocked_by": blocker}) if t.status is QueueStatus.QUEUED else t
            for t in tasks
        ]

    async def run_of(self, client: PrefectClient, task_id: int) -> QueueRun:
        return await gateway.run_by_id(client, await self.ids.flow_run_of(client, task_id))

    async def stats(self, client: PrefectClient) -> QueueStats:
        waiting = self.outbox.waiting()  # before the counts: one created meanwhile counts twice
        counts, later, state, plan = await asyncio.gather(
            gateway.count_by_status(client),
            gateway.count_scheduled_later(client, datetime.now(UTC)),
            control.queue_state(client),
            self._recent_plan(client),
        )
        counts[QueueStatus.QUEUED] -= later  # not queue work until their time comes
        for task in self._waiting_tasks(waiting, {}):  # answered, not in Prefect yet
            counts[task.status] = counts.get(task.status, 0) + 1
        hosts = await gateway.model_hosts(client)
        return QueueStats(
            total=sum(counts.values()),
            **{status.value: count for status, count in counts.items()},
            scheduled=later,
            executor_running=state.executor_running,
            executor_paused=state.executor_paused,
            gpu_workers_alive=state.gpu_workers_alive,
            gpu_models={name: host.get("model") for name, host in sorted(hosts.items())},
            drain_eta=plan.drain if plan else None,
        )

    async def public(
        self,
        client: PrefectClient,
        runs: Sequence[QueueRun],
        places: Mapping[str, int],
        plan: QueuePlan | None = None,
    ) -> list[TaskPublic]:
        """`places`: each unfinished run's place in line; a finished task's position is its id
        (submission order), as the original listed them. `plan`: the queue's expected times."""
        attempts = await self.attempts.of(client, runs)
        self.ids.adopt({r.id: r.tags for r in runs})
        # Ids are handed out in submission order to runs the API has not seen before.
        by_submission = sorted(runs, key=lambda r: (r.submitted_at or r.created, r.id))
        ids = self.ids.ids_for(r.id for r in by_submission)
        loading = await self._loading(client, runs)
        with session_scope(self.engine) as session:
            return [
                self._task(
                    session,
                    run,
                    ids[run.id],
                    places.get(run.id, ids[run.id]),
                    attempts[run.id],
                    loading,
                    plan,
                )
                for run in runs
            ]

    @staticmethod
    async def _loading(client: PrefectClient, runs: Sequence[QueueRun]) -> set[str]:
        """Running runs whose model is not ready for them yet, as the model hosts published it:
        a host is loading it for them, or has not yet served them at all (the flow is still
        on its way to ask, which would otherwise show `running` for a moment first)."""
        needing = {run.id for run in runs if run.is_running and model_of(run)}
        if not needing:
            return set()
        hosts = [host for host in (await gateway.model_hosts(client)).values() if host]
        if not hosts:  # no host publishes: nothing to tell
            return set()
        loading = {
            str(host["loading"].get("task"))
            for host in hosts
            if isinstance(host.get("loading"), dict)
        }
        served = {
            str(load.get("task"))
            for host in hosts
            for load in host.get("loads") or ()
            if isinstance(load, dict)
        }
        return (needing & loading) | (needing - served)

    def _task(
        self,
        session: Session,
        run: QueueRun,
        task_id: int,
        position: int,
        attempt: Attempt,
        loading: set[str],
        plan: QueuePlan | None = None,
    ) -> TaskPublic:
        upstream_ids = list(self.ids.ids_for(run.upstream).values())
        status = run.status
        result = result_of_flow_run(session, run.id) if status is QueueStatus.DONE else None
        progress = progress_of_flow_run(session, run.id) if run.is_running else None
        planned = plan.tasks.get(run.id) if plan and status in ACTIVE else None
        return TaskPublic(
            id=task_id,
            task_type=run.task_type,
            status=status,
            position=position,
            label=run.name,
            created_at=run.submitted_at,
            started_at=attempt.started_at,
            finished_at=attempt.finished_at,
            error=(run.state_message or run.state_name)
            if status in _SHOWS_ERROR
            else attempt.cancel_reason,
            depends_on=upstream_ids[0] if len(upstream_ids) == 1 else (upstream_ids or None),
            result_run_id=result.run_id if result else None,
            result_run_type=result.run_type if result else None,
            config=run.config,
            priority=run.priority,
            # Only running tasks that have reported progress carry the field (else "absent").
            **({"progress": _progress(progress)} if progress is not None else {}),
            **_model_phase(run, loading),
            eta=planned.end if planned else None,
            eta_p90=planned.end_p90 if planned else None,
            expected_start=planned.start if planned and not run.is_running else None,
        )


def _model_phase(run: QueueRun, loading: set[str]) -> dict[str, str]:
    """For a running task that needs a model: which, and whether it is still being loaded."""
    model = model_of(run)
    if not run.is_running or model is None:
        return {}
    return {"model": model, "phase": "loading model" if run.id in loading else "running"}


def _progress(count: ProgressCount) -> Progress:
    return Progress(done=count.done, total=count.total, percent=count.percent)


def _held(waiting: Sequence[Waiting]) -> list[QueueRun]:
    return [w.as_held_run() for w in waiting if w.error is None]


def in_contract_order(tasks: list[TaskPublic]) -> list[TaskPublic]:
    """Active tasks first by position, then finished ones, newest (highest position) first, as
    the original listed them."""
    active = sorted((t for t in tasks if t.status in ACTIVE), key=lambda t: t.position)
    done = sorted((t for t in tasks if t.status not in ACTIVE), key=lambda t: -t.position)
    return active + done
