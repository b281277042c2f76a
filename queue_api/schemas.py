"""The /queue contract (../shared/original-system.md §1): every field name and type that existing
clients read or send, named by role. Extensions old clients can ignore: `depends_on` may be a
list, `priority`. Task types and statuses are the domain's enums."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from biasbench.errors import InvalidSubmission
from biasbench.queue.model import MAX_UPSTREAM, QueueStatus, TaskType
from biasbench.queue.payload import check_size, check_value

# Ids are stored as 64-bit integers; anything larger cannot name a task.
TaskIdValue = Annotated[int, Field(ge=1, le=2**63 - 1)]


class TaskSubmit(BaseModel):
    """POST /queue/add."""

    model_config = ConfigDict(extra="forbid")

    task_type: TaskType
    config: dict[str, Any] = Field(default_factory=dict)
    label: str | None = Field(default=None, max_length=200)
    depends_on: TaskIdValue | list[TaskIdValue] | None = Field(
        default=None,
        description=f"Upstream task id, or several (an extension; at most {MAX_UPSTREAM}).",
    )
    priority: int = Field(
        default=0, ge=-1_000_000, le=1_000_000, description="Higher runs first (an extension)."
    )

    @field_validator("depends_on", "priority", mode="before")
    @classmethod
    def _no_booleans(cls, value: Any) -> Any:
        """JSON true/false would pass as 1/0."""
        items = value if isinstance(value, list) else [value]
        if any(isinstance(item, bool) for item in items):
            raise ValueError("true/false is not a number")
        return value

    @field_validator("depends_on", mode="before")
    @classmethod
    def _few_upstreams(cls, value: Any) -> Any:
        """Capped before anything is looked up: duplicates count once."""
        if isinstance(value, list):
            try:
                distinct = len(set(value))
            except TypeError:  # unhashable items: their type check refuses them
                return value
            if distinct > MAX_UPSTREAM:
                raise ValueError(f"at most {MAX_UPSTREAM} upstream tasks, got {distinct}")
        return value

    @field_validator("config")
    @classmethod
    def _travels_as_json(cls, config: dict[str, Any]) -> dict[str, Any]:
        return _payload(config, "config")

    @field_validator("label")
    @classmethod
    def _valid_text(cls, label: str | None) -> str | None:
        return _payload(label, "label")

    @property
    def upstream_ids(self) -> list[int]:
        """Distinct, in the order given."""
        if self.depends_on is None:
            return []
        ids = self.depends_on if isinstance(self.depends_on, list) else [self.depends_on]
        return list(dict.fromkeys(ids))


def _payload(value: Any, field: str) -> Any:
    """What Prefect cannot store is a 422 here, as a bad type is (biasbench.queue.payload)."""
    try:
        check_value(value, field)
        if isinstance(value, dict):
            check_size(value, field)
    except InvalidSubmission as exc:
        raise ValueError(str(exc)) from None
    return value


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
    model: str | None = Field(
        default=None,
        description="The model a running task gets from its GPU's model host (an extension).",
    )
    phase: Literal["loading model", "running"] | None = Field(
        default=None,
        description="A running task's phase: its model is being loaded, or it runs (an extension).",
    )
    blocked_by: str | None = Field(
        default=None,
        description="Why a queued task cannot start now, when it is not just its turn: the "
        "queue is paused, or no GPU worker is alive (an extension).",
    )
    eta: datetime | None = Field(
        default=None,
        description="When a queued or running task is expected to end, median (an extension; "
        "from measured rates, see the README's ETA section).",
    )
    eta_p90: datetime | None = Field(
        default=None, description="It ends before this with 90 % probability (an extension)."
    )
    expected_start: datetime | None = Field(
        default=None, description="When a queued task is expected to start (an extension)."
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
    gpu_models: dict[str, str | None] = Field(
        default_factory=dict,
        description="Each GPU's model host and the model it has loaded (none: null), when "
        "model hosts run (an extension).",
    )
    scheduled: int = Field(
        0,
        description="Task runs a deployment schedule made for later: not counted in `queued` "
        "or `total` until their time comes (an extension).",
    )
    drain_eta: datetime | None = Field(
        default=None,
        description="When every queued and running task is expected to have ended (median; "
        "an extension). None when nothing is queued or running.",
    )
