"""Model grouping through the real manager: tasks submitted interleaved (A B A B A B) run
grouped by the model the GPU has loaded, no task is overtaken more than QUEUE_MAX_OVERTAKE
times. Real processes: the queue stack's
manager and GPU worker, a model host, and a test model server per model that it starts and
stops on each swap. The order is read from the Prefect flow runs' start times."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from prefect import get_client
from prefect.client.schemas.objects import FlowRun

from biasbench.llm.model_host import ModelHostClient
from biasbench.queue import control, gateway
from biasbench.queue.grouping import ModelGrouping, grouped
from biasbench.queue.model import QueueRun
from biasbench.queue.submit import SubmitRequest, submit
from deployments.model_host_channel import variable_name
from flows.balanced_gen import balanced_gen
from flows.pool_gen import pool_gen
from tests.support.model_host import model_entry, model_host, write_catalogue
from tests.support.stack import queue_stack
from tests.support.waiting import wait_final

A, B = "grouping-model-a", "grouping-model-b"
SUBMITTED = [A, B, A, B, A, B]
# Each task asks 2 questions at 1 s each: time for the host's publish of a swap to reach the
# manager before the task ends and the manager picks the next one.
SERVER_OPTIONS = "--latency 1"
SLOT = 9  # a slot of its own: no other test's host publishes under this name
MAX_OVERTAKE = 1  # small enough that the bound shows in six tasks


def rule_order(models: list[str], max_overtake: int) -> list[str]:
    """The order the pure rule (biasbench.queue.grouping) gives with one GPU: one release at
    a time, the GPU holding the model of the task that ran last."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    queue = {
        f"t{i}": QueueRun(
            id=f"t{i}",
            name=f"t{i}",
            task_type="attrgen",
            state_type="PAUSED",
            state_name="Queued",
            created=t0 + timedelta(seconds=i),
            parameters={"model_name": m, "llm": "vllm"},
        )
        for i, m in enumerate(models)
    }
    order: list[str] = []
    started: list[QueueRun] = []
    now = t0 + timedelta(minutes=1)
    while queue:
        loaded = frozenset(order[-1:])
        rule = ModelGrouping(loaded=loaded, max_overtake=max_overtake, started=tuple(started))
        ready = sorted(queue.values(), key=lambda r: r.order)
        first = grouped(ready, queue, rule, picks=1, now=now)[0]
        order.append(first.parameters["model_name"])
        started.append(replace(queue.pop(first.id), started_at=now))
        now += timedelta(seconds=5)
    return order


def switches(models: list[str]) -> int:
    return sum(a != b for a, b in pairwise(models))


def overtakes(runs: list[FlowRun]) -> list[int]:
    """For each run (in submission order): how many runs submitted after it started before it."""
    return [
        sum(1 for later in runs[i + 1 :] if later.start_time < run.start_time)  # type: ignore[operator]
        for i, run in enumerate(runs)
    ]


@pytest.fixture
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("grouping")


def test_interleaved_tasks_run_grouped_by_the_loaded_model_within_the_overtake_bound(
    home: Path,
    prefect_server: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # By hand: A is loaded; B1 may be passed once (by A2), then not again, so B1 B2 follow; A3
    # was never passed, so B3 may go first. (FIFO, QUEUE_MODEL_GROUPING=false, is the rule's
    # own test: a second stack here would cost two minutes.)
    submitted, expected = SUBMITTED, [A, A, B, B, B, A]
    assert rule_order(submitted, MAX_OVERTAKE) == expected  # the rule, as computed by hand
    db_url = f"sqlite:///{home / 'queue.db'}"
    monkeypatch.setenv("DB_URL", db_url)  # the stack's database, where the tasks read
    pool = asyncio.run(pool_gen(n=60, seed=3))
    dataset = asyncio.run(balanced_gen(dataset_id=pool.dataset_id, n=2, seed=1)).dataset_id
    entries = [model_entry(m, options=SERVER_OPTIONS) for m in (A, B)]
    catalogue = write_catalogue(home / "models.toml", *entries)
    with model_host(home, catalogue, publish_to=prefect_server, slot=SLOT) as (_, socket, _s):
        env = {
            "MODEL_CATALOGUE": str(catalogue),
            "BIASBENCH_MODEL_HOSTS": socket,
            "QUEUE_MODEL_GROUPING": "true",
            "QUEUE_MAX_OVERTAKE": str(MAX_OVERTAKE),
        }
        asyncio.run(load_first_model(socket))
        with queue_stack(prefect_server, db_url, home, extra_env=env):
            runs = asyncio.run(run_interleaved(dataset, submitted))

    assert [r.state_name for r in runs] == ["Completed"] * len(runs)
    by_start = sorted(runs, key=lambda r: r.start_time)  # type: ignore[arg-type, return-value]
    ran = [r.parameters["model_name"] for r in by_start]
    host_log = (home / "model-host.log").read_text()[-3000:]
    assert ran == expected, f"the host's log (what it loaded and published):\n{host_log}"
    assert switches(ran) < switches(submitted)
    # ... but not as few as without the bound (A A A B B B): the bound held B1 back.
    assert switches(ran) > switches(rule_order(submitted, len(submitted)))
    assert max(overtakes(runs)) <= MAX_OVERTAKE


async def load_first_model(socket: str) -> None:
    """The GPU has A loaded, and the manager can know it, before the first task is picked."""
    async with ModelHostClient(socket).model(A):
        pass
    async with get_client() as client:
        for _ in range(120):
            host = (await gateway.model_hosts(client)).get(variable_name(SLOT), {})
            if host.get("model") == A:
                return
            await asyncio.sleep(0.5)
    raise AssertionError(f"the host did not publish {A} as loaded")


async def run_interleaved(dataset: int, submitted: list[str]) -> list[FlowRun]:
    """Submit while the queue is paused, so the order is only the manager's; then resume and
    wait. The runs come back in submission order."""
    async with get_client() as client:
        await control.set_paused(client, True)
        try:
            ids = [
                await submit(
                    client,
                    SubmitRequest(
                        "attrgen",
                        {"dataset_id": dataset, "model_name": m, "llm": "vllm", "batch_size": 1},
                        label=f"{m[-1]}{i}",
                    ),
                )
                for i, m in enumerate(submitted)
            ]
        finally:
            await control.set_paused(client, False)
    return await wait_final(ids, timeout=240)
