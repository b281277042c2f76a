"""The queue manager's decisions as one pure function: from a snapshot of the queue to actions.

Keeping every rule here (order, dependencies, cascades, slots) makes them testable without
Prefect, and keeps the manager flow a thin loop: snapshot → decide → apply."""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from biasbench.queue.gpus import Gpu, assign, gpu_of
from biasbench.queue.grouping import ModelGrouping, grouped, model_of
from biasbench.queue.model import (
    HELD_QUEUED,
    HELD_WAITING,
    SKIPPED,
    QueueRun,
    QueueStatus,
    counting_stalls,
)
from biasbench.queue.wiring import Contradiction, Upstream, wire
from biasbench.results import TaskResult


@dataclass(frozen=True)
class Release:
    """Give the run its turn, with the upstream results merged into its parameters."""

    run_id: str
    parameters: dict[str, Any]
    gpu: str | None = None  # the worker of the GPU it goes to (tagged on the run); None: any


@dataclass(frozen=True)
class Requeue:
    """Take a released run back to Queued: the GPU it was sent to has lost its worker."""

    run_id: str
    reason: str


@dataclass(frozen=True)
class Skip:
    """End the run as Skipped (an upstream failed, crashed, was skipped or cannot be found)."""

    run_id: str
    reason: str  # for people: names the upstream
    upstream: str | None = None  # for the queue: the upstream whose end skips it (a retry of
    # that upstream brings this run back); None when no upstream run is to blame (a cycle)


@dataclass(frozen=True)
class Cancel:
    """End the run as Cancelled (an upstream was cancelled)."""

    run_id: str
    reason: str
    upstream: str | None = None  # as for Skip


@dataclass(frozen=True)
class Relabel:
    """Show whether a held run waits for its turn or for an upstream."""

    run_id: str
    name: Literal["Queued", "Waiting"]


Action = Release | Requeue | Skip | Cancel | Relabel


def describe(run: QueueRun) -> str:
    return f"{run.task_type} '{run.name}' ({run.id[:8]})"


def _blocker(
    run: QueueRun, runs: Mapping[str, QueueRun], results: Mapping[str, TaskResult]
) -> Skip | Cancel | None:
    """Why a held run can never run (a terminal action), or None."""
    for upstream_id in run.upstream:
        upstream = runs.get(upstream_id)
        if upstream is not None and not upstream.is_settled:
            continue  # a crash the manager has not judged yet may still be requeued
        if upstream is None:
            return Skip(run.id, f"upstream {upstream_id} does not exist", upstream_id)
        status = upstream.status
        if status is QueueStatus.FAILED:
            return Skip(run.id, f"upstream {describe(upstream)} failed", upstream_id)
        if status is QueueStatus.SKIPPED:
            return Skip(run.id, f"upstream {describe(upstream)} was skipped", upstream_id)
        if status is QueueStatus.DONE and upstream_id not in results:
            return Skip(
                run.id, f"upstream {describe(upstream)} completed without a result", upstream_id
            )
    for upstream_id in run.upstream:
        if runs[upstream_id].status is QueueStatus.CANCELLED:
            return Cancel(
                run.id, f"upstream {describe(runs[upstream_id])} was cancelled", upstream_id
            )
    return None


def _in_cycle(run: QueueRun, runs: Mapping[str, QueueRun]) -> bool:
    seen: set[str] = set()
    stack = list(run.upstream)
    while stack:
        current = stack.pop()
        if current == run.id:
            return True
        if current in seen or current not in runs:
            continue
        seen.add(current)
        stack.extend(runs[current].upstream)
    return False


def wired(
    run: QueueRun, runs: Mapping[str, QueueRun], results: Mapping[str, TaskResult]
) -> dict[str, Any] | Contradiction:
    """The run's parameters with every upstream's result wired in (the whole dict: Prefect's
    update replaces parameters rather than merging them), or why they contradict."""
    upstreams = [Upstream(describe(runs[u]), runs[u].task_type, results[u]) for u in run.upstream]
    return wire(run.task_type, run.parameters, upstreams)


def _upstreams_done(
    run: QueueRun, runs: Mapping[str, QueueRun], results: Mapping[str, TaskResult]
) -> bool:
    return all(
        u in runs and runs[u].status is QueueStatus.DONE and u in results for u in run.upstream
    )


def _ending(runs: Mapping[str, QueueRun], results: Mapping[str, TaskResult]) -> list[Skip | Cancel]:
    """Held runs that can never run: in a cycle, or behind a failed/skipped/cancelled upstream."""
    endings: list[Skip | Cancel] = []
    for run in sorted((r for r in runs.values() if r.is_held), key=lambda r: r.order):
        if _in_cycle(run, runs):
            endings.append(Skip(run.id, "its upstream tasks depend on it (a dependency cycle)"))
        elif (blocker := _blocker(run, runs, results)) is not None:
            endings.append(blocker)
        elif _upstreams_done(run, runs, results) and isinstance(
            contradiction := wired(run, runs, results), Contradiction
        ):
            endings.append(Skip(run.id, f"contradicts its upstream tasks: {contradiction.reason}"))
    return endings


def decide(
    runs: Mapping[str, QueueRun],
    *,
    slots: int,
    accepting: bool,
    results: Mapping[str, TaskResult],
    now: datetime | None = None,
    stalled: Set[str] = frozenset(),
    grouping: ModelGrouping | None = None,
    gpus: Sequence[Gpu] = (),
) -> list[Action]:
    """runs: every task the queue knows of, by id (held ones and their upstreams);
    slots: how many tasks may run at once; accepting: False while paused or stopping;
    results: the results of completed upstreams, by run id; now: the time, for runs that a
    deployment schedule or the CLI made (they are due once their start time has come);
    stalled: runs the manager stopped for making no progress (they count as failed);
    grouping: the models the GPUs have loaded and the bounds within which a ready task for one
    of them may go first (biasbench.queue.grouping); None: strict FIFO;
    gpus: the GPUs with a worker of their own (biasbench.queue.gpus); each release then names a
    free, live one (the one with the task's model first), and a run released to a GPU whose
    worker died goes back to Queued. Empty: one worker serves the pool, releases name no GPU.

    Cascades are resolved in one call: a run skipped here skips its own dependents too."""
    view = counting_stalls(runs, stalled)
    actions: list[Action] = []
    alive = {g.worker for g in gpus if g.alive}
    requeued: set[str] = set()
    for run in sorted(view.values(), key=lambda r: r.order) if gpus else ():
        if run.is_released and (gpu := gpu_of(run.tags)) is not None and gpu not in alive:
            actions.append(Requeue(run.id, f"the worker of GPU {gpu} is gone"))
            view[run.id] = replace(run, state_type="PAUSED", state_name=HELD_QUEUED)
            requeued.add(run.id)
    while endings := _ending(view, results):
        actions.extend(endings)
        for ending in endings:
            name = SKIPPED if isinstance(ending, Skip) else "Cancelled"
            view[ending.run_id] = replace(
                view[ending.run_id], state_type="CANCELLED", state_name=name
            )

    ready: list[QueueRun] = []
    for run in sorted((r for r in view.values() if r.is_held), key=lambda r: r.order):
        if any(view[u].status is not QueueStatus.DONE for u in run.upstream):
            if run.state_name != HELD_WAITING:
                actions.append(Relabel(run.id, HELD_WAITING))
        else:
            ready.append(run)

    # A due run that the CLI, the UI or a schedule made is started by the worker on its own,
    # before anything released later (it is scheduled earlier), and then parks itself in the
    # queue. Releasing a run that comes after it in line would let that run jump it.
    due = [r.order for r in view.values() if r.is_unreleased and r.created <= (now or r.created)]
    if due:
        ready = [r for r in ready if r.order < min(due)]
    free = slots - sum(1 for r in view.values() if r.occupies_slot)
    busy = {gpu_of(r.tags) for r in view.values() if r.occupies_slot}
    free_gpus = [g for g in gpus if g.alive and g.worker not in busy]
    if gpus:
        free = min(free, len(free_gpus))
        # Back in line, released again at the next look (its state was just written); what
        # comes after it waits for that look too, so as not to jump it.
        first_back = min((view[i].order for i in requeued), default=None)
        ready = [r for r in ready if first_back is None or r.order < first_back]
    if grouping is not None and accepting and free > 0:
        when = now or max((r.created for r in ready), default=datetime.min)
        ready = grouped(ready, view, grouping, picks=free, now=when)
    released = ready[: max(free, 0)] if accepting else []
    places = assign([model_of(r) for r in released], free_gpus) if gpus else []
    for index, run in enumerate(released):
        parameters = wired(run, view, results)
        assert not isinstance(parameters, Contradiction)  # such a run ended above
        place = places[index] if places else None
        actions.append(Release(run.id, parameters, place.worker if place else None))
    for run in ready[len(released) :]:
        if run.state_name != HELD_QUEUED:
            actions.append(Relabel(run.id, HELD_QUEUED))
    return actions
