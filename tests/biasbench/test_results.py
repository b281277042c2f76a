"""A task's result and progress, read from the domain database by its flow-run id: what the
queue manager and the REST shim see of a task that runs in another process. Rows come from the
real flows; the fake LLM answers (its model-name suffixes make it fail on cue)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterType,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.states import State
from sqlalchemy import Engine, select

from biasbench.db.engine import session_scope
from biasbench.db.models import BenchmarkResult, BenchmarkRun, Dataset, Failure
from biasbench.personas.balancing import DEFAULT_AXES
from biasbench.queue.progress import ProgressCount
from biasbench.results import TaskResult, progress_of_flow_run, result_of_flow_run
from flows.attrgen import attrgen
from flows.balanced_gen import balanced_gen
from flows.benchmark import benchmark
from flows.pool_gen import pool_gen
from tests.support.rows import count

FAKE = {"llm": "fake", "model_name": "fake-model", "batch_size": 4}


def run(flow: Any, **parameters: Any) -> tuple[State, str]:
    """The flow run's final state, and its id."""
    state = asyncio.run(flow(**parameters, return_state=True))
    return state, str(state.state_details.flow_run_id)


def read_back(engine: Engine, flow_run_id: str) -> TaskResult | None:
    with session_scope(engine) as session:
        return result_of_flow_run(session, flow_run_id)


def progress(engine: Engine, flow_run_id: str) -> ProgressCount | None:
    with session_scope(engine) as session:
        return progress_of_flow_run(session, flow_run_id)


def artifact_progress(flow_run_id: str) -> ProgressCount | None:
    """What the run's progress artifact shows a person, in numbers."""

    async def read() -> str | None:
        async with get_client() as client:
            artifacts = await client.read_artifacts(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"])),
            )
        assert len(artifacts) == 1
        return artifacts[0].description

    shown = re.match(r"^([\d,]+) of ([\d,]+) ", asyncio.run(read()) or "")
    assert shown is not None
    done, total = (int(g.replace(",", "")) for g in shown.groups())
    return ProgressCount(done, total)


@pytest.fixture
def dataset() -> int:
    """Six personas drawn from a pool of 200."""
    pool = asyncio.run(pool_gen(n=200, seed=5))
    return asyncio.run(balanced_gen(dataset_id=pool.dataset_id, n=6, seed=1)).dataset_id


# --- results ---------------------------------------------------------------------------------


def test_generators_return_what_the_database_gives_back_summary_included(engine: Engine) -> None:
    pool_state, pool_run = run(pool_gen, n=300, seed=4)
    pool = pool_state.result()
    draw_state, draw_run = run(balanced_gen, dataset_id=pool.dataset_id, n=12, seed=3)
    draw = draw_state.result()

    assert read_back(engine, pool_run) == pool
    assert pool.summary == {"personas": 300, "seed": 4, "population": "de 2024.1"}
    assert read_back(engine, draw_run) == draw
    with session_scope(engine) as session:
        deviation = session.get_one(Dataset, draw.dataset_id).report["max_deviation"]
    assert set(deviation) == set(DEFAULT_AXES)
    assert draw.summary == {
        "personas": 12,
        "population": "de 2024.1",
        "source_dataset_id": pool.dataset_id,
        "pool_dataset_id": pool.dataset_id,
        "max_deviation": deviation,
    }


def test_attrgen_and_benchmark_return_what_the_database_gives_back(
    engine: Engine, dataset: int
) -> None:
    names_state, names_run = run(attrgen, dataset_id=dataset, **FAKE)
    names = names_state.result()
    ratings_state, ratings_run = run(
        benchmark, dataset_id=dataset, attrgen_run_id=names.run_id, dual_fraction=0.5, **FAKE
    )
    ratings = ratings_state.result()

    assert read_back(engine, names_run) == names
    assert names.summary == {"personas": 6, "with_attributes": 6, "missing": 0}
    assert read_back(engine, ratings_run) == ratings
    assert ratings.summary["results"] == ratings.summary["planned"] > 0


# --- progress --------------------------------------------------------------------------------


def test_a_finished_benchmark_has_done_what_it_planned_as_its_artifact_shows(
    engine: Engine, dataset: int
) -> None:
    state, flow_run_id = run(benchmark, dataset_id=dataset, dual_fraction=0.5, **FAKE)

    planned = state.result().summary["planned"]
    assert progress(engine, flow_run_id) == ProgressCount(planned, planned)
    assert artifact_progress(flow_run_id) == ProgressCount(planned, planned)


def test_a_benchmark_that_died_midway_counts_the_answers_it_stored(
    engine: Engine, dataset: int
) -> None:
    state, flow_run_id = run(
        benchmark,
        dataset_id=dataset,
        **{**FAKE, "model_name": "fake-model@fail-after=10", "batch_size": 1},
    )

    assert state.is_failed()
    with session_scope(engine) as session:
        planned = session.scalars(select(BenchmarkRun.planned)).one()
    assert count(engine, BenchmarkResult) == 10 < planned
    assert progress(engine, flow_run_id) == ProgressCount(10, planned)


def test_unanswered_questions_are_not_done_as_a_resumed_run_asks_them_again(
    engine: Engine, dataset: int
) -> None:
    state, flow_run_id = run(
        benchmark,
        dataset_id=dataset,
        max_attempts=1,
        **{**FAKE, "model_name": "fake-model@garbage"},
    )

    planned = state.result().summary["planned"]
    assert count(engine, Failure, run_type="benchmark") == planned
    assert progress(engine, flow_run_id) == ProgressCount(0, planned)
    assert artifact_progress(flow_run_id) == ProgressCount(0, planned)


def test_attrgen_counts_personas_with_attributes_out_of_the_dataset(
    engine: Engine, dataset: int
) -> None:
    _, named = run(attrgen, dataset_id=dataset, **FAKE)
    _, unnamed = run(
        attrgen, dataset_id=dataset, max_attempts=1, **{**FAKE, "model_name": "fake-model@garbage"}
    )
    failed, partly = run(
        attrgen,
        dataset_id=dataset,
        **{**FAKE, "model_name": "fake-model@fail-after=4", "batch_size": 1},
    )

    assert progress(engine, named) == artifact_progress(named) == ProgressCount(6, 6)
    assert progress(engine, unnamed) == artifact_progress(unnamed) == ProgressCount(0, 6)
    assert failed.is_failed() and progress(engine, partly) == ProgressCount(4, 6)


def test_no_progress_before_a_task_has_opened_its_run(engine: Engine, dataset: int) -> None:
    _, generator = run(pool_gen, n=20, seed=1)
    unreachable, never_opened = run(
        benchmark, dataset_id=dataset, **{**FAKE, "model_name": "fake-model@unreachable"}
    )

    assert progress(engine, "00000000-0000-0000-0000-000000000000") is None
    assert progress(engine, generator) is None
    assert unreachable.is_failed() and count(engine, BenchmarkRun) == 0
    assert progress(engine, never_opened) is None
