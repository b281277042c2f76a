"""Re-running a failed Prefect flow run (the UI's Retry) continues the same run row, and the
result of a finished flow run can be read from the domain database by its flow-run id."""

from __future__ import annotations

import asyncio

import pytest
from prefect import get_client
from prefect.flow_engine import run_flow_async
from prefect.states import Scheduled
from sqlalchemy import Engine

from biasbench.db.engine import session_scope
from biasbench.db.models import BenchmarkRun
from biasbench.results import result_of_flow_run
from flows.benchmark import benchmark
from tests.flows.conftest import MODEL
from tests.support.openai_server import Delay, OpenAIServer, Status
from tests.support.rows import count, result_keys


def test_retrying_a_failed_flow_run_resumes_its_benchmark_run(
    engine: Engine, llm_server: OpenAIServer, small_dataset: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 40 answers, then the GPU runs out of memory: the run fails at once (a critical kind).
    oom = "CUDA out of memory. Tried to allocate 2.00 GiB"
    llm_server.script([Delay(0)] * 40 + [Status(500, message=oom)])
    parameters = {
        "dataset_id": small_dataset,
        "model_name": MODEL,
        "llm": "vllm",
        "vllm_base_url": llm_server.base_url,
        "batch_size": 1,
        "dual_fraction": 0.5,
    }

    async def run_twice() -> tuple[object, object, str]:
        async with get_client() as client:
            flow_run = await client.create_flow_run(benchmark, parameters=parameters)
        first = await run_flow_async(
            benchmark, flow_run=flow_run, parameters=parameters, return_type="state"
        )
        async with get_client() as client:  # what the UI's "Retry" does
            await client.set_flow_run_state(flow_run.id, Scheduled(), force=True)
            flow_run = await client.read_flow_run(flow_run.id)
        second = await run_flow_async(
            benchmark, flow_run=flow_run, parameters=parameters, return_type="state"
        )
        return first, second, str(flow_run.id)

    first, second, flow_run_id = asyncio.run(run_twice())

    assert first.is_failed() and second.is_completed()  # type: ignore[attr-defined]
    assert count(engine, BenchmarkRun) == 1
    with session_scope(engine) as session:
        run = session.query(BenchmarkRun).one()
        found = result_of_flow_run(session, flow_run_id)
    keys = result_keys(engine, run.id)
    assert len(keys) == len(set(keys)) == run.planned
    asked = len(llm_server.requests)
    assert asked == run.planned + 1  # every question once, plus the one that failed
    assert found is not None and (found.run_type, found.run_id) == ("benchmark", run.id)
    assert found.summary["results"] == run.planned
