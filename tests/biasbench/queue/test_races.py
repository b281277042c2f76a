"""A user's action wins over a manager decision made just before it (issue 13, item 1).

The interleaving is forced, not timed: the manager's snapshot is read, the user acts, and only
then is the decision taken from that snapshot applied, as when a cancel lands between a look
and its writes. No worker runs here: what is checked is the state users see."""

from __future__ import annotations

import asyncio
from uuid import UUID

import pytest
from prefect import get_client
from prefect.client.schemas.objects import FlowRun

from biasbench.queue import control, gateway
from biasbench.queue.decide import Action, Relabel, Release, Skip
from biasbench.queue.submit import SubmitRequest, submit

pytestmark = pytest.mark.usefixtures("deployed")


async def decided_then_cancelled(label: str, decide: type[Action]) -> FlowRun:
    async with get_client() as client:
        run_id = await submit(client, SubmitRequest("pool_gen", {"n": 10}, label=label))
        snapshot = await gateway.read_queue(client)  # the manager looks ...
        await control.cancel(client, run_id)  # ... the user cancels ...
        run = snapshot[run_id]
        action = {
            Release: lambda: Release(run_id, parameters=dict(run.parameters)),
            Relabel: lambda: Relabel(run_id, name="Waiting"),
            Skip: lambda: Skip(run_id, reason="an upstream failed"),
        }[decide]()
        await gateway.apply(client, snapshot, [action])  # ... and the manager acts on its look
        return await client.read_flow_run(UUID(run_id))


@pytest.mark.parametrize("decide", [Release, Relabel, Skip], ids=lambda a: a.__name__)
def test_a_decision_from_before_the_users_cancel_leaves_the_task_cancelled(
    decide: type[Action],
) -> None:
    run = asyncio.run(decided_then_cancelled(f"race-{decide.__name__}", decide))

    assert run.state is not None
    assert (run.state.type.value, run.state.name) == ("CANCELLED", "Cancelled")


def test_a_cancel_between_the_managers_check_and_its_write_still_wins() -> None:
    """The narrowest window: the user's cancel lands after the manager has checked the run's
    state and before its write (a hook on the client's read puts it exactly there)."""

    async def scenario() -> FlowRun:
        async with get_client() as client:
            run_id = await submit(
                client, SubmitRequest("pool_gen", {"n": 10}, label="race-after-check")
            )
            snapshot = await gateway.read_queue(client)
            read = client.read_flow_run
            cancelled = False

            async def read_then_user_cancels(flow_run_id: UUID) -> FlowRun:
                nonlocal cancelled
                seen = await read(flow_run_id)
                if str(flow_run_id) == run_id and not cancelled:
                    cancelled = True
                    await control.cancel(client, run_id)
                return seen

            client.read_flow_run = read_then_user_cancels  # type: ignore[method-assign]
            release = Release(run_id, parameters=dict(snapshot[run_id].parameters))
            await gateway.apply(client, snapshot, [release])
            client.read_flow_run = read  # type: ignore[method-assign]
            assert cancelled
            return await client.read_flow_run(UUID(run_id))

    run = asyncio.run(scenario())

    assert run.state is not None
    assert (run.state.type.value, run.state.name) == ("CANCELLED", "Cancelled")


def test_cancelling_a_released_task_that_ran_before_ends_it_at_once() -> None:
    """Issue 13, item 2: a task put back after an earlier attempt (retried, requeued, parked)
    still carries that attempt's process id; released again and cancelled before a worker
    takes it, Prefect would leave it Cancelling ("running") until the watchdog's timeout."""

    async def scenario() -> FlowRun:
        async with get_client() as client:
            run_id = await submit(
                client, SubmitRequest("pool_gen", {"n": 10}, label="race-released-cancel")
            )
            # What an earlier attempt leaves behind: the worker's record of its process.
            await client.update_flow_run(UUID(run_id), infrastructure_pid="4194000")
            snapshot = await gateway.read_queue(client)
            release = Release(run_id, parameters=dict(snapshot[run_id].parameters))
            await gateway.apply(client, snapshot, [release])
            assert (await client.read_flow_run(UUID(run_id))).state_name == "Released"
            await control.cancel(client, run_id)
            return await client.read_flow_run(UUID(run_id))

    run = asyncio.run(scenario())

    assert run.state is not None
    assert (run.state.type.value, run.state.name) == ("CANCELLED", "Cancelled")
