"""Task ends survive a failed look: the manager reads what an ended task became, and a
read that fails (server busy or restarting) must leave the end to the next look, not lose it."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prefect import get_client
from prefect.client.orchestration import PrefectClient

from biasbench.queue import control, gateway
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
            # The task ends (its user cancels it) ...
            await control.cancel(client, run_id)
            after_end = await gateway.read_queue(client)
            # ... and the look that sees it cannot read the server ...
            unreachable = PrefectClient(f"http://127.0.0.1:{free_port()}/api")
            async with unreachable:
                with pytest.raises(Exception):  # noqa: B017 (whatever the transport raises)
                    await notices.tasks(unreachable, after_end, set())
            # ... the next look can.
            await notices.tasks(client, await gateway.read_queue(client), set())
            notices.queue("drained")

    with caplog.at_level(logging.INFO, logger="test-notices"):
        asyncio.run(scenario())
    messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Message:")]
    drained = [m for m in messages if "All queued tasks processed" in m]
    assert len(drained) == 1 and "1 cancelled" in drained[0], messages
