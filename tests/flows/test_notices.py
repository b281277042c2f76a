"""Task-end messages survive a failed look: the manager reads what an ended task became, and a
read that fails (server busy or restarting) must leave the end to the next look, not lose it."""

from __future__ import annotations

import asyncio
import logging
from uuid import UUID

import pytest
from prefect import get_client
from prefect.client.orchestration import PrefectClient
from prefect.states import Failed

from biasbench.queue import gateway
from biasbench.queue.submit import SubmitRequest, submit
from flows.notices import Notices
from tests.support.ports import free_port

pytestmark = pytest.mark.usefixtures("deployed")


def test_a_task_end_seen_by_a_failed_look_is_announced_by_the_next(
    engine, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("test-notices")
    notices = Notices(logger, engine)

    async def scenario() -> None:
        async with get_client() as client:
            run_id = await submit(client, SubmitRequest("pool_gen", {"n": 10}, label="lost-end"))
            await notices.tasks(client, await gateway.read_queue(client), set())
            # The task ends (as a worker would report its failure) ...
            await client.set_flow_run_state(UUID(run_id), Failed(message="boom"), force=True)
            after_end = await gateway.read_queue(client)
            # ... and the look that sees it cannot read the server ...
            unreachable = PrefectClient(f"http://127.0.0.1:{free_port()}/api")
            async with unreachable:
                with pytest.raises(Exception):  # noqa: B017 (whatever the transport raises)
                    await notices.tasks(unreachable, after_end, set())
            # ... the next look can.
            await notices.tasks(client, await gateway.read_queue(client), set())

    with caplog.at_level(logging.INFO, logger="test-notices"):
        asyncio.run(scenario())
    messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Message:")]
    assert len([m for m in messages if "“lost-end”" in m]) == 1, messages
