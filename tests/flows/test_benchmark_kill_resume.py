"""SIGKILL a benchmark mid-run, resume it: the same result keys as an uninterrupted run."""

from __future__ import annotations

import asyncio

from sqlalchemy import Engine, select

from biasbench.db.engine import session_scope
from biasbench.db.models import BenchmarkResult, BenchmarkRun
from flows.benchmark import benchmark
from tests.flows.conftest import MODEL
from tests.support.openai_server import OpenAIServer
from tests.support.processes import kill_benchmark_after
from tests.support.rows import count, result_keys

CONFIG = {
    "model_name": MODEL,
    "llm": "vllm",
    "batch_size": 2,
    "scale_mode": "random50",
    "dual_fraction": 0.25,
}


def test_killed_benchmark_resumes_to_exactly_one_result_per_key(
    engine: Engine, small_dataset: int, prefect_server: str
) -> None:
    with OpenAIServer(models=[MODEL], latency=0.1) as slow_server:
        config = {**CONFIG, "vllm_base_url": slow_server.base_url, "dataset_id": small_dataset}
        kill_benchmark_after(config, prefect_server, engine, BenchmarkResult, rows=30)
        stored_at_kill = count(engine, BenchmarkResult)

        with session_scope(engine) as session:
            run = session.scalars(select(BenchmarkRun)).one()
            run_id, planned = run.id, run.planned
        assert 30 <= stored_at_kill < planned

        # resume with a fast server: only the missing questions are asked
        with OpenAIServer(models=[MODEL]) as fast_server:
            resumed = asyncio.run(
                benchmark(
                    **{**config, "vllm_base_url": fast_server.base_url, "resume_run_id": run_id}
                )
            )
            asked_on_resume = len(fast_server.requests)
            uninterrupted = asyncio.run(
                benchmark(**{**config, "vllm_base_url": fast_server.base_url})
            )

    keys = result_keys(engine, run_id)
    assert resumed.run_id == run_id
    assert len(keys) == len(set(keys)) == planned
    assert asked_on_resume == planned - stored_at_kill
    assert len(result_keys(engine, uninterrupted.run_id)) == planned
