"""More tasks than one Prefect read returns (200): listing, retry and the manager's messages see
every one of them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prefect import get_client

from biasbench.queue import gateway
from tests.support.stack import RunningStack

MANY = 205  # dependents of one upstream: more than a page

# A few hundred state changes on the session's SQLite-backed Prefect server take minutes.
pytestmark = [pytest.mark.timeout(900), pytest.mark.alone]


def wait_until(check: Callable[[], bool], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(1)


def task_id(answer: httpx.Response) -> int:
    assert answer.is_success, f"{answer.status_code}: {answer.text[:300]}"
    return int(answer.json()["task_id"])


def statuses(api: httpx.Client) -> dict[int, str]:
    listed = api.get("/queue", params={"include_done": True, "limit": 10_000}).json()
    return {t["id"]: t["status"] for t in listed}


def test_listing_retry_and_messages_see_more_than_a_page_of_tasks(
    api: httpx.Client, stack: RunningStack
) -> None:
    api.post("/queue/pause")  # nothing starts: the test watches the held tasks only
    # The manager must see the upstream's cancel to count it: on a loaded machine its process
    # took 50 s to start, and one started after the cancel summed up 205 cancellations, not 206.
    wait_until(lambda: api.get("/queue/stats").json()["executor_running"], timeout=180)
    # Unfinished runs of earlier tests would keep the queue from draining; deleted runs are
    # neither run nor counted.
    asyncio.run(delete_unfinished_runs())
    try:
        upstream = task_id(
            api.post(
                "/queue/add",
                json={"task_type": "pool_gen", "config": {"n": 10}, "label": "page-upstream"},
            )
        )
        dependents = [
            task_id(
                api.post(
                    "/queue/add",
                    json={
                        "task_type": "balanced_gen",
                        "config": {"n": 5},
                        "depends_on": upstream,
                        "label": "page-dependent",
                    },
                )
            )
            for _ in range(MANY)
        ]
        listed = api.get("/queue", params={"include_done": False, "limit": 10_000}).json()
        assert {upstream, *dependents} <= {t["id"] for t in listed}

        # The user cancels the upstream; the manager cancels every dependent with it and, once
        # the queue is idle, sums up what it saw end.
        log = Path(stack.logs / "manager.log")
        before = len(log.read_text())  # the queue is busy from here until the cascade is over
        assert api.post(f"/queue/{upstream}/cancel").json()["ok"] is True
        wait_until(lambda: all(statuses(api)[d] == "cancelled" for d in dependents))
        wait_until(lambda: "All queued tasks processed" in log.read_text()[before:])
        assert f"All queued tasks processed</b>: {MANY + 1} cancelled." in log.read_text()[before:]

        began = time.monotonic()
        answer = api.post(f"/queue/{upstream}/retry").json()
        print(f"\nretry of 1 task with {MANY} dependents: {time.monotonic() - began:.1f} s")
        assert answer["message"].endswith(f"with {MANY} dependent(s) waiting for it again")
        after = statuses(api)
        assert after[upstream] == "queued"
        assert all(after[d] == "waiting" for d in dependents)
    finally:
        # Gone at once, so that later tests' managers do not read them on every look.
        asyncio.run(delete_unfinished_runs())
        api.post("/queue/resume")


async def delete_unfinished_runs() -> None:
    async with get_client() as client:
        for run in await gateway.unfinished_runs(client):
            await gateway.delete_run(client, run.id)
