"""The worker of one GPU: `python -m deployments.gpu_worker --slot N`.

Prefect's process worker, named `gpu-<slot>@<host>` and limited to one run at a time, that
starts only the runs the manager released to it (tagged `gpu:<its name>`, see
biasbench.queue.gpus) and runs tagged for no GPU (a plain `prefect deployment run`, which parks
itself in the queue). The stack starts one per GPU with CUDA_VISIBLE_DEVICES set to that GPU and
the socket of that GPU's model host (stack.py); a flow process inherits both through the warm
starter, which hands the launcher's environment to the process it forks.

Its heartbeat is every few seconds, not Prefect's 30: the manager judges a GPU dead from its
worker's last heartbeat and puts what it released to it back in the queue."""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from typing import TYPE_CHECKING

from prefect.workers.process import ProcessWorker

from biasbench.queue.gpus import GPU_TAG, gpu_tag, worker_name
from biasbench.queue.model import GPU_POOL

if TYPE_CHECKING:
    from prefect.client.schemas.responses import WorkerFlowRunResponse

HEARTBEAT_SECONDS = 5


class GpuWorker(ProcessWorker):
    """A process worker that leaves the runs released to other GPUs to their workers."""

    async def _get_scheduled_flow_runs(self) -> list[WorkerFlowRunResponse]:
        runs = await super()._get_scheduled_flow_runs()
        return [r for r in runs if mine(r.flow_run.tags, self.name)]


def mine(tags: list[str], name: str) -> bool:
    sent = [t for t in tags if t.startswith(GPU_TAG)]
    return not sent or gpu_tag(name) in sent


def gpu_worker_name(slot: int) -> str:
    return worker_name(slot, socket.gethostname())


async def serve(slot: int) -> None:
    worker = GpuWorker(
        work_pool_name=GPU_POOL,
        name=gpu_worker_name(slot),
        limit=1,
        heartbeat_interval_seconds=HEARTBEAT_SECONDS,
        create_pool_if_not_found=False,
    )
    await worker.start()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.gpu_worker", description=__doc__)
    parser.add_argument("--slot", type=int, required=True, help="the GPU slot (0, 1, ...)")
    args = parser.parse_args()
    asyncio.run(serve(args.slot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
