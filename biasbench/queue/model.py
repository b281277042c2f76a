"""The queue's vocabulary: task types, the /queue statuses, how Prefect states map onto them
(design.md §4), and a task run as the queue sees it. Every state set is defined here, once.

Pure: Prefect state types are compared as their string values, so this module (and `decide`,
`messages`) never imports Prefect; `gateway` converts at the edge."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from biasbench.errors import STALLED as STALLED_FAILURE


class TaskType(StrEnum):
    """The four kinds of long job; each is a Prefect flow of that name."""

    POOL_GEN = "pool_gen"  # sample a persona pool from population tables
    BALANCED_GEN = "balanced_gen"  # draw a balanced dataset from a pool
    ATTRGEN = "attrgen"  # the LLM writes a name, appearance and biography per persona
    BENCHMARK = "benchmark"  # the LLM rates personas on traits


TASK_TYPES: Final = tuple(TaskType)


class QueueStatus(StrEnum):
    """The statuses of the /queue contract."""

    QUEUED = "queued"  # waiting for its turn (held, released, or pending on the worker)
    WAITING = "waiting"  # waiting for an upstream task to complete
    RUNNING = "running"  # executing (or being cancelled)
    DONE = "done"  # completed; its result is known
    FAILED = "failed"  # failed or crashed
    CANCELLED = "cancelled"  # cancelled by a user, or because an upstream was cancelled
    SKIPPED = "skipped"  # not run because an upstream failed, crashed or was skipped


QUEUE_TAG: Final = (
    "llm-queue"  # every task run carries it; automations and the manager filter on it
)
ENDED_BY_TAG: Final = "ended-by:"  # + the upstream's id: the cascade that skipped/cancelled a run
DEPLOYMENT_NAME: Final = "gpu"  # deployments are "<task type>/gpu" on the GPU work pool
GPU_POOL: Final = "gpu"  # process work pool; its concurrency limit is the number of GPU slots
MANAGER_POOL: Final = "queue-manager"  # the manager's own pool: it never takes a GPU slot
MANAGER_FLOW: Final = "queue-manager"
MANAGER_DEPLOYMENT: Final = f"{MANAGER_FLOW}/default"
STOP_VARIABLE: Final = "biasbench-queue-stop"  # set: the manager ends once no task holds a slot

# The parameters every task flow takes on top of its config: the queue's, not the task's.
QUEUE_PARAMETERS: Final = ("upstream", "priority")
MAX_UPSTREAM: Final = 100  # upstream tasks one task may wait for (duplicates counted once)

# State names the queue uses on top of Prefect's state types.
HELD_QUEUED: Final = "Queued"  # PAUSED: held until the manager gives it its turn
HELD_WAITING: Final = "Waiting"  # PAUSED: held until its upstream tasks have completed
RELEASING: Final = "Releasing"  # PAUSED, for a moment: on its way from held to released
RELEASED: Final = "Released"  # SCHEDULED: released by the manager, the worker may start it
SKIPPED: Final = "Skipped"  # CANCELLED: an upstream failed, crashed or was skipped
STALLED: Final = STALLED_FAILURE.name  # FAILED: no progress for too long (critical)

# Prefect state types (their values), grouped by what they mean for the queue.
FINAL_TYPES: Final = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
UNFINISHED_TYPES: Final = frozenset({"PAUSED", "SCHEDULED", "PENDING", "RUNNING", "CANCELLING"})
EXECUTING_TYPES: Final = frozenset({"PENDING", "RUNNING", "CANCELLING"})  # a process has a slot
MANAGER_ACTIVE_TYPES: Final = frozenset({"SCHEDULED", "PENDING", "RUNNING"})  # a manager is on

# /queue statuses, grouped by what a user may do with them.
FINAL: Final = frozenset(
    {QueueStatus.DONE, QueueStatus.FAILED, QueueStatus.CANCELLED, QueueStatus.SKIPPED}
)
ACTIVE: Final = frozenset({QueueStatus.QUEUED, QueueStatus.WAITING, QueueStatus.RUNNING})
RETRYABLE: Final = frozenset({QueueStatus.FAILED, QueueStatus.CANCELLED, QueueStatus.SKIPPED})
REMOVABLE: Final = frozenset({QueueStatus.QUEUED, QueueStatus.WAITING})


def queue_status(state_type: str, state_name: str | None) -> QueueStatus:
    """Map a Prefect state (type and name) to its /queue status."""
    match state_type:
        case "PAUSED":
            return QueueStatus.WAITING if state_name == HELD_WAITING else QueueStatus.QUEUED
        case "SCHEDULED" | "PENDING":
            return QueueStatus.QUEUED
        case "RUNNING" | "CANCELLING":
            return QueueStatus.RUNNING
        case "COMPLETED":
            return QueueStatus.DONE
        case "FAILED" | "CRASHED":
            return QueueStatus.FAILED
        case "CANCELLED":
            return QueueStatus.SKIPPED if state_name == SKIPPED else QueueStatus.CANCELLED
    raise ValueError(f"unknown Prefect state type {state_type!r}")


@dataclass(frozen=True)
class QueueRun:
    """One task as the queue sees it: a Prefect flow run of a task deployment."""

    id: str  # the Prefect flow-run id
    name: str  # the flow-run name: the task's label
    task_type: TaskType
    state_type: str  # Prefect's state type, e.g. "PAUSED"
    state_name: str | None
    created: datetime  # when it joined the queue: its place in line
    priority: int = 0
    upstream: tuple[str, ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)
    state_message: str | None = None
    state_since: datetime | None = None  # when it entered its current state
    state_id: str | None = None  # that state's id: a write decided on it checks it still holds
    ended_by: str | None = None  # the upstream whose end skipped or cancelled it (a cascade)
    tags: tuple[str, ...] = ()
    submitted_at: datetime | None = None  # when the flow run was created
    started_at: datetime | None = None
    ended_at: datetime | None = None
    run_time: timedelta | None = None  # time spent running, over all attempts

    @property
    def status(self) -> QueueStatus:
        return queue_status(self.state_type, self.state_name)

    @property
    def config(self) -> dict[str, Any]:
        """The task's own parameters, without the queue's."""
        return {k: v for k, v in self.parameters.items() if k not in QUEUE_PARAMETERS}

    @property
    def is_held(self) -> bool:
        """Held by the queue (Queued or Waiting): no worker starts it until the manager says."""
        return self.state_type == "PAUSED"

    @property
    def is_released(self) -> bool:
        return self.state_type == "SCHEDULED" and self.state_name == RELEASED

    @property
    def is_unreleased(self) -> bool:
        """Scheduled by the CLI, the UI or a deployment schedule, not by the manager: the worker
        may start it on its own (it then parks itself in the queue)."""
        return self.state_type == "SCHEDULED" and self.state_name != RELEASED

    def is_scheduled_later(self, now: datetime) -> bool:
        """Made by a deployment schedule or `--start-in` for a time still to come: not queue
        work yet (not listed, not counted as queued, and the queue can drain before it)."""
        return self.is_unreleased and self.created > now

    @property
    def is_running(self) -> bool:
        return self.status is QueueStatus.RUNNING

    @property
    def is_final(self) -> bool:
        return self.state_type in FINAL_TYPES

    @property
    def is_settled(self) -> bool:
        """Final, and the queue has judged it: a Crashed run is not settled until the manager
        has either requeued it (its process was killed from outside; QUEUE_CRASH_RETRIES) or
        failed it for good. Cascades and messages wait for that."""
        return self.is_final and self.state_type != "CRASHED"

    @property
    def occupies_slot(self) -> bool:
        """Released, pending, running or being cancelled: it has (or is about to get) a GPU slot.
        So has a Crashed run the manager has not judged yet: it goes back in its place (first,
        as it ran first) within seconds, and nothing behind it may take its slot meanwhile."""
        return self.is_released or self.state_type in {*EXECUTING_TYPES, "CRASHED"}

    @property
    def order(self) -> tuple[int, datetime, str]:
        """Higher priority first, then submission order."""
        return (-self.priority, self.created, self.id)


def places_in_line(runs: Iterable[QueueRun], now: datetime) -> dict[str, int]:
    """Each unfinished run's place in the queue as the manager orders it: 1 is the task running
    (or released to run) first, then held runs by priority, then joining the queue. A run
    scheduled for later has no place yet."""
    active = [r for r in runs if not r.is_final and not r.is_scheduled_later(now)]
    ranked = sorted(active, key=lambda r: (not r.occupies_slot, r.order))
    return {run.id: place for place, run in enumerate(ranked, 1)}


def counting_stalls(runs: Mapping[str, QueueRun], stalled: Set[str]) -> dict[str, QueueRun]:
    """The runs as the queue judges them: a stalled run that was cancelled to stop its process
    counts as failed (Stalled), so its dependents are skipped, not cancelled. While it is still
    being cancelled it keeps its slot: its process may still be alive."""
    return {
        run_id: replace(run, state_type="FAILED", state_name=STALLED)
        if run_id in stalled and run.state_type == "CANCELLED"
        else run
        for run_id, run in runs.items()
    }


def held_dependents(run_id: str, runs: Mapping[str, QueueRun]) -> set[str]:
    """Held runs that depend on `run_id`, directly or through other held runs: those that are
    skipped or cancelled with it, and those a removal would orphan."""
    found: set[str] = set()
    frontier = {run_id}
    while frontier:
        frontier = {
            r.id
            for r in runs.values()
            if r.is_held and r.id not in found and frontier.intersection(r.upstream)
        }
        found |= frontier
    return found
