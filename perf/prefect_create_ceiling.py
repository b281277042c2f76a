"""How fast the Prefect server on SQLite creates queue runs for 50 concurrent callers, bare
(no /queue API), with and without the API's one-writer transport.

    .venv/bin/python perf/prefect_create_ceiling.py    # --tasks 200 --clients 50 --pairs 2

Starts a `prefect server start` of its own on a fresh SQLite database (as the stack does, late
runs off) and sets the deployments up (no worker, no manager; the GPU pool paused). Then
`--pairs` times: `--tasks` `create_flow_run_from_deployment` calls (the shim's one write per add)
from `--clients` coroutines sharing one Prefect client, first through `queue_api.writes`' one
writer, then through the client's own transport; the runs are deleted after each batch. Prints
creates/s and the p50 / p95 / max latency of each batch. About 2 minutes per pair."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefect import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from biasbench.queue import control, gateway
from biasbench.queue.model import HELD_QUEUED, QUEUE_TAG, TaskType
from queue_api.writes import one_writer_transport
from tests.support.prefect_server import prefect_server
from tests.support.stack import REPO


async def batch(one_writer: bool, tasks: int, clients: int) -> str:
    settings = {"transport": one_writer_transport(max_wait=600)} if one_writer else None
    async with get_client(httpx_settings=settings) as client:
        deployment = await gateway.task_deployment(client, TaskType.POOL_GEN)
        latencies: list[float] = []
        todo = iter(range(tasks))

        async def caller() -> None:
            for i in todo:
                began = time.perf_counter()
                await client.create_flow_run_from_deployment(
                    deployment.id,
                    parameters={"n": 10, "upstream": None, "priority": 0},
                    state=gateway.held_state(HELD_QUEUED),
                    name=f"ceiling-{i}",
                    tags=[QUEUE_TAG],
                )
                latencies.append(time.perf_counter() - began)

        began = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(clients)))
        took = time.perf_counter() - began
        for run in await gateway.unfinished_runs(client):
            await gateway.delete_run(client, run.id)
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    name = "one writer" if one_writer else "free"
    return (
        f"{name:10} {tasks / took:6.1f}/s  p50 {q[49]:6.2f} s  p95 {q[94]:6.2f} s  "
        f"max {max(latencies):6.2f} s"
    )


async def pause() -> None:
    async with get_client() as client:
        await control.set_paused(client, True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--pairs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="create-ceiling-") as tmp:
        late_runs_off = {"PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false"}
        with prefect_server(Path(tmp) / "prefect", late_runs_off) as server:
            server.start()
            env = {**os.environ, "PREFECT_API_URL": server.api_url}
            setup = [sys.executable, "-m", "deployments", "setup"]
            subprocess.run(setup, cwd=REPO, env=env, check=True, capture_output=True)
            with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
                asyncio.run(pause())
                for _ in range(args.pairs):
                    for one_writer in (True, False):
                        print(asyncio.run(batch(one_writer, args.tasks, args.clients)), flush=True)
    print(f"1-min load at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
