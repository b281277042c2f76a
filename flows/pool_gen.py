"""pool_gen: sample a persona pool from population distributions into a new dataset."""

from __future__ import annotations

import asyncio
from typing import Annotated

from pydantic import Field

from biasbench.datasets import dataset_made_by, ensure_reference_data, store_pool
from biasbench.personas.sampling import choose_seed, sample_pool
from biasbench.results import TaskResult, dataset_result
from flows.queue_turn import Priority, Upstream
from flows.runtime import publish_dataset_report
from flows.task_flow import task_context, task_flow


@task_flow("pool_gen")
async def pool_gen(
    n: Annotated[int, Field(ge=1, le=2_000_000, description="Number of personas.")] = 20_000,
    temperature: Annotated[
        float, Field(ge=0, le=10, description="Flattens each distribution as p^(1-T).")
    ] = 0.1,
    age_from: Annotated[int | None, Field(ge=0, le=120, description="Youngest age.")] = None,
    age_to: Annotated[int | None, Field(ge=0, le=120, description="Oldest age.")] = None,
    seed: Annotated[int | None, Field(description="Same seed, same pool. Random if empty.")] = None,
    upstream: Upstream = None,
    priority: Priority = 0,
) -> TaskResult:
    # An async flow: Prefect's sync engine spends up to 1 s joining its heartbeat thread after
    # the run ends, idle GPU time between tasks. The CPU and database work runs in a thread.
    result, report = await asyncio.to_thread(_make_pool, n, temperature, age_from, age_to, seed)
    await publish_dataset_report(result, report, f"Pool dataset {result.dataset_id}")
    return result


def _make_pool(
    n: int, temperature: float, age_from: int | None, age_to: int | None, seed: int | None
) -> tuple[TaskResult, str | None]:
    """The dataset, and its report for the UI (None if this run had already made it)."""
    ctx = task_context()
    ctx.check(
        "pool_gen",
        {"n": n, "temperature": temperature, "age_from": age_from, "age_to": age_to, "seed": seed},
    )
    with ctx.session() as session:
        if (done := dataset_made_by(session, ctx.flow_run_id)) is not None:
            ctx.logger.info("This flow run already produced dataset %s; returning it.", done.id)
            return dataset_result(session, done.id), None

    seed = seed if seed is not None else choose_seed()
    drafts = sample_pool(n, temperature=temperature, age_from=age_from, age_to=age_to, seed=seed)
    config = {
        "n": n,
        "temperature": temperature,
        "age_from": age_from,
        "age_to": age_to,
        "seed": seed,
    }
    with ctx.session() as session:
        ensure_reference_data(session)
        dataset = store_pool(session, drafts, seed=seed, config=config, flow_run_id=ctx.flow_run_id)
        dataset_id = dataset.id
        result = dataset_result(session, dataset_id)

    ctx.logger.info("Pool dataset %s: %s personas, seed %s.", dataset_id, n, seed)
    report = (
        f"# Pool dataset {dataset_id}\n\n{n:,} personas, temperature {temperature}, seed {seed}."
    )
    return result, report
