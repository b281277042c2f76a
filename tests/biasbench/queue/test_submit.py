"""Submission refuses bad input before anything is created, naming the field."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

from biasbench.errors import InvalidSubmission
from biasbench.queue.model import QUEUE_TAG
from biasbench.queue.submit import SubmitRequest, submit

REPO = Path(__file__).resolve().parents[3]


async def task_runs() -> int:
    """Counted by the server: a read would stop at its page of 200 runs."""
    async with get_client() as client:
        return await client.count_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[QUEUE_TAG]))
        )


@pytest.mark.parametrize(
    ("task_type", "config", "extra", "error", "field"),
    [
        ("translate", {}, {}, InvalidSubmission, "task_type"),
        ("benchmark", {"dataset_id": 1}, {}, InvalidSubmission, "config.model_name"),
        (
            "benchmark",
            {"model_name": "m", "batch_size": 0},
            {},
            InvalidSubmission,
            "config.batch_size",
        ),
        (
            "benchmark",
            {"model_name": "m", "scale_mode": "sideways"},
            {},
            InvalidSubmission,
            "config.scale_mode",
        ),
        (
            "benchmark",
            {"model_name": "m", "vllm_api_key": "secret"},
            {},
            InvalidSubmission,
            "config.vllm_api_key",
        ),
        ("pool_gen", {"upstream": []}, {}, InvalidSubmission, "config.upstream"),
        ("pool_gen", {"population": "mars"}, {}, InvalidSubmission, "config.population"),
        (
            "pool_gen",
            {"exclude": {"origin": ["ATLANTIS"]}},
            {},
            InvalidSubmission,
            "config.exclude",
        ),
        ("pool_gen", {}, {"upstream": ["not-an-id"]}, InvalidSubmission, "upstream"),
        (
            "pool_gen",
            {},
            {"upstream": ["6b93faaf-bfcd-4261-a2a3-64c6b2b2eaa4"]},
            InvalidSubmission,
            "upstream",
        ),
    ],
)
def test_bad_submissions_name_the_field_and_create_nothing(
    deployed: None,
    task_type: str,
    config: dict[str, Any],
    extra: dict[str, Any],
    error: type[Exception],
    field: str,
) -> None:
    async def scenario() -> None:
        before = await task_runs()
        async with get_client() as client:
            with pytest.raises(error, match=rf"^{field}\b"):
                await submit(client, SubmitRequest(task_type, config, **extra))
        assert await task_runs() == before

    asyncio.run(scenario())


def test_a_good_submission_is_held_in_the_queue_with_its_label(deployed: None) -> None:
    async def scenario() -> tuple[str | None, str, dict[str, Any]]:
        async with get_client() as client:
            run_id = await submit(
                client, SubmitRequest("pool_gen", {"n": 10}, label="Pool Generation: 10 personas")
            )
            run = await client.read_flow_run(run_id)  # type: ignore[arg-type]
            await client.delete_flow_run(run.id)  # keep the queue of other tests clean
        return run.state_name, run.name, run.parameters

    state, name, parameters = asyncio.run(scenario())
    assert (state, name) == ("Queued", "Pool Generation: 10 personas")
    assert parameters == {"n": 10, "upstream": None, "priority": 0}
