"""Task types, the /queue statuses and how Prefect states map onto them (design.md §4)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, Literal, get_args

from biasbench.errors import STALLED as STALLED_FAILURE

TaskType = Literal["pool_gen", "balanced_gen", "attrgen", "benchmark"]
TASK_TYPES: tuple[TaskType, ...] = get_args(TaskType)

QUEUE_TAG = "llm-queue"  # every task run carries it; automations and the manager filter on it
DEPLOYMENT_NAME = "gpu"  # deployments are "<task type>/gpu" on the GPU work pool
GPU_POOL = "gpu"  # process work pool; its concurrency limit is the number of GPU slots
MANAGER_POOL = "queue-manager"  # the manager's own pool: it never takes a GPU slot
MANAGER_FLOW = "queue-manager"
MANAGER_DEPLOYMENT = f"{MANAGER_FLOW}/default"

# State names the queue uses on top of Prefect's state types.
HELD_QUEUED: Final = "Queued"  # PAUSED: held until the manager gives it its turn
HELD_WAITING: Final = "Waiting"  # PAUSED: held until its upstream tasks have completed
RELEASING = "Releasing"  # PAUSED, for a moment: on its way from held to released
RELEASED = "Released"  # SCHEDULED: released by the manager, the worker may start it
SKIPPED = "Skipped"  # CANCELLED: an upstream failed, crashed or was skipped
STALLED = STALLED_FAILURE.name  # FAILED: no progress for too long (critical)


class QueueStatus(StrEnum):
    """The statuses of the /queue contract."""

    QUEUED = "queued"  # waiting for its turn (held, released, or pending on the worker)
    WAITING = "waiting"  # waiting for an upstream task to complete
    RUNNING = "running"  # executing (or being cancelled)
    DONE = "done"  # completed; its result is known
    FAILED = "failed"  # failed or crashed
    CANCELLED = "cancelled"  # cancelled by a user, or because an upstream was cancelled
    SKIPPED = "skipped"  # not run because an upstream failed, crashed or was skipped


TERMINAL = frozenset(
    {QueueStatus.DONE, QueueStatus.FAILED, QueueStatus.CANCELLED, QueueStatus.SKIPPED}
)


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
    state_type: str
    state_name: str | None
    created: datetime
    priority: int = 0
    upstream: tuple[str, ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> QueueStatus:
        return queue_status(self.state_type, self.state_name)

    @property
    def held(self) -> bool:
        return self.state_type == "PAUSED"

    @property
    def unreleased(self) -> bool:
        """Scheduled by the CLI, the UI or a deployment schedule, not by the manager: the worker
        may start it on its own (it then parks itself in the queue)."""
        return self.state_type == "SCHEDULED" and self.state_name != RELEASED

    @property
    def occupies_slot(self) -> bool:
        """Released, pending, running or being cancelled: it has (or is about to get) a GPU slot."""
        return (
            self.state_type == "SCHEDULED" and self.state_name == RELEASED
        ) or self.state_type in {
            "PENDING",
            "RUNNING",
            "CANCELLING",
        }

    @property
    def order(self) -> tuple[int, datetime, str]:
        """Higher priority first, then submission order."""
        return (-self.priority, self.created, self.id)


# Which result of an upstream becomes which parameter of a dependent (design.md §3.5).
RESULT_WIRING: dict[tuple[TaskType, TaskType], dict[str, str]] = {
    ("pool_gen", "balanced_gen"): {"dataset_id": "dataset_id"},
    ("balanced_gen", "attrgen"): {"dataset_id": "dataset_id"},
    ("balanced_gen", "benchmark"): {"dataset_id": "dataset_id"},
    ("pool_gen", "attrgen"): {"dataset_id": "dataset_id"},
    ("pool_gen", "benchmark"): {"dataset_id": "dataset_id"},
    ("attrgen", "benchmark"): {"attrgen_run_id": "run_id", "dataset_id": "dataset_id"},
}
