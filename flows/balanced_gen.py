"""balanced_gen: draw a dataset from a pool, with marginals over the axes as even as it allows."""

from __future__ import annotations

import asyncio
from typing import Annotated

from pydantic import Field

from biasbench.datasets import (
    balancing_rows,
    dataset_made_by,
    population_of,
    require_dataset,
    store_balanced,
)
from biasbench.personas.balancing import DEFAULT_AXES, select_balanced
from biasbench.population.report import balanced_report
from biasbench.results import TaskResult, dataset_result
from flows.queue_turn import Priority, Upstream
from flows.runtime import publish_dataset_report
from flows.task_flow import given_dataset, task_context, task_flow


@task_flow("balanced_gen")
async def balanced_gen(
    dataset_id: Annotated[
        int | None,
        Field(description="The pool to draw from; injected when it comes from pool_gen."),
    ] = None,
    n: Annotated[int, Field(ge=1, description="Number of personas to draw.")] = 500,
    seed: Annotated[int, Field(description="Same seed, same draw.")] = 42,
    axes: Annotated[
        list[str] | None,
        Field(description="Attributes to balance (default: " + ", ".join(DEFAULT_AXES) + ")."),
    ] = None,
    upstream: Upstream = None,
    priority: Priority = 0,
) -> TaskResult:
    # Async for the reason given in pool_gen; the work itself runs in a thread.
    result, report = await asyncio.to_thread(_draw, dataset_id, n, seed, axes)
    await publish_dataset_report(
        result, report, f"Balanced dataset {result.dataset_id}: achieved marginals"
    )
    return result


def _draw(
    dataset_id: int | None, n: int, seed: int, axes: list[str] | None
) -> tuple[TaskResult, str | None]:
    """The dataset, and its marginals report for the UI (None if this run had already made it)."""
    ctx = task_context()
    ctx.check("balanced_gen", {"dataset_id": dataset_id, "n": n, "seed": seed, "axes": axes})
    dataset_id = given_dataset(dataset_id, "the pool dataset to draw from")
    chosen_axes = list(axes) if axes else list(DEFAULT_AXES)
    with ctx.session() as session:
        if (done := dataset_made_by(session, ctx.flow_run_id)) is not None:
            ctx.logger.info("This flow run already produced dataset %s; returning it.", done.id)
            return dataset_result(session, done.id), None
        source = require_dataset(session, dataset_id)
        selection = select_balanced(
            balancing_rows(session, dataset_id), n, seed=seed, axes=chosen_axes
        )
        config = {"dataset_id": dataset_id, "n": n, "seed": seed, "axes": chosen_axes}
        dataset = store_balanced(
            session, source, selection, seed=seed, config=config, flow_run_id=ctx.flow_run_id
        )
        new_id = dataset.id
        result = dataset_result(session, new_id)
        provenance = population_of(session, dataset)

    ctx.logger.info(
        "Balanced dataset %s: %s personas from pool %s; max deviation from even per axis: %s.",
        new_id,
        n,
        dataset_id,
        selection.max_deviation,
    )
    report = balanced_report(new_id, dataset_id, selection.marginals, selection.targets, provenance)
    return result, report
