"""Submission throughput: `POST /queue/add` from many concurrent clients, next to Prefect's own
bulk route creating the same runs (perf/queue_api_latency.py --throughput).

The /queue API runs as shipped (`python -m queue_api`: an add is answered once it is kept in the
domain database's outbox, and one sender creates what waits in bulk calls) against the stack's
Prefect server. Each round gives it `adds / rounds` adds of a `pool_gen` task from `clients`
concurrent clients (each sends its next add when answered) and waits until the outbox is empty,
and gives the bare route the same number of runs in the shape the API creates (held Paused
"Queued", tag `llm-queue`, parameters `{"n": 10, "upstream": null, "priority": 0}`, a label),
sent from this process through one Prefect client as `POST /deployments/{id}/create_flow_run/bulk`
calls of `clients` runs each, one call at a time, and again with 2 calls at a time (one per API
process of the cluster profile). The order of the three reverses each round, so all see the
same machine and queue (every round adds held runs to it). For the API, tasks/s is printed twice:
answered over the time to answer them, and created in Prefect over the time until the last
exists; for the bare route, made over the time spent making them."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prefect import get_client
from prefect.client.schemas.actions import DeploymentFlowRunCreate
from prefect.states import to_state_create
from sqlalchemy import Engine, create_engine, func, select

from biasbench.db.models import QueueOutbox
from biasbench.queue.gateway import deployment_name, held_state
from biasbench.queue.model import QUEUE_TAG
from perf.queue_api_load import Tally, add_tasks, client_limits, ms, start_api, stop_api

BARE_IN_FLIGHT = (1, 2)  # 2: one call per API process of the cluster profile


@dataclass
class Bare:
    """Prefect's bulk route with `in_flight` calls at a time."""

    calls: list[float] = field(default_factory=list)  # seconds per bulk call
    runs: int = 0
    failed: int = 0  # runs the route did not report CREATED
    seconds: float = 0.0


@dataclass
class Throughput:
    shim: Tally = field(default_factory=Tally)
    shim_seconds: float = 0.0  # until every add was answered
    made_seconds: float = 0.0  # until every answered add existed in Prefect (outbox empty)
    bare: dict[int, Bare] = field(default_factory=dict)  # by calls in flight


def _bare_body(labels: list[str]) -> list[dict[str, object]]:
    return [
        DeploymentFlowRunCreate(
            parameters={"n": 10, "upstream": None, "priority": 0},
            state=to_state_create(held_state()),
            name=label,
            tags=[QUEUE_TAG],
        ).model_dump(mode="json", exclude_unset=True)
        for label in labels
    ]


async def _shim_round(
    base: str, outbox: Engine, labels: list[str], clients: int, result: Throughput
) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=300, limits=client_limits(clients)) as http:
        began = time.perf_counter()
        await add_tasks(http, labels, clients, result.shim)
        result.shim_seconds += time.perf_counter() - began
        # An answered add is kept in the domain database's outbox until its run exists.
        while _in_outbox(outbox):
            await asyncio.sleep(0.05)
        result.made_seconds += time.perf_counter() - began


def _in_outbox(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(QueueOutbox)) or 0


async def _bare_round(labels: list[str], batch: int, in_flight: int, bare: Bare) -> None:
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(deployment_name("pool_gen"))
        batches = [labels[start : start + batch] for start in range(0, len(labels), batch)]

        async def caller() -> None:
            while batches:
                body = _bare_body(batches.pop(0))
                call = time.perf_counter()
                response = await client.request(
                    "POST",
                    "/deployments/{id}/create_flow_run/bulk",  # type: ignore[arg-type]
                    path_params={"id": deployment.id},
                    json=body,
                )
                bare.calls.append(time.perf_counter() - call)
                outcomes = response.json()["results"]
                made = sum(1 for r in outcomes if r["status"] == "CREATED")
                bare.runs += made
                bare.failed += len(outcomes) - made

        began = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(in_flight)))
        bare.seconds += time.perf_counter() - began


def measure(env: dict[str, str], logs: Path, *, adds: int, clients: int, rounds: int) -> Throughput:
    """Starts the /queue API with `env` (the stack's), measures, stops it."""
    result = Throughput()
    base, process = start_api(env, "throughput", logs)
    outbox = create_engine(env["DB_URL"])
    try:
        per_round = adds // rounds
        for r in range(rounds):
            sides = ["shim", *(f"bare-{n}" for n in BARE_IN_FLIGHT)]
            for side in sides if r % 2 == 0 else reversed(sides):
                labels = [f"{side}-{r}-{i}" for i in range(per_round)]
                if side == "shim":
                    asyncio.run(_shim_round(base, outbox, labels, clients, result))
                else:
                    n = int(side.removeprefix("bare-"))
                    bare = result.bare.setdefault(n, Bare())
                    asyncio.run(_bare_round(labels, clients, n, bare))
            print(f"  throughput round {r + 1}/{rounds} done", flush=True)
    finally:
        stop_api(process)
        outbox.dispose()
    return result


def report(result: Throughput, clients: int) -> None:
    shim, adds = result.shim, len(result.shim.adds)
    made = len(shim.task_ids)
    shim_rate = made / result.shim_seconds
    made_rate = made / result.made_seconds
    print(f"\nsubmission throughput, {clients} concurrent clients; milliseconds")
    print(
        f"  POST /queue/add: {made} of {adds} tasks answered ({len(set(shim.task_ids))} unique "
        f"ids) in {result.shim_seconds:.1f} s = {shim_rate:.1f} tasks/s; "
        f"latency p50 {ms(shim.adds, 50):.0f}, p95 {ms(shim.adds, 95):.0f}, "
        f"max {max(shim.adds) * 1000:.0f}; non-2xx {sum(shim.refused.values())}"
    )
    print(
        f"  ... and created in Prefect (outbox empty) in {result.made_seconds:.1f} s "
        f"= {made_rate:.1f} tasks/s"
    )
    for message, count in shim.refused.most_common():
        print(f"    {count} x {message}")
    for in_flight, bare in sorted(result.bare.items()):
        rate = bare.runs / bare.seconds
        print(
            f"  bare bulk route, {clients} runs a call, {in_flight} call(s) at a time: "
            f"{bare.runs} runs made ({bare.failed} not) in {bare.seconds:.1f} s = "
            f"{rate:.1f} runs/s; per call p50 {ms(bare.calls, 50):.0f}, "
            f"p95 {ms(bare.calls, 95):.0f}; ratio created via /queue/add / this "
            f"{made_rate / rate:.2f}"
        )
    print("(goal: /queue/add >= 50 tasks/s)")
