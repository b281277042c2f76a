"""The queue against a real `prefect server start` (the stack of `make serve`): restarting the
server mid-queue, and runs created by a deployment's cron schedule. The session's test harness
can do neither: it cannot be restarted, and it runs no scheduler."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from unittest import mock
from uuid import UUID

import pytest
from prefect import get_client
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import WorkPoolUpdate
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.schedules import CronSchedule

from biasbench.queue.gateway import deployment_name
from biasbench.queue.model import GPU_POOL
from biasbench.queue.submit import SubmitRequest, submit
from deployments.stack import Stack
from tests.support.ports import free_port
from tests.support.processes import flow_process_pids
from tests.support.waiting import wait_final

HEARTBEAT_TIMEOUT = 45  # the shortest allowed: heartbeats come every 30 s
SLOW = {"llm": "fake", "model_name": "fake-model@slow=0.3", "batch_size": 4}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("real-server")
    env = {
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_API_URL": "",  # removed below; patch.dict restores it afterwards
        "DB_URL": f"sqlite:///{home / 'queue.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "QUEUE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
        # The scheduler looks every 2 s and makes only the next run of a schedule.
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_SERVER_SERVICES_SCHEDULER_MIN_RUNS": "1",
        "PREFECT_SERVER_SERVICES_SCHEDULER_MAX_RUNS": "1",
    }
    with mock.patch.dict(os.environ, env):
        del os.environ["PREFECT_API_URL"]  # the stack starts its own server
        with Stack(port=free_port(), api_port=None, logs=Path(home / "logs")) as running:
            yield running


async def times_started(flow_run_id: object) -> int:
    async with get_client() as client:
        states = await client.read_flow_run_states(flow_run_id)  # type: ignore[arg-type]
    return sum(1 for s in states if s.type == StateType.RUNNING)


def in_start_order(runs: list[FlowRun]) -> list[str]:
    """Names by when each really ran: from its last Running state (a run that parked itself
    in the queue was Running for a moment before), checking that no two runs overlap."""
    spans = sorted((asyncio.run(last_running(r.id)), r.end_time, r.name) for r in runs)  # type: ignore[type-var]
    for (_, end, name), (start, _, next_name) in pairwise(spans):
        assert end <= start, f"{name} overlaps {next_name}"  # type: ignore[operator]
    return [name for _, _, name in spans]


async def last_running(flow_run_id: UUID) -> datetime:
    async with get_client() as client:
        states = await client.read_flow_run_states(flow_run_id)
    return max(s.timestamp for s in states if s.type == StateType.RUNNING)


def test_restarting_the_prefect_server_mid_queue_loses_nothing_and_keeps_the_order(
    stack: Stack,
) -> None:
    async def scenario() -> tuple[list[FlowRun], list[int]]:
        async with get_client() as client:
            pool = await submit(
                client, SubmitRequest("pool_gen", {"n": 100, "seed": 4}, label="pool")
            )
            balanced = await submit(
                client, SubmitRequest("balanced_gen", {"n": 4}, upstream=[pool], label="balanced")
            )
            first = await submit(
                client, SubmitRequest("benchmark", SLOW, upstream=[balanced], label="first")
            )
            second = await submit(
                client, SubmitRequest("benchmark", SLOW, upstream=[balanced], label="second")
            )
            last = await submit(
                client, SubmitRequest("pool_gen", {"n": 50, "seed": 5}, label="last")
            )
            ids = [pool, balanced, first, second, last]
            while (await client.read_flow_run(first)).state_type != StateType.RUNNING:  # type: ignore[arg-type]
                await asyncio.sleep(0.5)
        await asyncio.sleep(2)
        stack.restart_server()  # about 10 s without a server
        runs = await wait_final(ids)
        return runs, [await times_started(i) for i in ids]

    runs, started = asyncio.run(scenario())

    assert {r.name: r.state_name for r in runs} == {r.name: "Completed" for r in runs}
    assert started == [1, 1, 1, 1, 1]  # nothing ran twice
    assert in_start_order(runs) == ["pool", "balanced", "first", "second", "last"]


def test_a_cron_scheduled_run_joins_the_queue_at_its_scheduled_time(stack: Stack) -> None:
    async def scenario() -> tuple[list[FlowRun], FlowRun]:
        async with get_client() as client:
            await set_paused(client, True)  # nothing starts until every run is in place
            try:
                before = await submit(
                    client, SubmitRequest("pool_gen", {"n": 20}, label="submitted-before")
                )
                deployment = await client.read_deployment_by_name(deployment_name("pool_gen"))
                await client.create_deployment_schedules(
                    deployment.id, [(CronSchedule(cron="* * * * *"), True)]
                )
                cron_run = await scheduled_run(client, deployment.id)
                while datetime.now(UTC) < cron_run.expected_start_time:  # type: ignore[operator]
                    await asyncio.sleep(1)
                after = await submit(
                    client, SubmitRequest("pool_gen", {"n": 20}, label="submitted-after")
                )
            finally:
                await set_paused(client, False)
            # Removing a schedule deletes its runs still waiting to start; wait for ours.
            while (await client.read_flow_run(cron_run.id)).state_type == StateType.SCHEDULED:
                await asyncio.sleep(0.5)
            for schedule in await client.read_deployment_schedules(deployment.id):
                await client.delete_deployment_schedule(deployment.id, schedule.id)
        return await wait_final([before, str(cron_run.id), after]), cron_run

    runs, cron_run = asyncio.run(scenario())

    assert [r.state_name for r in runs] == ["Completed"] * 3
    assert in_start_order(runs) == ["submitted-before", cron_run.name, "submitted-after"]


async def set_paused(client: PrefectClient, paused: bool) -> None:
    await client.update_work_pool(GPU_POOL, WorkPoolUpdate(is_paused=paused))


async def scheduled_run(client: PrefectClient, deployment_id: UUID) -> FlowRun:
    """The run the server's scheduler made for the deployment's schedule."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )
        if made := [r for r in runs if r.auto_scheduled]:
            return made[0]
        await asyncio.sleep(1)
    raise AssertionError("the scheduler made no run within 30 s")


# A minute of questions, the watchdog's minute or two, the resumed rest: over the default 300 s
# guard on a loaded 2-core machine. The waits inside are bounded on their own, and the guard is
# above their sum, so that a run that never ends fails with what it was waiting for. On a
# machine half as fast as usual, loaded by the parallel suite, 600 s ended with two of the three
# tasks done and the third next (91 s on CI's machine at stop 22).
@pytest.mark.timeout(1500)
def test_a_frozen_run_is_crashed_through_heartbeats_and_the_run_resumes(
    stack: Stack,
) -> None:
    """What no supervisor on the run's host can report (the host froze, or lost its power or
    network): only the server's heartbeat watchdog notices."""

    async def scenario() -> tuple[float, list[FlowRun], list[str]]:
        async with get_client() as client:
            pool = await submit(
                client, SubmitRequest("pool_gen", {"n": 100, "seed": 7}, label="vanish-pool")
            )
            balanced = await submit(
                client, SubmitRequest("balanced_gen", {"n": 4}, upstream=[pool], label="vanish-ds")
            )
            # 60 questions, 1 s each: still under way when it freezes 3 s in (frozen, it
            # answers nothing more, however long the watchdog takes).
            long = {**SLOW, "model_name": "fake-model@slow=1"}
            orphaned = await submit(
                client, SubmitRequest("benchmark", long, upstream=[balanced], label="orphan")
            )
            dependent = await submit(  # waits for the orphan, whatever it produces
                client,
                SubmitRequest("pool_gen", {"n": 10}, upstream=[orphaned], label="after-orphan"),
            )
            unrelated = await submit(
                client, SubmitRequest("pool_gen", {"n": 10}, label="after-power-cut")
            )
            while (await client.read_flow_run(orphaned)).state_type != StateType.RUNNING:  # type: ignore[arg-type]
                await asyncio.sleep(0.5)
        await asyncio.sleep(3)
        # The run's process freezes: it reports nothing more, and its worker sees nothing
        # wrong. Once the watchdog crashed the run, the host "comes back": the frozen process
        # is killed, and the run resumes on the worker.
        frozen = flow_process_pids(orphaned)
        assert frozen, "the run has no flow process"
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        killed = time.monotonic()
        async with get_client() as client:
            try:
                while not any(
                    s.type == StateType.CRASHED
                    for s in await client.read_flow_run_states(orphaned)  # type: ignore[arg-type]
                ):
                    assert time.monotonic() - killed < 6 * HEARTBEAT_TIMEOUT, "never crashed"
                    await asyncio.sleep(0.5)
                noticed_after = time.monotonic() - killed
            finally:  # also when it never crashed: no frozen process outlives the test
                for pid in frozen:
                    os.kill(pid, signal.SIGKILL)
            crashes = [
                s.message or ""
                for s in await client.read_flow_run_states(orphaned)  # type: ignore[arg-type]
                if s.type == StateType.CRASHED
            ]
        return noticed_after, await wait_final([orphaned, dependent, unrelated], 1000), crashes

    noticed_after, runs, crashes = asyncio.run(scenario())

    print(f"the heartbeat watchdog crashed the run {noticed_after:.0f} s after it froze")
    assert any("No heartbeat" in message for message in crashes)
    # Killed from outside: it went back in its place and resumed (QUEUE_CRASH_RETRIES = 1).
    assert [r.state_name for r in runs] == ["Completed", "Completed", "Completed"]
