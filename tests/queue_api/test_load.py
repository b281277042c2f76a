"""50 clients at once: every add and every delete is answered 2xx, and each add makes exactly one
task. Against the default stack's shape: a real `prefect server start` on SQLite of its own (the
session's test harness runs other services and settings), the GPU worker and the queue manager
polling it (the pool paused: nothing runs), and the API as `python -m queue_api`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.settings import PREFECT_API_URL, temporary_settings

from biasbench.queue.model import QUEUE_TAG
from deployments.process_tree import stop_process_group
from tests.support.outbox import wait_drained
from tests.support.ports import free_port
from tests.support.prefect_server import prefect_server
from tests.support.stack import REPO, queue_stack

TASKS = 200
CLIENTS = 50

# Starting a server and the stack, then 400 requests on a 2-core machine.
pytestmark = [pytest.mark.timeout(900), pytest.mark.alone]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[str]:
    settings = {"PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false"}  # as deployments/stack.py
    with (
        prefect_server(tmp_path / "prefect", settings) as server,
        temporary_settings(updates={PREFECT_API_URL: server.api_url}),
    ):
        server.start()
        db_url = f"sqlite:///{tmp_path / 'queue.db'}"
        with queue_stack(server.api_url, db_url, tmp_path):
            port = free_port()
            env = {
                **os.environ,
                "PREFECT_API_URL": server.api_url,
                "DB_URL": db_url,
                "QUEUE_API_PORT": str(port),
            }
            with (tmp_path / "api.log").open("wb") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "queue_api"],
                    cwd=REPO,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                base = f"http://127.0.0.1:{port}"
                _until_answers(f"{base}/queue/stats")
                yield base
            finally:
                stop_process_group(process)


def _until_answers(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout} s")


async def _from_clients(
    count: int, request: Callable[[int], Awaitable[httpx.Response]]
) -> list[httpx.Response]:
    """`count` requests, from CLIENTS clients that each send their next one when answered."""
    answers: list[httpx.Response] = []
    todo = iter(range(count))

    async def client() -> None:
        for i in todo:
            answers.append(await request(i))

    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return answers


def _refused(answers: list[httpx.Response]) -> list[str]:
    return [f"{a.status_code} {a.text[:200]}" for a in answers if not a.is_success]


async def _queue_runs() -> int:
    async with get_client() as client:
        return await client.count_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[QUEUE_TAG]))
        )


async def _adds_then_deletes(base: str, db_url: str) -> None:
    # Idle connections are dropped before uvicorn closes them (after 5 s): reusing one it is
    # closing fails in the client ("Server disconnected"), which is not what is measured here.
    limits = httpx.Limits(max_connections=CLIENTS, keepalive_expiry=2)
    async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as http:
        assert (await http.post("/queue/pause")).is_success  # nothing runs: no worker takes one

        adds = await _from_clients(
            TASKS,
            lambda i: http.post(
                "/queue/add",
                json={"task_type": "pool_gen", "config": {"n": 10}, "label": f"load-{i}"},
            ),
        )
        assert _refused(adds) == []
        task_ids = [a.json()["task_id"] for a in adds]
        assert len(set(task_ids)) == TASKS
        listed = (await http.get("/queue", params={"limit": 10_000})).json()
        assert sorted(t["label"] for t in listed) == sorted(f"load-{i}" for i in range(TASKS))
        wait_drained(db_url)  # answered before Prefect has them (queue_api/outbox.py)
        assert await _queue_runs() == TASKS  # none lost, none doubled

        deletes = await _from_clients(TASKS, lambda i: http.delete(f"/queue/{task_ids[i]}"))
        assert _refused(deletes) == []
        assert (await http.get("/queue", params={"limit": 10_000})).json() == []
        assert await _queue_runs() == 0


def test_fifty_clients_add_then_delete_and_every_answer_is_2xx(api: str, tmp_path: Path) -> None:
    asyncio.run(_adds_then_deletes(api, f"sqlite:///{tmp_path / 'queue.db'}"))
