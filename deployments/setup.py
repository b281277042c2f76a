"""Idempotent Prefect set-up: the work pools with their limits, then prefect.yaml's deployments."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from prefect import get_client
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.exceptions import ObjectNotFound
from prefect.settings import get_current_settings

from biasbench.queue.model import GPU_POOL, MANAGER_POOL
from deployments.automations import ensure_watchdogs
from deployments.manager_revival import ensure_manager_revival
from deployments.notifications import ensure_notifications
from deployments.settings import DeploymentSettings

PROJECT_DIR = Path(__file__).resolve().parents[1]


async def ensure_pool(name: str, *, concurrency_limit: int | None, description: str) -> int:
    """Create the process work pool (limit 1 unless given), or set the limit when one is given:
    a set-up made for several GPUs stays as it is until its user asks for a change. Never
    touches the paused flag. Returns the pool's limit."""
    async with get_client() as client:
        try:
            pool = await client.read_work_pool(name)
        except ObjectNotFound:
            limit = concurrency_limit or 1
            await client.create_work_pool(
                WorkPoolCreate(
                    name=name, type="process", concurrency_limit=limit, description=description
                )
            )
            return limit
        if concurrency_limit is not None and pool.concurrency_limit != concurrency_limit:
            await client.update_work_pool(name, WorkPoolUpdate(concurrency_limit=concurrency_limit))
            return concurrency_limit
        return pool.concurrency_limit or 1


def deploy_all() -> None:
    """`prefect deploy --all` for prefect.yaml; re-applying an unchanged file changes nothing.
    Nothing of this machine (checkout, interpreter) goes into the deployments: any host's
    worker runs them with its own copy of the code (README "Scaling out")."""
    env = dict(os.environ)
    # The server this process talks to, also when it was set in-process (the stack does that).
    if api_url := get_current_settings().api.url:
        env["PREFECT_API_URL"] = api_url
    subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
        cwd=PROJECT_DIR,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


@dataclass(frozen=True)
class SetUp:
    gpu_slots: int  # the GPU pool's limit, as given or as it was
    channels: list[str]  # the notification channels that are on


def setup(gpu_slots: int | None = None) -> SetUp:
    """gpu_slots: None keeps the GPU pool's limit (1 for a new pool)."""
    slots = asyncio.run(
        ensure_pool(
            GPU_POOL, concurrency_limit=gpu_slots, description="Task flows, one per GPU slot."
        )
    )
    asyncio.run(ensure_pool(MANAGER_POOL, concurrency_limit=1, description="The queue manager."))
    deploy_all()
    return SetUp(slots, asyncio.run(ensure_automations(DeploymentSettings())))


async def ensure_automations(settings: DeploymentSettings) -> list[str]:
    """The watchdogs (and their work on runs left silent, e.g. while the server was down), and
    the notification channels with their automations; returns the channels that are on."""
    timeout = settings.queue_heartbeat_timeout
    async with get_client() as client:
        for run in await ensure_watchdogs(client, timeout):
            said = f"Run {run.name} was {run.state_name}, silent for {timeout} s or more: finished."
            print(said, file=sys.stderr)
        await ensure_manager_revival(client)
        return await ensure_notifications(client, settings)
