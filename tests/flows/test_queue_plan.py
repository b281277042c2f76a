"""The queue's expected times where users look: the "queue plan" artifact the manager keeps, the
"queue started" message (when it will be done) and the drained one (actual next to predicted),
end to end: real Prefect server, worker and manager processes, a real Bot API server."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from biasbench.queue.submit import SubmitRequest, submit
from tests.support.notifications import wait_for_message
from tests.support.stack import RunningStack, queue_stack
from tests.support.telegram_server import TelegramServer
from tests.support.waiting import wait_final

DONE_BY = re.compile(r"2 tasks, done by about (\d\d:\d\d) \(P90 (\d\d:\d\d) UTC\)")


@pytest.fixture(scope="module")
def stack(
    prefect_server: str,
    tmp_path_factory: pytest.TempPathFactory,
    telegram_env: tuple[TelegramServer, dict[str, str]],
) -> Iterator[RunningStack]:
    home = tmp_path_factory.mktemp("queue-plan")
    with queue_stack(
        prefect_server, f"sqlite:///{home / 'queue.db'}", home, extra_env=telegram_env[1]
    ) as running:
        yield running


async def _plan_versions() -> list[str]:
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["queue-plan"]))
        )
    return [str(a.data) for a in artifacts]


def test_the_plan_artifact_and_the_started_and_drained_messages_carry_the_times(
    stack: RunningStack, telegram: TelegramServer
) -> None:
    wait_for_message(telegram, "▶️ <b>Queue started</b>")  # the stack's manager is up
    stack.kill_manager()  # tasks submitted now wait for the next manager
    before = len(telegram.messages)

    async def queue_two() -> list[str]:
        async with get_client() as client:
            pool = await submit(
                client, SubmitRequest("pool_gen", {"n": 100, "seed": 4}, label="plan-pool")
            )
            dataset = await submit(
                client, SubmitRequest("balanced_gen", {"n": 4}, upstream=[pool], label="plan-ds")
            )
        return [pool, dataset]

    ids = asyncio.run(queue_two())
    stack.restart_manager()
    started = wait_for_message(telegram, "▶️ <b>Queue started</b>: 2 tasks, done by", after=before)
    match = DONE_BY.search(started.text)
    assert match, started.text
    p50, p90 = match.groups()
    assert p50 <= p90

    asyncio.run(wait_final(ids))
    drained = wait_for_message(
        telegram,
        "🏁 <b>All queued tasks processed</b>: 2 done.",
        after=telegram.messages.index(started),
    )
    assert re.search(rf"Finished at \d\d:\d\d; predicted {p50} \(P90 {p90}\)\.", drained.text)

    # The manager wrote the plan it announced: both tasks, in line, with their times.
    # (Later versions follow as the tasks run; times are to the minute, so several may match.)
    versions = asyncio.run(_plan_versions())
    announced = [
        v
        for v in versions
        if f"All done by about {p50} (P90 {p90})." in v
        and "pool_gen 'plan-pool'" in v
        and "balanced_gen 'plan-ds'" in v
    ]
    assert announced, versions
    table = announced[0]
    assert "| task | model | expected start | end | P90 |" in table
    assert table.index("'plan-pool'") < table.index("'plan-ds'")
