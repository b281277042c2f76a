"""A task's result, read from the domain database by its flow-run id: what the queue manager and
the REST shim see of a task that ran in another process. Rows come from the real flows (the fake
LLM answers)."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import Engine

from biasbench.db.engine import session_scope
from biasbench.db.models import Dataset
from biasbench.personas.balancing import DEFAULT_AXES
from biasbench.results import TaskResult, result_of_flow_run
from flows.attrgen import attrgen
from flows.balanced_gen import balanced_gen
from flows.benchmark import benchmark
from flows.pool_gen import pool_gen

FAKE = {"llm": "fake", "model_name": "fake-model", "batch_size": 4}


def run(flow: Any, **parameters: Any) -> tuple[TaskResult, str]:
    """What the flow returned, and the id of the flow run that returned it."""
    state = asyncio.run(flow(**parameters, return_state=True))
    return state.result(), str(state.state_details.flow_run_id)


def read_back(engine: Engine, flow_run_id: str) -> TaskResult | None:
    with session_scope(engine) as session:
        return result_of_flow_run(session, flow_run_id)


def test_generators_return_what_the_database_gives_back_summary_included(engine: Engine) -> None:
    pool, pool_run = run(pool_gen, n=300, seed=4)
    draw, draw_run = run(balanced_gen, dataset_id=pool.dataset_id, n=12, seed=3)

    assert read_back(engine, pool_run) == pool
    assert pool.summary == {"personas": 300, "seed": 4}
    assert read_back(engine, draw_run) == draw
    with session_scope(engine) as session:
        deviation = session.get_one(Dataset, draw.dataset_id).report["max_deviation"]
    assert set(deviation) == set(DEFAULT_AXES)
    assert draw.summary == {
        "personas": 12,
        "source_dataset_id": pool.dataset_id,
        "max_deviation": deviation,
    }


def test_attrgen_and_benchmark_return_what_the_database_gives_back(engine: Engine) -> None:
    pool = asyncio.run(pool_gen(n=200, seed=5))
    dataset_id = asyncio.run(balanced_gen(dataset_id=pool.dataset_id, n=6, seed=1)).dataset_id

    names, names_run = run(attrgen, dataset_id=dataset_id, **FAKE)
    ratings, ratings_run = run(
        benchmark, dataset_id=dataset_id, attrgen_run_id=names.run_id, dual_fraction=0.5, **FAKE
    )

    assert read_back(engine, names_run) == names
    assert names.summary == {"personas": 6, "with_attributes": 6, "missing": 0}
    assert read_back(engine, ratings_run) == ratings
    assert ratings.summary["results"] == ratings.summary["planned"] > 0
