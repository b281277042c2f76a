"""`setup` (run by every `serve`) against the session's real Prefect server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from prefect import get_client

from biasbench.queue.model import GPU_POOL
from deployments.setup import GPUS_VARIABLE
from tests.support.stack import REPO


def setup(prefect_server: str, *options: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "deployments", "setup", *options],
        cwd=REPO,
        env={**os.environ, "PREFECT_API_URL": prefect_server},
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


async def gpu_pool_limit() -> int | None:
    async with get_client() as client:
        return (await client.read_work_pool(GPU_POOL)).concurrency_limit


def test_setup_without_gpu_slots_keeps_a_multi_gpu_pool_as_its_user_set_it(
    prefect_server: str,
) -> None:
    try:
        setup(prefect_server, "--gpu-slots", "2")
        said = setup(prefect_server)  # as `make serve` does, with no --gpu-slots

        assert asyncio.run(gpu_pool_limit()) == 2
        assert "(2 GPU slot(s): GPU 0, 1)" in said
    finally:
        setup(prefect_server, "--gpu-slots", "1")  # the session's other tests expect one slot
    assert asyncio.run(gpu_pool_limit()) == 1


async def kept_gpus() -> object:
    async with get_client() as client:
        variable = await client.read_variable_by_name(GPUS_VARIABLE)
        return variable.value if variable else None


def test_gpus_are_kept_across_a_restart_without_the_option(prefect_server: str) -> None:
    try:
        said = setup(prefect_server, "--gpus", "0,1")
        assert "(2 GPU slot(s): GPU 0, 1)" in said
        said = setup(prefect_server)  # a later `make serve`, with no --gpus

        assert "(2 GPU slot(s): GPU 0, 1)" in said
        assert asyncio.run(gpu_pool_limit()) == 2
        assert asyncio.run(kept_gpus()) == ["0", "1"]
    finally:
        setup(prefect_server, "--gpu-slots", "1")
    assert asyncio.run(kept_gpus()) == ["0"]
    assert asyncio.run(gpu_pool_limit()) == 1
