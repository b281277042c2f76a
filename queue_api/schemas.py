"""The /queue contract (../shared/original-system.md §1): every field name and type that existing
clients read or send. Extensions old clients can ignore: `depends_on` may be a list, `priority`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Ids are stored as 64-bit integers; anything larger cannot name a task.
TaskIdValue = Annotated[int, Field(ge=1, le=2**63 - 1)]
TaskTypeName = Literal["benchmark", "attrgen", "pool_gen", "balanced_gen"]
Status = Literal["queued", "waiting", "running", "done", "failed", "cancelled", "skipped"]


class AddTask(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_type: TaskTypeName
    config: dict[str, Any] = Field(default_factory=dict)
    label: str | None = Field(default=None, max_length=200)
    depends_on: TaskIdValue | list[TaskIdValue] | None = Field(
        default=None, description="Upstream task id, or several (an extension)."
    )
    priority: int = Field(
        default=0, ge=-1_000_000, le=1_000_000, description="Higher runs first (an extension)."
    )


class Added(BaseModel):
    task_id: int


class Progress(BaseModel):
    done: int
    total: int
    percent: float


class QueueTask(BaseModel):
    id: int
    task_type: TaskTypeName
    status: Status
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


class Ok(BaseModel):
    ok: bool
    message: str


class Stats(BaseModel):
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
