"""Idempotent Prefect set-up: the work pools with their limits, then prefect.yaml's deployments."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prefect import get_client
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.exceptions import ObjectNotFound
from prefect.settings import get_current_settings
from prefect.variables import Variable

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


GPUS_VARIABLE = "biasbench-gpus"  # the GPUs the stack serves, as `--gpus` last gave them


@dataclass(frozen=True)
class SetUp:
    gpu_slots: int  # the GPU pool's limit, as given or as it was
    channels: list[str]  # the notification channels that are on
    gpus: list[str] = field(default_factory=list)  # the GPUs (CUDA device ids), one per slot


def gpus_for_slots(slots: int) -> list[str]:
    """`--gpu-slots N`: the first N GPUs of CUDA_VISIBLE_DEVICES, else GPUs 0..N-1."""
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    visible = [d for d in visible if d]
    return [visible[i] if i < len(visible) else str(i) for i in range(slots)]


def setup(gpu_slots: int | None = None, gpus: Sequence[str] | None = None) -> SetUp:
    """gpus: the GPUs to serve (the pool's limit is their number), kept in a Prefect variable
    so that a later start without them keeps them; gpu_slots N: GPUs 0..N-1; neither: as set
    before (one GPU for a new set-up)."""
    if gpus is None and gpu_slots is not None:
        gpus = gpus_for_slots(gpu_slots)
    if gpus is not None:
        Variable.set(GPUS_VARIABLE, list(gpus), overwrite=True)
    slots = asyncio.run(
        ensure_pool(
            GPU_POOL,
            concurrency_limit=len(gpus) if gpus is not None else None,
            description="Task flows, one per GPU slot.",
        )
    )
    if gpus is None:
        kept = Variable.get(GPUS_VARIABLE, default=None)
        kept_list: list[str] = [str(g) for g in kept] if isinstance(kept, list) else []
        gpus = kept_list if len(kept_list) == slots else gpus_for_slots(slots)
    asyncio.run(ensure_pool(MANAGER_POOL, concurrency_limit=1, description="The queue manager."))
    deploy_all()
    return SetUp(slots, asyncio.run(ensure_automations(DeploymentSettings())), list(gpus))


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
