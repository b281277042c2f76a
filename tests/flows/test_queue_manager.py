"""The queue end to end: real Prefect server, real worker process (--limit 1), real manager."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import pairwise

import pytest
from prefect import get_client
from prefect.client.schemas.actions import WorkPoolUpdate
from prefect.client.schemas.objects import FlowRun
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter
from prefect.states import Cancelling

from biasbench.db.engine import ready_engine, session_scope
from biasbench.queue import control
from biasbench.queue.submit import SubmitRequest, submit
from biasbench.results import result_of_flow_run
from tests.support.stack import RunningStack, queue_stack
from tests.support.waiting import wait_final

FAKE = {"llm": "fake", "model_name": "fake-model"}


@pytest.fixture(scope="module")
def stack(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """One stack (worker + manager processes) for this module."""
    home = tmp_path_factory.mktemp("stack")
    with queue_stack(prefect_server, f"sqlite:///{home / 'queue.db'}", home) as running:
        yield running


@pytest.fixture(autouse=True)
def queue_unpaused_after_each_test(stack: RunningStack) -> Iterator[None]:
    """A test that fails while the queue is paused must not stall the tests after it."""
    yield
    asyncio.run(set_paused(False))


async def set_paused(paused: bool) -> None:
    async with get_client() as client:
        await client.update_work_pool("gpu", WorkPoolUpdate(is_paused=paused))


async def queue_events_since(since: datetime) -> list[str]:
    """The queue-level events (started, paused, resumed, drained, ...) in the order they
    occurred; they reach the server's event store a moment after they were emitted."""
    async with get_client() as client:
        page = await client.read_events(
            EventFilter(
                occurred=EventOccurredFilter(since=since),
                event=EventNameFilter(prefix=["biasbench.queue."]),
            ),
            limit=50,
        )
    return [e.event for e in sorted(page.events, key=lambda e: e.occurred)]


async def wait_for_event(name: str, since: datetime, timeout: float = 60) -> list[str]:
    """The queue events since `since`, once `name` is among them. (A bound, not a timing: 15 s
    was too short for the manager's event on a loaded machine half as fast as usual.)"""
    deadline = time.monotonic() + timeout
    while name not in (events := await queue_events_since(since)):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {name} event within {timeout} s; saw {events}")
        await asyncio.sleep(0.5)
    return events


def test_twelve_tasks_run_one_at_a_time_by_priority_then_submission_with_results_wired(
    stack: RunningStack,
) -> None:
    """Two pipelines, each fanning out (a chain of three levels and more), and two lone tasks."""

    async def scenario() -> tuple[list[FlowRun], list[str]]:
        since = datetime.now(UTC)
        await set_paused(True)  # submit everything first, so that the order is only the queue's
        try:
            async with get_client() as client:

                async def add(kind: str, config: dict, label: str, *up: str, **kw: int) -> str:  # type: ignore[type-arg]
                    return await submit(
                        client, SubmitRequest(kind, config, upstream=up, label=label, **kw)
                    )

                pool_a = await add("pool_gen", {"n": 300, "seed": 1}, "pool-a")
                balanced_a = await add("balanced_gen", {"n": 6}, "balanced-a", pool_a)
                attrs_a = await add("attrgen", {**FAKE, "batch_size": 4}, "attrs-a", balanced_a)
                bench_a_in = await add(
                    "benchmark", {**FAKE, "scale_mode": "in"}, "bench-a-in", attrs_a
                )
                bench_a_rev = await add(
                    "benchmark", {**FAKE, "scale_mode": "rev"}, "bench-a-rev", attrs_a
                )
                pool_b = await add("pool_gen", {"n": 200, "seed": 2}, "pool-b")
                balanced_b = await add("balanced_gen", {"n": 4}, "balanced-b", pool_b)
                attrs_b = await add("attrgen", {**FAKE, "batch_size": 4}, "attrs-b", balanced_b)
                bench_b = await add("benchmark", FAKE, "bench-b", attrs_b)
                bench_b_plain = await add("benchmark", FAKE, "bench-b-plain", balanced_b)
                later = await add("pool_gen", {"n": 50, "seed": 3}, "later")
                urgent = await add("pool_gen", {"n": 50, "seed": 4}, "urgent", priority=5)
            await wait_for_event("biasbench.queue.paused", since)
        finally:
            await set_paused(False)
        ids = [pool_a, balanced_a, attrs_a, bench_a_in, bench_a_rev, pool_b, balanced_b]
        ids += [attrs_b, bench_b, bench_b_plain, later, urgent]
        runs = await wait_final(ids, timeout=300)
        return runs, await wait_for_event("biasbench.queue.drained", since)

    runs, events = asyncio.run(scenario())

    assert {r.name: r.state_name for r in runs} == {r.name: "Completed" for r in runs}
    by_start = sorted(runs, key=lambda r: r.start_time)  # type: ignore[arg-type, return-value]
    assert [r.name for r in by_start] == [
        "urgent",  # priority first
        "pool-a",  # then submission order, each dependent as soon as its upstream is done
        "balanced-a",
        "attrs-a",
        "bench-a-in",
        "bench-a-rev",
        "pool-b",
        "balanced-b",
        "attrs-b",
        "bench-b",
        "bench-b-plain",
        "later",
    ]
    for before, after in pairwise(by_start):
        assert before.end_time <= after.start_time, f"{before.name} overlaps {after.name}"  # type: ignore[operator]
    # Every dependent received its upstream's result in its parameters, as the UI shows them.
    named = {r.name: r for r in runs}
    with session_scope(ready_engine(stack.env["DB_URL"])) as session:
        result = {name: result_of_flow_run(session, str(r.id)) for name, r in named.items()}
    for dependent, upstream in [
        ("balanced-a", "pool-a"),
        ("attrs-a", "balanced-a"),
        ("balanced-b", "pool-b"),
        ("attrs-b", "balanced-b"),
        ("bench-b-plain", "balanced-b"),
    ]:
        assert named[dependent].parameters["dataset_id"] == result[upstream].dataset_id  # type: ignore[union-attr]
    for bench, attrs in [
        ("bench-a-in", "attrs-a"),
        ("bench-a-rev", "attrs-a"),
        ("bench-b", "attrs-b"),
    ]:
        assert named[bench].parameters["attrgen_run_id"] == result[attrs].run_id  # type: ignore[union-attr]
        assert named[bench].parameters["dataset_id"] == result[attrs].dataset_id  # type: ignore[union-attr]
    # Queue events, for notifications: the pause and resume around submission, then drained.
    assert events[-3:] == [
        "biasbench.queue.paused",
        "biasbench.queue.resumed",
        "biasbench.queue.drained",
    ]


def states(runs: list[FlowRun]) -> dict[str, tuple[str | None, str | None]]:
    return {r.name: (r.state_name, r.state.message if r.state else None) for r in runs}


def test_a_failed_upstream_skips_its_chain_and_unrelated_tasks_still_run(
    stack: RunningStack,
) -> None:
    async def scenario() -> list[FlowRun]:
        await set_paused(True)
        try:
            async with get_client() as client:
                pool = await submit(
                    client, SubmitRequest("pool_gen", {"n": 40, "seed": 4}, label="pool-for-fail")
                )
                attrs = await submit(
                    client,
                    SubmitRequest(
                        "attrgen",
                        {"llm": "fake", "model_name": "m@fail"},
                        upstream=[pool],
                        label="broken-attrgen",
                    ),
                )
                bench = await submit(
                    client, SubmitRequest("benchmark", FAKE, upstream=[attrs], label="bench-a")
                )
                # A benchmark produces no dataset: this one names its own (it never runs).
                below = await submit(
                    client,
                    SubmitRequest(
                        "benchmark",
                        {**FAKE, "dataset_id": 1},
                        upstream=[bench],
                        label="bench-below",
                    ),
                )
                other = await submit(
                    client, SubmitRequest("pool_gen", {"n": 30, "seed": 5}, label="unrelated")
                )
        finally:
            await set_paused(False)
        return await wait_final([pool, attrs, bench, below, other])

    found = states(asyncio.run(scenario()))

    assert found["pool-for-fail"][0] == "Completed" and found["unrelated"][0] == "Completed"
    assert found["broken-attrgen"][0] == "Failed"
    assert found["bench-a"][0] == "Skipped" and "'broken-attrgen'" in (found["bench-a"][1] or "")
    assert "failed" in (found["bench-a"][1] or "")
    assert found["bench-below"][0] == "Skipped" and "'bench-a'" in (found["bench-below"][1] or "")


def test_cancelling_a_queued_upstream_cancels_its_dependents(stack: RunningStack) -> None:
    async def scenario() -> list[FlowRun]:
        await set_paused(True)
        try:
            async with get_client() as client:
                upstream = await submit(
                    client, SubmitRequest("pool_gen", {"n": 30}, label="to-cancel")
                )
                dependent = await submit(
                    client,
                    SubmitRequest(
                        "balanced_gen",
                        {"n": 5},
                        upstream=[upstream],
                        label="dependent-of-cancelled",
                    ),
                )
                # what the UI's Cancel button does
                await client.set_flow_run_state(upstream, Cancelling())  # type: ignore[arg-type]
        finally:
            await set_paused(False)
        return await wait_final([upstream, dependent], timeout=60)

    found = states(asyncio.run(scenario()))
    assert found["to-cancel"][0] == "Cancelled"
    assert found["dependent-of-cancelled"][0] == "Cancelled"
    assert "'to-cancel'" in (found["dependent-of-cancelled"][1] or "")


def test_cli_submissions_with_and_without_an_upstream_land_in_order(
    stack: str, prefect_server: str
) -> None:
    env = {**os.environ, "PREFECT_API_URL": prefect_server}

    def cli_run(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "prefect", "deployment", "run", *args],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)  # type: ignore[union-attr]

    asyncio.run(set_paused(True))
    try:
        first = cli_run("pool_gen/gpu", "--param", "n=30", "--flow-run-name", "cli-first")
        dependent = cli_run(
            "balanced_gen/gpu",
            "--param",
            "n=4",
            "--param",
            f'upstream=["{first}"]',
            "--flow-run-name",
            "cli-dependent",
        )
        second = cli_run("pool_gen/gpu", "--param", "n=20", "--flow-run-name", "cli-second")
    finally:
        asyncio.run(set_paused(False))
    runs = asyncio.run(wait_final([first, dependent, second]))

    assert {r.name: r.state_name for r in runs} == {
        "cli-first": "Completed",
        "cli-dependent": "Completed",
        "cli-second": "Completed",
    }
    last_start = {
        r.name: max(s.timestamp for s in _states(r.id) if s.type.value == "RUNNING") for r in runs
    }
    assert sorted(last_start, key=last_start.__getitem__) == [
        "cli-first",
        "cli-dependent",
        "cli-second",
    ]
    named = {r.name: r for r in runs}
    assert named["cli-dependent"].parameters["dataset_id"] is not None


def _states(flow_run_id: object) -> list:  # type: ignore[type-arg]
    async def read() -> list:  # type: ignore[type-arg]
        async with get_client() as client:
            return await client.read_flow_run_states(flow_run_id)  # type: ignore[arg-type]

    return asyncio.run(read())


def test_setup_twice_changes_nothing(stack: RunningStack, prefect_server: str) -> None:
    async def snapshot() -> tuple[dict[str, object], int | None]:
        async with get_client() as client:
            deployments = await client.read_deployments()
            pool = await client.read_work_pool("gpu")
        return {
            f"{d.name}:{d.entrypoint}": (d.id, d.parameter_openapi_schema, d.tags)
            for d in deployments
        }, pool.concurrency_limit

    before = asyncio.run(snapshot())
    subprocess.run(
        [sys.executable, "-m", "deployments", "setup"],
        check=True,
        capture_output=True,
        env={**os.environ, "PREFECT_API_URL": prefect_server},
    )
    after = asyncio.run(snapshot())

    assert after == before
    assert len(before[0]) == 5 and before[1] == 1


def test_pause_lets_the_running_task_finish_and_starts_nothing_until_resumed(
    stack: RunningStack,
) -> None:
    async def scenario() -> None:
        async with get_client() as client:
            pool = await submit(
                client, SubmitRequest("pool_gen", {"n": 20, "seed": 6}, label="pause-pool")
            )
            slow = await submit(
                client,
                SubmitRequest(
                    "attrgen",
                    {"llm": "fake", "model_name": "m@slow=0.25", "batch_size": 1},
                    upstream=[pool],
                    label="running-at-pause",
                ),
            )
            while (await client.read_flow_run(slow)).state_name not in {"Running", "Completed"}:  # type: ignore[arg-type]
                await asyncio.sleep(0.2)
            try:
                await control.set_paused(client, True)
                # Submitted after the pause, so that it is queued while paused even when a
                # loaded machine finished the slow task before the pause.
                after = await submit(
                    client, SubmitRequest("pool_gen", {"n": 10}, label="after-pause")
                )

                (done,) = await wait_final([slow])
                assert done.state_name == "Completed"  # the running task finished
                state = await control.queue_state(client)
                assert state.executor_paused and state.executor_running
                for _ in range(30):  # nothing new starts while paused
                    assert (await client.read_flow_run(after)).state_name in {"Queued", "Released"}  # type: ignore[arg-type]
                    await asyncio.sleep(1)
            finally:  # a failed check must not leave the next tests a paused queue
                await control.set_paused(client, False)
            (resumed,) = await wait_final([after])
            assert resumed.state_name == "Completed"
            assert not (await control.queue_state(client)).executor_paused

    asyncio.run(scenario())


def test_restarting_the_manager_mid_queue_loses_nothing_and_keeps_the_order(
    stack: RunningStack,
) -> None:
    async def scenario() -> list[FlowRun]:
        async with get_client() as client:
            first = await submit(
                client, SubmitRequest("pool_gen", {"n": 20, "seed": 11}, label="restart-1")
            )
            slow = await submit(
                client,
                SubmitRequest(
                    "attrgen",
                    {"llm": "fake", "model_name": "m@slow=0.2", "batch_size": 1},
                    upstream=[first],
                    label="restart-2",
                ),
            )
            third = await submit(client, SubmitRequest("pool_gen", {"n": 10}, label="restart-3"))
            fourth = await submit(client, SubmitRequest("pool_gen", {"n": 10}, label="restart-4"))
            # Until it runs (or, on a loaded machine, already ran: the restart then still
            # comes with two tasks queued).
            while (await client.read_flow_run(slow)).state_name not in {"Running", "Completed"}:  # type: ignore[arg-type]
                await asyncio.sleep(0.2)
        stack.restart_manager()  # SIGKILL mid-queue, a new manager reconciles from Prefect
        return await wait_final([first, slow, third, fourth])

    runs = asyncio.run(scenario())

    assert [r.state_name for r in runs] == ["Completed"] * 4
    assert [r.run_count for r in runs] == [1, 1, 1, 1]  # none ran twice
    by_start = sorted(runs, key=lambda r: r.start_time)  # type: ignore[arg-type, return-value]
    assert [r.name for r in by_start] == ["restart-1", "restart-2", "restart-3", "restart-4"]


def test_stop_lets_the_current_task_finish_then_the_manager_ends_and_start_goes_on(
    stack: RunningStack,
) -> None:
    async def scenario() -> None:
        async with get_client() as client:
            pool = await submit(
                client, SubmitRequest("pool_gen", {"n": 20, "seed": 12}, label="stop-pool")
            )
            slow = await submit(
                client,
                SubmitRequest(
                    "attrgen",
                    {"llm": "fake", "model_name": "m@slow=0.2", "batch_size": 1},
                    upstream=[pool],
                    label="running-at-stop",
                ),
            )
            while (await client.read_flow_run(slow)).state_name not in {"Running", "Completed"}:  # type: ignore[arg-type]
                await asyncio.sleep(0.2)
            assert (await control.queue_state(client)).executor_running
            await control.stop()
            # Submitted after the stop, so that it waits even when a loaded machine finished
            # the slow task before the stop.
            after = await submit(client, SubmitRequest("pool_gen", {"n": 10}, label="after-stop"))

            (done,) = await wait_final([slow])
            assert done.state_name == "Completed"  # the current task finished
            deadline = time.monotonic() + 30
            while (await control.queue_state(client)).executor_running:
                assert time.monotonic() < deadline, "the manager did not end after the current task"
                await asyncio.sleep(0.2)
            await asyncio.sleep(3)
            assert (await client.read_flow_run(after)).state_name == "Queued"  # type: ignore[arg-type]

            await control.start(client)  # /queue/start: the queue goes on where it stopped
            (resumed,) = await wait_final([after])
            assert resumed.state_name == "Completed"

    asyncio.run(scenario())
