"""Six independent tasks on one GPU, then on two (a worker per GPU), in one run: the speed-up.

    .venv/bin/python perf/two_gpus.py            # --tasks 6 --slow 0.3; about 5 min

Starts the whole stack (`deployments.stack.Stack`) on its own port and a fresh SQLite server
database, first with `gpus=["0"]` (one plain worker, as `serve`), then again on the same
database with `gpus=["0", "1"]` (as `serve --gpus 0,1`: one worker per GPU, the manager tags
each release with its GPU). Each time the same tasks are submitted while the pool is paused,
then the pool is resumed: benchmarks on the fake LLM, 4 personas x 15 traits = 60 questions at
`--slow` seconds each, so the work is sleeping, as on a GPU, and two tasks at once do not fight
over this machine's 2 cores.

Makespan = resuming the pool → the last task's end (server timestamp). Speed-up = one GPU's
makespan / two GPUs' makespan; the goal is >= 1.8 (issue 16). Also printed: how many tasks each
GPU worker ran, and whether two tasks ever overlapped on one worker (they must not)."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from uuid import UUID

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefect import get_client
from prefect.client.schemas.objects import FlowRun

from biasbench.queue import gateway
from biasbench.queue.submit import SubmitRequest, submit
from deployments.setup import PROJECT_DIR
from deployments.stack import Stack
from flows.balanced_gen import balanced_gen
from flows.pool_gen import pool_gen

PORT = 4262


async def live_gpus(expected: int) -> None:
    """Until the manager sees `expected` per-GPU workers alive (none with one GPU)."""
    async with get_client() as client:
        for _ in range(120):
            if len([g for g in await gateway.read_gpus(client) if g.alive]) == expected:
                return
            await asyncio.sleep(0.5)
    raise RuntimeError(f"the manager does not see {expected} live GPU(s)")


async def run_tasks(dataset_id: int, tasks: int, slow: float) -> tuple[float, list[FlowRun]]:
    config = {
        "llm": "fake",
        "model_name": f"fake-model@slow={slow}",
        "batch_size": 1,
        "dataset_id": dataset_id,
    }
    async with get_client() as client:
        await gateway.set_pool_paused(client, True)
        ids = [
            await submit(client, SubmitRequest("benchmark", config, label=f"task-{i}"))
            for i in range(tasks)
        ]
        resumed = datetime.now(UTC)
        await gateway.set_pool_paused(client, False)
        while True:
            runs = [await client.read_flow_run(UUID(i)) for i in ids]
            if all(r.state is not None and r.state.is_final() for r in runs):
                break
            await asyncio.sleep(0.5)
    not_done = [r.name for r in runs if r.state_name != "Completed"]
    if not_done:
        raise RuntimeError(f"tasks did not complete: {not_done}")
    ended = max(r.end_time for r in runs if r.end_time is not None)
    return (ended - resumed).total_seconds(), runs


def overlaps(runs: list[FlowRun]) -> int:
    """Pairs of runs that overlapped on one worker (GPU)."""
    found = 0
    for worker in {str(r.labels.get("prefect.worker.name")) for r in runs}:
        spans = sorted(
            (r.start_time, r.end_time)
            for r in runs
            if str(r.labels.get("prefect.worker.name")) == worker
        )
        found += sum(1 for (_, end), (start, _) in pairwise(spans) if end and start and end > start)
    return found


def measure(gpus: list[str], logs: Path, tasks: int, slow: float) -> tuple[float, list[FlowRun]]:
    with Stack(gpus=gpus, port=PORT, api_port=None, logs=logs):
        # The dataset, made by the real flows in this process against the stack's server.
        pool = asyncio.run(pool_gen(n=100, seed=3))
        dataset = asyncio.run(balanced_gen(dataset_id=pool.dataset_id, n=4, seed=1))
        asyncio.run(live_gpus(len(gpus) if len(gpus) > 1 else 0))
        return asyncio.run(run_tasks(dataset.dataset_id, tasks, slow))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=6, help="independent tasks (default 6)")
    parser.add_argument("--slow", type=float, default=0.3, help="seconds per LLM answer")
    args = parser.parse_args()
    os.environ.pop("PREFECT_API_URL", None)
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    with tempfile.TemporaryDirectory(prefix="two-gpus-") as tmp:
        os.environ["PREFECT_API_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{tmp}/prefect.db"
        os.environ["DB_URL"] = f"sqlite:///{tmp}/biasbench.db"
        logs = PROJECT_DIR / ".stack-logs" / "two-gpus"
        shutil.rmtree(logs, ignore_errors=True)
        started = time.monotonic()
        one, one_runs = measure(["0"], logs / "one", args.tasks, args.slow)
        two, two_runs = measure(["0", "1"], logs / "two", args.tasks, args.slow)
        took = time.monotonic() - started
    per_worker = Counter(str(r.labels.get("prefect.worker.name")) for r in two_runs)
    print(f"{args.tasks} independent benchmarks, 60 answers at {args.slow} s each")
    print("| GPUs | makespan | tasks per worker | overlaps on one GPU |")
    print("|---:|---:|---|---:|")
    one_workers = Counter(str(r.labels.get("prefect.worker.name")) for r in one_runs)
    print(f"| 1 | {one:.1f} s | {dict(one_workers)} | {overlaps(one_runs)} |")
    print(f"| 2 | {two:.1f} s | {dict(per_worker)} | {overlaps(two_runs)} |")
    print(f"\nspeed-up with two GPUs: {one / two:.2f} x (goal >= 1.8)")
    print(f"({took:.0f} s in all; logs in {logs})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
