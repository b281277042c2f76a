"""GET /config: what the original web UI reads first, before it shows the queue page."""

from __future__ import annotations

from importlib.metadata import version

from fastapi import APIRouter
from pydantic import BaseModel, Field

router = APIRouter()


class UiConfig(BaseModel):
    read_only_mode: bool = Field(
        description="Always false: every user may submit and control tasks (QUEUE_API_TOKEN "
        "guards the mutating endpoints instead)."
    )
    version: str


@router.get("/config", response_model=UiConfig)
async def ui_config() -> UiConfig:
    return UiConfig(read_only_mode=False, version=version("biasbench-queue"))
