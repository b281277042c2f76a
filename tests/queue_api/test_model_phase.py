"""/queue shows a running task's model and phase: `loading model` while its GPU's model host
starts the server, then `running`. Real processes: the queue stack's GPU worker runs the
benchmark, which asks a real model host, which starts a real model server that takes seconds
to load; the shim reads what the host published."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flows.balanced_gen import balanced_gen
from flows.pool_gen import pool_gen
from tests.support.model_host import model_entry, model_host, write_catalogue
from tests.support.stack import RunningStack, queue_stack
from tests.support.waiting import until

MODEL = "slow-loading-model"
SLOT = 8  # a slot of its own: no other test's host publishes under this name


@pytest.fixture(scope="module")
def stack(prefect_server: str, home: Path) -> Iterator[RunningStack]:
    """The queue stack whose GPU worker has a model host; the host publishes to the session's
    Prefect server, where the shim reads it. The server takes 8 s to load, so the load is
    seen, and answers in 0.3 s, so the run is seen too."""
    entry = model_entry(MODEL, load=8, options="--latency 0.3")
    catalogue = write_catalogue(home / "models.toml", entry)
    with model_host(home, catalogue, publish_to=prefect_server, slot=SLOT) as (_, socket, _s):
        env = {"MODEL_CATALOGUE": str(catalogue), "BIASBENCH_MODEL_HOSTS": socket}
        db = f"sqlite:///{home / 'queue.db'}"
        with queue_stack(prefect_server, db, home, extra_env=env) as running:
            yield running


def test_a_running_task_shows_loading_model_then_running(
    api: httpx.Client, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_URL", f"sqlite:///{home / 'queue.db'}")  # the stack's database
    pool = asyncio.run(pool_gen(n=100, seed=3))
    dataset = asyncio.run(balanced_gen(dataset_id=pool.dataset_id, n=4, seed=1)).dataset_id
    config = {"dataset_id": dataset, "model_name": MODEL, "llm": "vllm", "batch_size": 1}
    added = api.post("/queue/add", json={"task_type": "benchmark", "config": config})
    task_id = added.json()["task_id"]
    seen: list[str | None] = []

    def task_in(phase: str) -> dict[str, Any] | None:
        task: dict[str, Any] = api.get(f"/queue/{task_id}").json()
        assert task["status"] in ("queued", "waiting", "running"), task
        if not seen or seen[-1] != task.get("phase"):
            seen.append(task.get("phase"))
        return task if task.get("phase") == phase else None

    loading = until(lambda: task_in("loading model"), 180, f"loading model; seen {seen}")
    running = until(lambda: task_in("running"), 120, f"running after loading; seen {seen}")
    assert loading["status"] == running["status"] == "running"
    # Never `running` before the model was ready (no phase while queued).
    assert [phase for phase in seen if phase is not None] == ["loading model", "running"], seen
    assert loading["model"] == running["model"] == MODEL
