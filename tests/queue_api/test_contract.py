"""The /queue contract field by field, its error answers, and tasks made outside the shim."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
from prefect import get_client

from biasbench.queue import gateway
from tests.support.stack import REPO

ISO = str  # timestamps travel as ISO strings
# original-system.md §1: every field of a task and its JSON types (None: may be null).
TASK_FIELDS: dict[str, tuple[type, ...]] = {
    "id": (int,),
    "task_type": (str,),
    "status": (str,),
    "position": (int,),
    "label": (str, type(None)),
    "created_at": (ISO, type(None)),
    "started_at": (ISO, type(None)),
    "finished_at": (ISO, type(None)),
    "error": (str, type(None)),
    "depends_on": (int, list, type(None)),
    "result_run_id": (int, type(None)),
    "result_run_type": (str, type(None)),
    "config": (dict,),
}
EXTENSIONS = {"priority", "progress", "blocked_by", "eta", "eta_p90", "expected_start"}
STATS_FIELDS = {
    "total": int,
    "queued": int,
    "waiting": int,
    "running": int,
    "done": int,
    "failed": int,
    "cancelled": int,
    "skipped": int,
    "executor_running": bool,
    "executor_paused": bool,
    "gpu_workers_alive": int,  # an extension
    "drain_eta": (str, type(None)),  # an extension
}


def check_task(task: dict[str, Any]) -> None:
    assert set(TASK_FIELDS) <= set(task) <= set(TASK_FIELDS) | EXTENSIONS, task.keys()
    for field, types in TASK_FIELDS.items():
        assert isinstance(task[field], types), (field, task[field])
    assert task["task_type"] in {"benchmark", "attrgen", "pool_gen", "balanced_gen"}
    assert task["status"] in {
        "queued", "waiting", "running", "done", "failed", "cancelled", "skipped"
    }  # fmt: skip
    if "progress" in task:
        assert task["status"] == "running"
        assert set(task["progress"]) == {"done", "total", "percent"}


def task_count() -> int:
    """Every task run Prefect has (counted by the server: no page limit)."""

    async def count() -> int:
        async with get_client() as client:
            return sum((await gateway.count_by_status(client)).values())

    return asyncio.run(count())


def test_every_response_field_has_the_contracts_name_and_type(api: httpx.Client) -> None:
    api.post("/queue/pause")
    try:
        added = api.post(
            "/queue/add", json={"task_type": "pool_gen", "config": {"n": 20000}}
        ).json()
        waiting = api.post(
            "/queue/add",
            json={"task_type": "balanced_gen", "config": {}, "depends_on": added["task_id"]},
        ).json()
        assert set(added) == {"task_id"} and isinstance(added["task_id"], int)

        task = api.get(f"/queue/{added['task_id']}").json()
        check_task(task)
        assert (task["status"], task["label"]) == ("queued", "Pool Generation: 20000 personas")
        assert task["blocked_by"] == "the queue is paused"  # an extension: why it waits
        assert api.get(f"/queue/{waiting['task_id']}").json()["status"] == "waiting"
        listed = api.get("/queue", params={"include_done": False, "limit": 50}).json()
        for task in listed:
            check_task(task)
        positions = [t["position"] for t in listed]
        assert positions == sorted(positions)  # active tasks by position
        stats = api.get("/queue/stats").json()
        assert set(stats) == set(STATS_FIELDS)
        assert all(isinstance(stats[k], t) for k, t in STATS_FIELDS.items())
        assert stats["executor_paused"] is True and stats["waiting"] >= 1
        # Removing: a task with a waiting dependent is refused; its dependent can go.
        refused = api.delete(f"/queue/{added['task_id']}")
        assert refused.status_code == 409 and "dependent" in refused.json()["detail"]
        assert api.delete(f"/queue/{waiting['task_id']}").json()["ok"] is True
        assert api.get(f"/queue/{waiting['task_id']}").status_code == 404
        assert api.post(f"/queue/{added['task_id']}/cancel").json()["ok"] is True
        deadline = time.monotonic() + 30  # a released run is stopped by its worker first
        while (cancelled := api.get(f"/queue/{added['task_id']}").json())["status"] != "cancelled":
            assert time.monotonic() < deadline, cancelled
            time.sleep(0.5)
        assert cancelled["error"]
        # Last, as they let the queue run again: the control endpoints' answers.
        for action in ("stop", "start", "resume", "pause"):
            answer = api.post(f"/queue/{action}").json()
            assert set(answer) == {"ok", "message"} and answer["ok"] is True
    finally:
        api.post("/queue/resume")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"config": {}}, "task_type"),
        ({"task_type": "training", "config": {}}, "task_type"),
        ({"task_type": "pool_gen", "config": [], "label": "x"}, "config"),
        ({"task_type": "pool_gen", "depends_on": "seven"}, "depends_on"),
        ({"task_type": "pool_gen", "colour": "red"}, "colour"),
    ],
)
def test_a_malformed_body_is_422_naming_the_field_and_creates_nothing(
    api: httpx.Client, body: dict[str, Any], field: str
) -> None:
    before = task_count()
    response = api.post("/queue/add", json=body)
    assert response.status_code == 422
    assert any(field in error["loc"] for error in response.json()["detail"])
    assert task_count() == before


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"task_type": "pool_gen", "config": {"n": 0}}, "config.n"),
        ({"task_type": "pool_gen", "config": {"vllm_api_key": "s3cret"}}, "config.vllm_api_key"),
        ({"task_type": "benchmark", "config": {"model_name": "m"}, "depends_on": 999999}, "999999"),
    ],
)
def test_a_refused_submission_is_400_with_a_message_and_creates_nothing(
    api: httpx.Client, body: dict[str, Any], says: str
) -> None:
    before = task_count()
    response = api.post("/queue/add", json=body)
    assert response.status_code == 400 and says in response.json()["detail"]
    assert "s3cret" not in response.text  # a secret is never echoed back
    assert task_count() == before


def test_unknown_ids_are_404(api: httpx.Client) -> None:
    for method, path in [
        ("GET", "/queue/999999"),
        ("DELETE", "/queue/999999"),
        ("POST", "/queue/999999/cancel"),
        ("POST", "/queue/999999/retry"),
    ]:
        assert api.request(method, path).status_code == 404, path


def test_a_task_made_with_the_cli_appears_with_an_id_and_keeps_it(
    api: httpx.Client, prefect_server: str
) -> None:
    seed = random.randrange(10**9)  # tells this run apart from other tests' runs
    command = [
        *(sys.executable, "-m", "prefect", "deployment", "run", "pool_gen/gpu"),
        *("--param", "n=30", "--param", f"seed={seed}"),
    ]
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True)
    deadline = time.monotonic() + 60
    while True:
        tasks = api.get("/queue", params={"limit": 1000}).json()
        cli = [t for t in tasks if t["config"].get("seed") == seed]
        if cli or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(cli) == 1 and cli[0]["task_type"] == "pool_gen"
    again = api.get(f"/queue/{cli[0]['id']}").json()
    assert again["id"] == cli[0]["id"] and again["config"]["n"] == 30
