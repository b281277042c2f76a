"""What every task flow returns: small, typed, JSON-serialisable, readable from any process."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

RunType = Literal["dataset", "attrgen", "benchmark"]


class TaskResult(BaseModel):
    """The id of what a task produced, plus the dataset it belongs to (what dependents need)."""

    run_type: RunType = Field(
        description="What `run_id` points at: a dataset, attrgen or benchmark run."
    )
    run_id: int = Field(description="Id of the produced dataset / attrgen run / benchmark run.")
    dataset_id: int = Field(
        description="Dataset the result belongs to (the new one for generators)."
    )
    summary: dict[str, Any] = Field(
        default_factory=dict, description="Short figures for humans, e.g. the quick analysis."
    )
