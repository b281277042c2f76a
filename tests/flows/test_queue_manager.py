"""The queue end to end: real Prefect server, real worker process (--limit 1), real manager."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from itertools import pairwise

import pytest
from prefect import get_client
from prefect.client.schemas.actions import WorkPoolUpdate
from prefect.client.schemas.objects import FlowRun

from biasbench.queue.submit import submit
from tests.support.stack import queue_stack

FAKE = {"llm": "fake", "model_name": "fake-model"}


@pytest.fixture(scope="module")
def stack(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One stack for this module; yields the domain DB URL its task runs write to."""
    home = tmp_path_factory.mktemp("stack")
    db_url = f"sqlite:///{home / 'queue.db'}"
    with queue_stack(prefect_server, db_url, home):
        yield db_url


async def set_paused(paused: bool) -> None:
    async with get_client() as client:
        await client.update_work_pool("gpu", WorkPoolUpdate(is_paused=paused))


async def wait_all_final(ids: list[str], timeout: float = 300) -> list[FlowRun]:
    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while True:
            runs = [await client.read_flow_run(i) for i in ids]  # type: ignore[arg-type]
            if all(r.state and r.state.is_final() for r in runs):
                return runs
            if time.monotonic() > deadline:
                states = {r.name: r.state_name for r in runs}
                raise AssertionError(f"tasks did not finish in {timeout} s: {states}")
            await asyncio.sleep(1)


def test_tasks_run_one_at_a_time_by_priority_then_submission_with_results_wired(stack: str) -> None:
    async def scenario() -> list[FlowRun]:
        await set_paused(True)  # submit everything first, so that the order is only the queue's
        try:
            async with get_client() as client:
                pool = await submit(client, "pool_gen", {"n": 300, "seed": 1}, label="pool")
                balanced = await submit(
                    client, "balanced_gen", {"n": 6}, upstream=[pool], label="balanced"
                )
                attrs = await submit(
                    client, "attrgen", {**FAKE, "batch_size": 4}, upstream=[balanced], label="attrs"
                )
                bench_in = await submit(
                    client,
                    "benchmark",
                    {**FAKE, "scale_mode": "in"},
                    upstream=[attrs],
                    label="bench-in",
                )
                bench_rev = await submit(
                    client,
                    "benchmark",
                    {**FAKE, "scale_mode": "rev"},
                    upstream=[attrs],
                    label="bench-rev",
                )
                later = await submit(client, "pool_gen", {"n": 50, "seed": 2}, label="later")
                urgent = await submit(
                    client, "pool_gen", {"n": 50, "seed": 3}, priority=5, label="urgent"
                )
        finally:
            await set_paused(False)
        return await wait_all_final([pool, balanced, attrs, bench_in, bench_rev, later, urgent])

    runs = asyncio.run(scenario())

    assert {r.name: r.state_name for r in runs} == {r.name: "Completed" for r in runs}
    by_start = sorted(runs, key=lambda r: r.start_time)  # type: ignore[arg-type, return-value]
    assert [r.name for r in by_start] == [
        "urgent",
        "pool",
        "balanced",
        "attrs",
        "bench-in",
        "bench-rev",
        "later",
    ]
    for before, after in pairwise(by_start):
        assert before.end_time <= after.start_time, f"{before.name} overlaps {after.name}"  # type: ignore[operator]
    named = {r.name: r for r in runs}
    assert named["balanced"].parameters["dataset_id"] is not None
    assert named["attrs"].parameters["dataset_id"] == named["bench-in"].parameters["dataset_id"]
    assert (
        named["bench-in"].parameters["attrgen_run_id"]
        == named["bench-rev"].parameters["attrgen_run_id"]
    )
    assert isinstance(named["bench-in"].parameters["attrgen_run_id"], int)
