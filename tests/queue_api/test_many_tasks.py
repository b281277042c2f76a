"""More tasks than one Prefect read returns (200): listing, retry and the manager's messages see
every one of them."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.support.stack import RunningStack

MANY = 205  # dependents of one upstream: more than a page


def wait_until(check, timeout: float = 240) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(1)


def statuses(api: httpx.Client) -> dict[int, str]:
    listed = api.get("/queue", params={"include_done": True, "limit": 10_000}).json()
    return {t["id"]: t["status"] for t in listed}


def test_listing_retry_and_messages_see_more_than_a_page_of_tasks(
    api: httpx.Client, stack: RunningStack
) -> None:
    api.post("/queue/pause")  # nothing starts: the test watches the held tasks only
    try:
        upstream = api.post(
            "/queue/add", json={"task_type": "pool_gen", "config": {"n": 10}}
        ).json()["task_id"]
        dependents = [
            api.post(
                "/queue/add",
                json={"task_type": "balanced_gen", "config": {"n": 5}, "depends_on": upstream},
            ).json()["task_id"]
            for _ in range(MANY)
        ]
        listed = api.get("/queue", params={"include_done": False, "limit": 10_000}).json()
        assert {upstream, *dependents} <= {t["id"] for t in listed}

        # The user cancels the upstream; the manager cancels every dependent with it.
        assert api.post(f"/queue/{upstream}/cancel").json()["ok"] is True
        wait_until(lambda: all(statuses(api)[d] == "cancelled" for d in dependents))
        log = Path(stack.logs / "manager.log")
        wait_until(lambda: "All queued tasks processed" in log.read_text())
        assert f"All queued tasks processed</b>: {MANY + 1} cancelled" in log.read_text()

        answer = api.post(f"/queue/{upstream}/retry").json()
        assert answer["message"].endswith(f"with {MANY} dependent(s) waiting for it again")
        after = statuses(api)
        assert after[upstream] == "queued"
        assert all(after[d] == "waiting" for d in dependents)
    finally:
        for task_id in [upstream, *dependents]:
            api.post(f"/queue/{task_id}/cancel")
        api.post("/queue/resume")
