"""/queue shows when each task is expected to start and end, and /queue/stats when the queue
will have drained: extensions that old clients ignore."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import httpx


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_queued_tasks_show_expected_start_end_and_p90_in_line_and_stats_the_drain(
    api: httpx.Client,
) -> None:
    api.post("/queue/pause")  # nothing starts: the plan is as if the queue went on now
    try:
        pool = api.post("/queue/add", json={"task_type": "pool_gen", "config": {"n": 200}})
        dataset = api.post(
            "/queue/add",
            json={
                "task_type": "balanced_gen",
                "config": {"n": 4},
                "depends_on": pool.json()["task_id"],
            },
        )
        bench = api.post(
            "/queue/add",
            json={
                "task_type": "benchmark",
                "config": {"llm": "fake", "model_name": "m"},
                "depends_on": dataset.json()["task_id"],
            },
        )
        ids = [r.json()["task_id"] for r in (pool, dataset, bench)]
        listed = {t["id"]: t for t in api.get("/queue", params={"include_done": False}).json()}
        tasks = [listed[i] for i in ids]
        for task in tasks:
            assert _at(task["expected_start"]) < _at(task["eta"]) <= _at(task["eta_p90"])
        # In line: each starts after its upstream is expected to end.
        for upstream, dependent in itertools.pairwise(tasks):
            assert _at(dependent["expected_start"]) >= _at(upstream["eta"])
        # Nothing measured yet: the benchmark's 4 personas × 15 traits at the default 1 s each.
        bench_task = tasks[2]
        took = _at(bench_task["eta"]) - _at(bench_task["expected_start"])
        assert took == timedelta(seconds=60)

        one = api.get(f"/queue/{ids[2]}").json()
        assert _at(one["expected_start"]) >= _at(bench_task["expected_start"])  # a later "now"
        stats = api.get("/queue/stats").json()
        assert _at(stats["drain_eta"]) >= _at(bench_task["eta"])
    finally:
        for task_id in reversed(ids):
            api.delete(f"/queue/{task_id}")
        api.post("/queue/resume")
