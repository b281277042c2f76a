"""The GPUs as the manager reads them from Prefect (gateway.read_gpus): the per-GPU workers'
heartbeats, sent for real to the session's server, and the model their host published in its
Prefect variable. A pool of its own, so other tests' workers do not count."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

from prefect import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectNotFound
from prefect.variables import Variable

from biasbench.queue import gateway
from biasbench.queue.gpus import Gpu

POOL = "gpu-read-test"
HOST = "Test.Box"  # the variable names it in lowercase (Prefect allows no dots or capitals)


async def _read(*workers: str, model_on_1: str | None = None, later: float = 0) -> list[Gpu]:
    async with get_client() as client:
        with contextlib.suppress(ObjectNotFound):
            await client.delete_work_pool(POOL)  # and its workers
        await client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
        for worker in workers:
            await client.send_worker_heartbeat(POOL, worker)
        if model_on_1:
            await Variable.aset("model-host-test-box-1", {"model": model_on_1}, overwrite=True)
        else:
            await Variable.aunset("model-host-test-box-1")
        now = datetime.now(UTC) + timedelta(seconds=later)
        return await gateway.read_gpus(client, now=now, pool=POOL)


def test_live_per_gpu_workers_are_the_gpus_with_their_hosts_models() -> None:
    gpus = asyncio.run(_read(f"gpu-0@{HOST}", f"gpu-1@{HOST}", model_on_1="model-a"))
    assert gpus == [Gpu(f"gpu-0@{HOST}"), Gpu(f"gpu-1@{HOST}", model="model-a")]


def test_a_plain_worker_or_no_live_one_means_no_gpu_routing() -> None:
    assert asyncio.run(_read(f"gpu-0@{HOST}", f"gpu@{HOST}")) == []
    assert asyncio.run(_read(f"gpu-0@{HOST}", f"gpu-1@{HOST}", later=60)) == []
