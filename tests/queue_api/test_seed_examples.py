"""The three usage examples of the original queue's README, sent as written (only `llm: fake`
and a small dataset instead of dataset 5), against the running stack."""

from __future__ import annotations

import itertools
import time
from typing import Any

import httpx
import pytest

FAKE = {"llm": "fake"}


def wait_done(api: httpx.Client, task_ids: list[int], timeout: float = 300) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        tasks = [api.get(f"/queue/{task_id}").json() for task_id in task_ids]
        if all(t["status"] in {"done", "failed", "cancelled", "skipped"} for t in tasks):
            return tasks
        if time.monotonic() > deadline:
            raise AssertionError(f"not finished: {[(t['id'], t['status']) for t in tasks]}")
        time.sleep(1)


@pytest.fixture(scope="module")
def dataset_id(api: httpx.Client) -> int:
    """Made through the shim as well: a pool, then a balanced draw of 4 personas."""
    pool = api.post("/queue/add", json={"task_type": "pool_gen", "config": {"n": 200}}).json()
    balanced = api.post(
        "/queue/add",
        json={"task_type": "balanced_gen", "config": {"n": 4}, "depends_on": pool["task_id"]},
    ).json()
    (done,) = wait_done(api, [balanced["task_id"]])
    assert done["status"] == "done" and done["result_run_type"] == "dataset"
    return int(done["result_run_id"])


def test_example_1_a_single_benchmark(api: httpx.Client, dataset_id: int) -> None:
    response = api.post(
        "/queue/add",
        json={
            "task_type": "benchmark",
            "config": {
                "dataset_id": dataset_id,
                "model_name": "mistral-24b",
                "include_rationale": True,
                **FAKE,
                "batch_size": 4,
            },
            "label": "Mistral 24B Benchmark",
        },
    )
    task_id = response.json()["task_id"]
    assert api.post("/queue/start").json()["ok"] is True

    (task,) = wait_done(api, [task_id])
    assert (task["status"], task["label"], task["result_run_type"]) == (
        "done",
        "Mistral 24B Benchmark",
        "benchmark",
    )
    assert isinstance(task["result_run_id"], int) and task["error"] is None
    assert "progress" not in task  # only running tasks carry progress


def test_example_2_attrgen_with_a_dependent_benchmark(api: httpx.Client, dataset_id: int) -> None:
    attrgen_response = api.post(
        "/queue/add",
        json={
            "task_type": "attrgen",
            "config": {
                "dataset_id": dataset_id,
                "model_name": "mistral-24b",
                **FAKE,
                "batch_size": 4,
            },
        },
    )
    attrgen_id = attrgen_response.json()["task_id"]
    benchmark_response = api.post(
        "/queue/add",
        json={
            "task_type": "benchmark",
            "config": {
                "dataset_id": dataset_id,
                "model_name": "mistral-24b",
                "include_rationale": True,
                **FAKE,
            },
            "depends_on": attrgen_id,
        },
    )
    benchmark_id = benchmark_response.json()["task_id"]
    assert api.get(f"/queue/{benchmark_id}").json()["status"] in {"waiting", "queued", "running"}

    attrgen, benchmark = wait_done(api, [attrgen_id, benchmark_id])
    assert (attrgen["status"], benchmark["status"]) == ("done", "done")
    assert benchmark["depends_on"] == attrgen_id
    assert benchmark["config"]["attrgen_run_id"] == attrgen["result_run_id"]  # injected
    assert attrgen["finished_at"] <= benchmark["started_at"]
    assert attrgen["label"] == f"AttrGen: mistral-24b - DS#{dataset_id}"
    assert benchmark["label"] == f"Benchmark: mistral-24b - DS#{dataset_id} + Rationale"


def test_example_3_the_night_batch(api: httpx.Client, dataset_id: int) -> None:
    models = ["mistral-24b", "llama-70b", "gpt-4"]
    submitted: list[tuple[str, int, int | None]] = []  # model, task id, its attrgen's task id
    for model in models:
        attrgen = api.post(
            "/queue/add",
            json={
                "task_type": "attrgen",
                "config": {"dataset_id": dataset_id, "model_name": model, **FAKE},
            },
        )
        attrgen_id = attrgen.json()["task_id"]
        submitted.append((model, attrgen_id, None))
        for rationale in [True, False]:
            for scale_mode in ["in", "rev"]:
                bench = api.post(
                    "/queue/add",
                    json={
                        "task_type": "benchmark",
                        "config": {
                            "dataset_id": dataset_id,
                            "model_name": model,
                            "include_rationale": rationale,
                            "scale_mode": scale_mode,
                            **FAKE,
                        },
                        "depends_on": attrgen_id,
                    },
                )
                submitted.append((model, bench.json()["task_id"], attrgen_id))
    api.post("/queue/start")

    tasks = wait_done(api, [task_id for _, task_id, _ in submitted], timeout=600)
    by_id = {t["id"]: t for t in tasks}
    assert [t["status"] for t in tasks] == ["done"] * 15
    for _, task_id, attrgen_id in submitted:
        if attrgen_id is not None:
            assert by_id[task_id]["config"]["attrgen_run_id"] == by_id[attrgen_id]["result_run_id"]
    # One at a time, in submission order: each attrgen's benchmarks before the next attrgen.
    ran = sorted(tasks, key=lambda t: t["started_at"])
    assert [t["id"] for t in ran] == [task_id for _, task_id, _ in submitted]
    for before, after in itertools.pairwise(ran):
        assert before["finished_at"] <= after["started_at"]
    listed = api.get("/queue", params={"include_done": True, "limit": 50}).json()
    assert {t["id"] for t in tasks} <= {t["id"] for t in listed}


def test_running_tasks_show_progress_and_the_extensions_work(
    api: httpx.Client, dataset_id: int
) -> None:
    """`progress` while running; `depends_on` as a list and `priority` (the extensions)."""
    slow = {"dataset_id": dataset_id, "model_name": "m@slow=0.2", **FAKE, "batch_size": 2}
    first = api.post("/queue/add", json={"task_type": "benchmark", "config": slow}).json()
    second = api.post(
        "/queue/add", json={"task_type": "attrgen", "config": {**slow, "model_name": "m"}}
    ).json()
    both = api.post(
        "/queue/add",
        json={
            "task_type": "benchmark",
            "config": {"dataset_id": dataset_id, "model_name": "m", **FAKE},
            "depends_on": [first["task_id"], second["task_id"]],
        },
    ).json()
    urgent = api.post(
        "/queue/add", json={"task_type": "pool_gen", "config": {"n": 20}, "priority": 5}
    ).json()

    deadline = time.monotonic() + 120
    while "progress" not in (running := api.get(f"/queue/{first['task_id']}").json()):
        assert time.monotonic() < deadline, running
        time.sleep(0.3)
    progress = running["progress"]
    assert running["status"] == "running" and progress["total"] == 60  # 4 personas x 15 traits
    assert 0 <= progress["done"] <= progress["total"]
    assert progress["percent"] == round(100 * progress["done"] / progress["total"], 1)

    tasks = wait_done(
        api, [first["task_id"], second["task_id"], both["task_id"], urgent["task_id"]]
    )
    assert [t["status"] for t in tasks] == ["done"] * 4
    assert tasks[2]["depends_on"] == [first["task_id"], second["task_id"]]
    assert tasks[2]["config"]["attrgen_run_id"] == tasks[1]["result_run_id"]
    assert tasks[3]["priority"] == 5
    assert tasks[3]["started_at"] < tasks[1]["started_at"]  # jumped the queued attrgen
