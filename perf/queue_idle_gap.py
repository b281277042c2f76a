"""Idle gap between consecutive queued tasks, next to Prefect's default worker in the same run.

    .venv/bin/python perf/queue_idle_gap.py            # --tasks 8

Starts the whole stack (`deployments.stack.Stack`) on its own port and a fresh SQLite server
database, then measures two executors on the same Prefect server and the same flows:

- **this queue**: tasks submitted through `biasbench.queue.submit`, released one at a time by
  the queue manager and run by the stack's GPU worker. Half are independent `pool_gen` runs, the
  rest a pool_gen → balanced_gen → attrgen → benchmark chain on the fake LLM, so the manager's
  release latency for dependents is measured too.
- **Prefect default**: the same `pool_gen` flow deployed to a second pool (concurrency 1, so it is
  just as serial) and served by `prefect worker start --pool <pool>` with no flags (queries every
  10 s). Its runs are created as released, so no queue manager is involved.

Idle gap = a task's terminal state → the next task's Running state (both timestamps written by
the Prefect server). Every figure is a median over all consecutive pairs."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from uuid import UUID

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import itertools

from prefect import get_client
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.objects import State, StateType
from prefect.states import Scheduled

from biasbench.queue.gateway import deployment_name
from biasbench.queue.model import RELEASED
from biasbench.queue.submit import SubmitRequest, submit
from deployments.process_tree import stop_process_group
from deployments.setup import PROJECT_DIR
from deployments.stack import Stack

PORT = 4260
DEFAULT_POOL = "idle-gap-default"
FAKE = {"llm": "fake", "model_name": "fake-model"}
SMALL_POOL = {"n": 300, "seed": 1}


@dataclass
class Timeline:
    """Server timestamps of one run's states."""

    run_id: UUID
    released: datetime | None
    pending: datetime
    running: datetime
    end: datetime
    upstream: UUID | None = None


def _first(states: list[State], kind: StateType, name: str | None = None) -> datetime | None:
    stamps = [s.timestamp for s in states if s.type == kind and (name is None or s.name == name)]
    return min(stamps) if stamps else None


async def timeline(client: PrefectClient, run_id: UUID, upstream: UUID | None) -> Timeline:
    states = await client.read_flow_run_states(run_id)
    final = [s.timestamp for s in states if s.is_final()]
    pending, running = _first(states, StateType.PENDING), _first(states, StateType.RUNNING)
    if not final or pending is None or running is None:
        raise RuntimeError(f"run {run_id} did not finish: {[s.name for s in states]}")
    released = _first(states, StateType.SCHEDULED, RELEASED)
    return Timeline(run_id, released, pending, running, max(final), upstream)


async def wait_final(client: PrefectClient, run_ids: list[UUID], timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [await client.read_flow_run(run_id) for run_id in run_ids]
        if all(r.state is not None and r.state.is_final() for r in runs):
            failed = [r.name for r in runs if r.state and not r.state.is_completed()]
            if failed:
                raise RuntimeError(f"runs did not complete: {failed}")
            return
        await asyncio.sleep(1)
    raise TimeoutError("the runs did not finish in time")


async def measure_queue(tasks: int) -> list[Timeline]:
    """Submit through the queue; return the timelines in execution order."""
    async with get_client() as client:
        submitted: list[tuple[str, str | None]] = []
        for _ in range(tasks - tasks // 2):
            submitted.append((await submit(client, SubmitRequest("pool_gen", SMALL_POOL)), None))
        upstream: str | None = None
        chain = [
            ("pool_gen", SMALL_POOL),
            ("balanced_gen", {"n": 20, "seed": 2}),
            ("attrgen", FAKE),
            ("benchmark", {**FAKE, "batch_size": 32}),
        ]
        for task_type, config in chain[: tasks // 2]:
            run_id = await submit(
                client, SubmitRequest(task_type, config, upstream=[upstream] if upstream else ())
            )
            submitted.append((run_id, upstream))
            upstream = run_id
        await wait_final(client, [UUID(run_id) for run_id, _ in submitted])
        lines = [
            await timeline(client, UUID(run_id), UUID(up) if up else None)
            for run_id, up in submitted
        ]
    return sorted(lines, key=lambda t: t.running)


async def _deploy_default(client: PrefectClient) -> UUID:
    """pool_gen, deployed exactly like the queue's, on a pool served by a default worker."""
    await client.create_work_pool(
        WorkPoolCreate(name=DEFAULT_POOL, type="process", concurrency_limit=1), overwrite=True
    )
    queued = await client.read_deployment_by_name(deployment_name("pool_gen"))
    return await client.create_deployment(
        flow_id=queued.flow_id,
        name=DEFAULT_POOL,
        entrypoint=queued.entrypoint,
        work_pool_name=DEFAULT_POOL,
        pull_steps=queued.pull_steps,
        parameter_openapi_schema=queued.parameter_openapi_schema,
    )


async def measure_default(tasks: int, env: dict[str, str], logs: Path) -> list[Timeline]:
    async with get_client() as client:
        deployment_id = await _deploy_default(client)
    default_env = {k: v for k, v in env.items() if not k.startswith("PREFECT_WORKER_")}
    with (logs / "default-worker.log").open("ab") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", DEFAULT_POOL],
            cwd=PROJECT_DIR,
            env=default_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        async with get_client() as client:
            runs = [
                await client.create_flow_run_from_deployment(
                    deployment_id, parameters=SMALL_POOL, state=Scheduled(name=RELEASED)
                )
                for _ in range(tasks)
            ]
            await wait_final(client, [r.id for r in runs])
            lines = [await timeline(client, r.id, None) for r in runs]
    finally:
        stop_process_group(worker)
    return sorted(lines, key=lambda t: t.running)


def gaps(lines: list[Timeline]) -> list[float]:
    overlaps = [b for a, b in itertools.pairwise(lines) if b.running < a.end]
    if overlaps:
        raise RuntimeError(f"execution intervals overlap: {[t.run_id for t in overlaps]}")
    return [(b.running - a.end).total_seconds() for a, b in itertools.pairwise(lines)]


def _stage(values: list[float]) -> str:
    return f"{statistics.median(values):5.2f} s (min {min(values):.2f}, max {max(values):.2f})"


def report(ours: list[Timeline], default: list[Timeline]) -> str:
    ours_gaps, default_gaps = gaps(ours), gaps(default)
    by_id = {t.run_id: t for t in ours}
    release = [
        (t.released - by_id[t.upstream].end).total_seconds()
        for t in ours
        if t.upstream is not None and t.released is not None
    ]
    pairs = list(itertools.pairwise(ours))
    to_released = [(b.released - a.end).total_seconds() for a, b in pairs if b.released]
    to_pending = [(b.pending - a.end).total_seconds() for a, b in pairs]
    to_running = [(b.running - b.pending).total_seconds() for _, b in pairs]
    ratio = statistics.median(ours_gaps) / statistics.median(default_gaps)
    return "\n".join(
        [
            f"idle gap, end of one task -> Running of the next ({len(ours_gaps)} and "
            f"{len(default_gaps)} gaps)",
            f"  this queue (manager + gpu worker)   {_stage(ours_gaps)}",
            f"  Prefect default worker, same flow   {_stage(default_gaps)}",
            f"  ratio                               {ratio:5.2f}   (targets: <= 3 s, <= 0.4)",
            "",
            "this queue, by stage",
            f"  upstream end -> dependent released  {_stage(release)}   (target: <= 1 s)",
            f"  end -> next released (manager)      {_stage(to_released)}",
            f"  end -> next Pending (pickup)        {_stage(to_pending)}",
            f"  Pending -> Running (process start)  {_stage(to_running)}",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=8, help="tasks per executor (>= 4)")
    args = parser.parse_args()
    os.environ.pop("PREFECT_API_URL", None)
    with tempfile.TemporaryDirectory(prefix="idle-gap-") as tmp:
        # A fresh server and domain database, so earlier runs cannot slow this one down.
        os.environ["PREFECT_API_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{tmp}/prefect.db"
        os.environ["DB_URL"] = f"sqlite:///{tmp}/biasbench.db"
        logs = PROJECT_DIR / ".stack-logs" / "idle-gap"
        shutil.rmtree(logs, ignore_errors=True)
        with Stack(port=PORT, logs=logs) as stack:
            started = time.monotonic()
            ours = asyncio.run(measure_queue(args.tasks))
            default = asyncio.run(measure_default(args.tasks, stack.env, logs))
            took = time.monotonic() - started
        print(report(ours, default))
        print(f"\n({2 * args.tasks} tasks measured in {took:.0f} s; logs in {logs})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
