"""The queue manager's process is SIGKILLed under the real stack (`deployments.stack.Stack`,
the same as `make serve`): the Prefect server starts a new manager by itself, and the queue goes
on. Against the test session's Prefect server; the stack's workers and manager are its own."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType

from biasbench.queue.model import MANAGER_FLOW
from biasbench.queue.submit import submit
from deployments.stack import Stack
from tests.support.processes import launcher_pid
from tests.support.waiting import all_final, wait_for


@pytest.fixture
def stack(prefect_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setenv("PREFECT_API_URL", prefect_server)  # the stack starts no server of its own
    monkeypatch.setenv("DB_URL", f"sqlite:///{tmp_path / 'queue.db'}")
    with Stack(api_port=None, logs=tmp_path / "logs") as running:
        yield running


async def running_managers() -> list[FlowRun]:
    async with get_client() as client:
        return await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[MANAGER_FLOW])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
            ),
        )


async def the_running_manager(timeout: float = 60, other_than: str | None = None) -> FlowRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in await running_managers() if str(r.id) != other_than]
        if found:
            return found[0]
        await asyncio.sleep(0.2)
    raise AssertionError(f"no running queue manager within {timeout} s")


def test_a_killed_manager_is_replaced_by_the_server_and_the_queue_goes_on(stack: Stack) -> None:
    async def scenario() -> tuple[float, list[FlowRun]]:
        first = await the_running_manager()
        os.kill(launcher_pid(first), signal.SIGKILL)
        killed = time.monotonic()
        second = await the_running_manager(other_than=str(first.id))
        replaced_after = time.monotonic() - killed
        async with get_client() as client:
            task = await submit(client, "pool_gen", {"n": 20}, label="after-manager-death")
            killed_run = await client.read_flow_run(first.id)
        assert killed_run.state is not None and killed_run.state.type == StateType.CRASHED
        assert second.deployment_id == first.deployment_id
        return replaced_after, await wait_for(all_final, [task])

    replaced_after, (task,) = asyncio.run(scenario())
    print(f"a new queue manager ran {replaced_after:.1f} s after the old one was killed")
    assert task.state_name == "Completed"
