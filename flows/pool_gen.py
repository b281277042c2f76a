"""pool_gen: sample a persona pool from population distributions into a new dataset."""

from __future__ import annotations

import asyncio
from typing import Annotated

from pydantic import Field

from biasbench.datasets import dataset_made_by, ensure_reference_data, store_pool
from biasbench.personas.sampling import choose_seed
from biasbench.population.compare import compare_pool
from biasbench.population.pool import draw_pool
from biasbench.population.profiles import DEFAULT_POPULATION, load_profile
from biasbench.population.report import PoolRequest, pool_report
from biasbench.results import TaskResult, dataset_result
from flows.queue_turn import Priority, Upstream
from flows.runtime import publish_dataset_report
from flows.task_flow import task_context, task_flow


@task_flow("pool_gen")
async def pool_gen(
    n: Annotated[int, Field(ge=1, le=2_000_000, description="Number of personas.")] = 20_000,
    population: Annotated[
        str,
        Field(
            description="Population profile: de (people in Germany, the original study's) "
            "or world (illustrative, every table assumed).",
            max_length=32,
        ),
    ] = DEFAULT_POPULATION,
    temperature: Annotated[
        float,
        Field(ge=0, le=10, description="Flattens each step's distribution as p^(1-T); 0 keeps it."),
    ] = 0.0,
    temperatures: Annotated[
        dict[str, float] | None,
        Field(description="Per-step temperature (de), e.g. {'origin': 0.5}; others: temperature."),
    ] = None,
    exclude: Annotated[
        dict[str, list[str]] | None,
        Field(description="Per-step values never drawn (de), e.g. {'sexuality': ['bisexual']}."),
    ] = None,
    age_from: Annotated[int | None, Field(ge=0, le=120, description="Youngest age.")] = None,
    age_to: Annotated[int | None, Field(ge=0, le=120, description="Oldest age.")] = None,
    seed: Annotated[int | None, Field(description="Same seed, same pool. Random if empty.")] = None,
    upstream: Upstream = None,
    priority: Priority = 0,
) -> TaskResult:
    # An async flow: Prefect's sync engine spends up to 1 s joining its heartbeat thread after
    # the run ends, idle GPU time between tasks. The CPU and database work runs in a thread.
    request = PoolRequest(
        population=population,
        n=n,
        temperature=temperature,
        temperatures=temperatures,
        exclude=exclude,
        age_from=age_from,
        age_to=age_to,
        seed=seed,
    )
    result, report = await asyncio.to_thread(_make_pool, request)
    await publish_dataset_report(result, report, f"Pool dataset {result.dataset_id}")
    return result


def _make_pool(request: PoolRequest) -> tuple[TaskResult, str | None]:
    """The dataset, and its report for the UI (None if this run had already made it)."""
    ctx = task_context()
    ctx.check("pool_gen", request.parameters())
    with ctx.session() as session:
        if (done := dataset_made_by(session, ctx.flow_run_id)) is not None:
            ctx.logger.info("This flow run already produced dataset %s; returning it.", done.id)
            return dataset_result(session, done.id), None

    request = request.with_seed(request.seed if request.seed is not None else choose_seed())
    assert request.seed is not None
    profile = load_profile(request.population)
    drafts = draw_pool(
        request.population,
        request.n,
        temperature=request.temperature,
        age_from=request.age_from,
        age_to=request.age_to,
        seed=request.seed,
        temperatures=request.temperatures,
        exclude=request.exclude,
    )
    comparison = compare_pool(profile, drafts, request.age_from, request.age_to)
    with ctx.session() as session:
        ensure_reference_data(session)
        dataset = store_pool(
            session,
            drafts,
            seed=request.seed,
            config=request.parameters(),
            flow_run_id=ctx.flow_run_id,
            population=profile,
            report={"marginals": comparison.as_json()},
        )
        dataset_id = dataset.id
        result = dataset_result(session, dataset_id)

    ctx.logger.info(
        "Pool dataset %s: %s personas from population %s %s, seed %s.",
        dataset_id,
        request.n,
        profile.name,
        profile.version,
        request.seed,
    )
    return result, pool_report(dataset_id, request, profile, comparison)
