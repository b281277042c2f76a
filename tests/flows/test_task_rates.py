"""A benchmark records its rate per interval in the domain database: requests, failures,
tokens from the server's `usage`, wall time, model and server. A SIGKILLed run keeps what it
recorded, and its resume adds to it, so the history a queue ETA reads survives crashes."""

from __future__ import annotations

import asyncio

from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterType
from sqlalchemy import Engine, select

from biasbench.db.engine import session_scope
from biasbench.db.models import BenchmarkRun, TaskRate
from flows.benchmark import benchmark
from tests.flows.conftest import MODEL
from tests.support.openai_server import OpenAIServer
from tests.support.processes import kill_benchmark_after


def _rates(engine: Engine) -> list[TaskRate]:
    with session_scope(engine) as session:
        rows = list(session.scalars(select(TaskRate).order_by(TaskRate.id)))
        session.expunge_all()
        return rows


def test_rates_are_recorded_per_interval_and_survive_a_kill_and_resume(
    engine: Engine, small_dataset: int, prefect_server: str
) -> None:
    config = {"model_name": MODEL, "llm": "vllm", "batch_size": 2, "dataset_id": small_dataset}
    with OpenAIServer(models=[MODEL], latency=0.1) as slow_server:
        config["vllm_base_url"] = slow_server.base_url
        kill_benchmark_after(config, prefect_server, engine, TaskRate, rows=2)
    before = _rates(engine)
    with session_scope(engine) as session:
        run = session.scalars(select(BenchmarkRun)).one()
        run_id, planned = run.id, run.planned

    first = before[0]
    assert (first.task_type, first.model_name, first.batch_size) == ("benchmark", MODEL, 2)
    assert first.server == slow_server.base_url.rstrip("/")
    assert first.total == planned and first.seconds > 0
    assert first.prompt_tokens > 0 and first.completion_tokens > 0  # the server's usage
    assert [r.done for r in before] == sorted(r.done for r in before)
    assert sum(r.requests for r in before) == before[-1].done < planned

    with OpenAIServer(models=[MODEL]) as fast_server:
        config["vllm_base_url"] = fast_server.base_url
        asyncio.run(benchmark(**{**config, "resume_run_id": run_id}))
    after = _rates(engine)
    assert [r.id for r in after[: len(before)]] == [r.id for r in before]  # nothing lost
    resumed = after[len(before) :]
    assert resumed and resumed[-1].done == planned
    assert sum(r.requests for r in after) == planned  # each answer counted once
    # Each run's progress links the queue's plan: when it is expected to be done.
    shown = asyncio.run(_progress_descriptions())
    assert shown and all("queue-plan" in text for text in shown), shown


async def _progress_descriptions() -> list[str]:
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"]))
        )
    return [a.description or "" for a in artifacts]
