"""`setup` (run by every `serve`) against the session's real Prefect server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from prefect import get_client

from biasbench.queue.model import GPU_POOL
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
        assert "(2 GPU slot(s))" in said
    finally:
        setup(prefect_server, "--gpu-slots", "1")  # the session's other tests expect one slot
    assert asyncio.run(gpu_pool_limit()) == 1
