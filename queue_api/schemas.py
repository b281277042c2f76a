"""The /queue contract (../shared/original-system.md §1): every field name and type that existing
clients read or send, named by role. Extensions old clients can ignore: `depends_on` may be a
list, `priority`. Task types and statuses are the domain's enums."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from biasbench.queue.model import QueueStatus, TaskType

# Ids are stored as 64-bit integers; anything larger cannot name a task.
TaskIdValue = Annotated[int, Field(ge=1, le=2**63 - 1)]


class TaskSubmit(BaseModel):
    """POST /queue/add."""

    model_config = ConfigDict(extra="forbid")

    task_type: TaskType
    config: dict[str, Any] = Field(default_factory=dict)
    label: str | None = Field(default=None, max_length=200)
    depends_on: TaskIdValue | list[TaskIdValue] | None = Field(
        default=None, description="Upstream task id, or several (an extension)."
    )
    priority: int = Field(
        default=0, ge=-1_000_000, le=1_000_000, description="Higher runs first (an extension)."
    )

    @property
    def upstream_ids(self) -> list[int]:
        if self.depends_on is None:
            return []
        return self.depends_on if isinstance(self.depends_on, list) else [self.depends_on]


class TaskCreated(BaseModel):
    task_id: int


class Progress(BaseModel):
    done: int
    total: int
    percent: float


class TaskPublic(BaseModel):
    """A task as GET /queue and GET /queue/{id} show it."""

    id: int
    task_type: TaskType
    status: QueueStatus
    position: int
    label: str | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    depends_on: int | list[int] | None
    result_run_id: int | None
    result_run_type: str | None
    config: dict[str, Any]
    priority: int = 0
    progress: Progress | None = None
    blocked_by: str | None = Field(
        default=None,
        description="Why a queued task cannot start now, when it is not just its turn: the "
        "queue is paused, or no GPU worker is alive (an extension).",
    )


class Message(BaseModel):
    """The answer of every control endpoint."""

    ok: bool
    message: str


class QueueStats(BaseModel):
    total: int
    queued: int
    waiting: int
    running: int
    done: int
    failed: int
    cancelled: int
    skipped: int
    executor_running: bool
    executor_paused: bool
    gpu_workers_alive: int = Field(
        description="GPU workers with recent heartbeats; with none, no queued task can start "
        "(an extension)."
    )
