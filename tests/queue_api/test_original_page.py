"""The original React queue page against the running stack: the calls its QueuePage makes (load:
GET /config, GET /queue?include_done=true&limit=50, GET /queue/stats; then its buttons: pause,
resume, cancel, retry, remove) and the fields it renders, durations included."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx

Task = dict[str, Any]
FINAL = {"done", "failed", "cancelled", "skipped"}
SLOW_FAKE = {"llm": "fake", "batch_size": 1}  # one chat at a time: a predictable pace


def when(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def duration(task: Task) -> float:
    """What the page shows: finished_at - started_at, in seconds."""
    started, finished = when(task["started_at"]), when(task["finished_at"])
    assert started is not None and finished is not None, task
    return (finished - started).total_seconds()


def check_rendered(task: Task) -> None:
    """Every field the page renders is there and consistent with the task's status."""
    started, finished = when(task["started_at"]), when(task["finished_at"])
    assert isinstance(task["id"], int) and isinstance(task["position"], int)
    assert isinstance(task["label"], str) and when(task["created_at"]) is not None
    if task["status"] in {"queued", "waiting"}:  # this attempt has not started
        assert (started, finished, task["error"]) == (None, None, None), task
    elif task["status"] == "running":
        assert started is not None and finished is None, task
    else:
        assert finished is not None, task
        assert started is None or started <= finished, task
        assert (task["error"] is None) == (task["status"] == "done"), task


def load_page(api: httpx.Client) -> tuple[dict[str, Any], list[Task], dict[str, Any]]:
    """What the page requests when it opens (and on every refresh)."""
    config = api.get("/config")
    tasks = api.get("/queue", params={"include_done": "true", "limit": 50})
    stats = api.get("/queue/stats")
    assert [r.status_code for r in (config, tasks, stats)] == [200, 200, 200]
    for task in tasks.json():
        check_rendered(task)
    active = [t["position"] for t in tasks.json() if t["status"] not in FINAL]
    finished = [t["position"] for t in tasks.json() if t["status"] in FINAL]
    assert active == sorted(active)  # by position
    assert finished == sorted(finished, reverse=True)  # by position, newest first
    return config.json(), tasks.json(), stats.json()


def shown(api: httpx.Client, task_id: int) -> Task:
    """The task as the page's list shows it."""
    (task,) = [t for t in load_page(api)[1] if t["id"] == task_id]
    return task


def wait_until(
    api: httpx.Client, task_id: int, ready: Callable[[Task], bool], timeout: float = 180
) -> Task:
    deadline = time.monotonic() + timeout
    while not ready(task := api.get(f"/queue/{task_id}").json()):
        assert time.monotonic() < deadline, task
        time.sleep(0.3)
    return shown(api, task_id)


def add(api: httpx.Client, task_type: str, config: dict[str, Any], **more: Any) -> int:
    response = api.post("/queue/add", json={"task_type": task_type, "config": config, **more})
    assert response.status_code == 200, response.text
    return int(response.json()["task_id"])


def press(api: httpx.Client, path: str) -> None:
    """A button of the page: every one answers {ok, message}."""
    answer = api.post(path)
    assert answer.status_code == 200 and answer.json()["ok"] is True, answer.text


def test_config_answers_like_the_original(api: httpx.Client) -> None:
    config = api.get("/config").json()
    assert set(config) == {"read_only_mode", "version"}
    assert config["read_only_mode"] is False and config["version"]


def test_the_page_through_a_night_of_pausing_cancelling_failing_and_retrying(
    api: httpx.Client,
) -> None:
    load_page(api)
    press(api, "/queue/pause")
    try:
        assert load_page(api)[2]["executor_paused"] is True
        pool = add(api, "pool_gen", {"n": 4, "seed": 7}, label="page: pool")
        waiting = add(api, "balanced_gen", {"n": 2}, depends_on=pool, label="page: waits")
        removed = add(api, "pool_gen", {"n": 3}, label="page: removed")
        failing = add(
            api,
            "attrgen",
            {"model_name": "page@slow=0.3@fail-after=2", **SLOW_FAKE},
            depends_on=pool,
            label="page: fails, then succeeds",
        )
        slow = add(
            api,
            "attrgen",
            {"model_name": "page@slow=1", **SLOW_FAKE},
            depends_on=pool,
            label="page: cancelled while running",
        )

        # Remove: gone from the page and its URL.
        assert api.delete(f"/queue/{removed}").json()["ok"] is True
        assert api.get(f"/queue/{removed}").status_code == 404
        assert removed not in {t["id"] for t in load_page(api)[1]}

        # Cancel while waiting: it never started, and says who cancelled it.
        press(api, f"/queue/{waiting}/cancel")
        cancelled_waiting = wait_until(api, waiting, lambda t: t["status"] == "cancelled")
        assert cancelled_waiting["started_at"] is None
        assert cancelled_waiting["finished_at"] is not None
        assert cancelled_waiting["error"] == "Cancelled by user"
    finally:
        press(api, "/queue/resume")
    assert load_page(api)[2]["executor_paused"] is False

    # The failing task runs once, fails; the slow one is cancelled while it runs.
    failed = wait_until(api, failing, lambda t: t["status"] in FINAL)
    assert failed["status"] == "failed" and "fake failure" in failed["error"]
    running = wait_until(api, slow, lambda t: t["status"] == "running")
    press(api, f"/queue/{slow}/cancel")
    cancelled = wait_until(api, slow, lambda t: t["status"] in FINAL)
    assert cancelled["status"] == "cancelled" and cancelled["error"] == "Cancelled by user"
    assert cancelled["started_at"] == running["started_at"] and duration(cancelled) > 0

    # Retry both while paused: queued again, with no times of the attempts before.
    press(api, "/queue/pause")
    try:
        for task_id in (failing, slow):
            press(api, f"/queue/{task_id}/retry")
            requeued = shown(api, task_id)
            assert requeued["status"] == "queued", requeued
            assert (requeued["started_at"], requeued["finished_at"], requeued["error"]) == (
                None,
                None,
                None,
            )
    finally:
        press(api, "/queue/resume")

    # Each retry resumes and finishes; its times are its own attempt's.
    for before in (failed, cancelled):
        after = wait_until(api, before["id"], lambda t: t["status"] in FINAL)
        assert after["status"] == "done" and after["error"] is None, after
        assert when(after["started_at"]) > when(before["finished_at"])  # type: ignore[operator]
        since_first_start = when(after["finished_at"]) - when(before["started_at"])  # type: ignore[operator]
        assert duration(after) < since_first_start.total_seconds()

    # The page lists them finished, newest position first.
    listed = [t["id"] for t in load_page(api)[1] if t["id"] in {pool, waiting, failing, slow}]
    assert listed == [slow, failing, waiting, pool]
