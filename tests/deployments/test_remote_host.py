"""A second host (README "Scaling out"): `serve --role gpu` runs only the GPU side (warm starter,
GPU worker, model hosts) against another host's Prefect server and the shared domain database.

Both hosts run on this machine, sharing nothing but PREFECT_API_URL and DB_URL: host 1 is
`serve --role control` from this checkout (its own Prefect server, the manager, the /queue API);
host 2 is `serve --role gpu` from a copy of the source tree in another directory, with its own
PREFECT_HOME and a model catalogue: its model host starts the task's model server (an
OpenAI-compatible test server standing in for vLLM). Real processes throughout; a fake Telegram
server takes host 1's messages."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect import get_client
from prefect.client.schemas.objects import FlowRun
from sqlalchemy import select

from biasbench.db.engine import ready_engine, session_scope
from biasbench.db.models import BenchmarkRun, QueueTaskId
from tests.support.gpu_host import MODEL, GpuHost
from tests.support.model_host import alive, server_pid
from tests.support.night import Night
from tests.support.outbox import wait_drained
from tests.support.process_tree import descendants
from tests.support.processes import flow_process_pids, launcher_pid
from tests.support.stack import REPO
from tests.support.telegram_server import TelegramServer
from tests.support.waiting import until

# Host 2's model: 4 personas x 15 traits = 60 questions, half a second each.
BENCH = {"llm": "vllm", "model_name": MODEL, "batch_size": 1}
PLANNED = 60


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[tuple[Night, GpuHost]]:
    with TelegramServer() as telegram:
        host1 = Night(tmp_path / "host1", telegram, serve_args=("--role", "control"))
        host1.home.mkdir()
        host2 = GpuHost(tmp_path / "host2", host1.api_url, host1.db_url)
        host2.install()
        try:
            host1.start_serve()
            yield host1, host2
        finally:
            if host2.process is not None and host2.process.poll() is None:
                host2.stop()
            if host1.serve is not None and host1.serve.poll() is None:
                host1.stop_serve()


def test_a_task_submitted_on_host_1_runs_on_host_2s_gpu_worker_and_resumes_after_its_stop(
    hosts: tuple[Night, GpuHost],
) -> None:
    host1, host2 = hosts
    started = time.monotonic()
    host2.start()
    up_after = time.monotonic() - started

    # The deployments name nothing of host 1's machine: host 2 runs them with its own code.
    with host1.prefect():
        deployments = asyncio.run(_deployments())
    stored = json.dumps(deployments)
    assert str(REPO) not in stored and sys.prefix not in stored
    assert [d["pull_steps"] for d in deployments] == [[]] * len(deployments)
    assert sorted(d["entrypoint"] for d in deployments) == [
        "flows.attrgen.attrgen",
        "flows.balanced_gen.balanced_gen",
        "flows.benchmark.benchmark",
        "flows.pool_gen.pool_gen",
        "flows.queue_manager.queue_manager",
    ]
    commands = {d["job_variables"].get("command") for d in deployments}
    assert commands == {"python -m deployments.launcher", None}  # None: the manager's

    # A chain submitted on host 1 runs on host 2, in order, the dataset id handed down.
    pool = _add(host1, {"task_type": "pool_gen", "config": {"n": 40, "seed": 5}})
    balanced = _add(
        host1, {"task_type": "balanced_gen", "config": {"n": 4, "seed": 1}, "depends_on": pool}
    )
    dataset = _until_done(host1, balanced)
    assert dataset["result_run_type"] == "dataset"
    bench = _add(
        host1,
        {
            "task_type": "benchmark",
            "config": {**BENCH, "dataset_id": dataset["result_run_id"]},
            "label": "remote bench",
        },
    )
    run_id = _flow_run_id(host1.db_url, bench)
    host1.ids["remote bench"] = run_id
    host1.wait_for_results("remote bench", 10)

    # It runs on host 2: the worker that started it and the flow's process are host 2's, with
    # host 2's copy of the code first on their path (the flow process is forked from host 2's
    # warm starter, which imports from its checkout).
    with host1.prefect():
        run = asyncio.run(_read_run(run_id))
    launcher = _environ(launcher_pid(run))
    assert launcher["PREFECT_HOME"] == str(host2.home)
    assert launcher["PYTHONPATH"].split(os.pathsep)[0] == str(host2.checkout)
    assert host2.process is not None
    (flow_process,) = flow_process_pids(run_id)
    assert flow_process in descendants(host2.process.pid)
    # Its model is served by host 2's model host.
    model_server = server_pid(host2.model_state, MODEL)
    assert model_server in descendants(host2.process.pid)

    # Its progress shows in /queue on host 1, its results are in the shared database.
    shown = _task(host1, bench)
    assert (shown["status"], shown.get("model")) == ("running", MODEL)
    assert shown["progress"]["total"] == PLANNED and shown["progress"]["done"] >= 1
    listed = {t["id"]: t for t in httpx.get(host1.queue_url, timeout=30).json()}
    assert listed[bench]["status"] == "running"

    # Host 2 stops mid-task: the task goes back in the queue, not Crashed, not lost.
    assert host2.stop() == 0, host2.output()
    assert not alive(model_server)
    answered_before = host1.results_of("remote bench")
    assert 10 <= answered_before < PLANNED
    assert _task(host1, bench)["status"] == "queued"
    with host1.prefect():
        history = asyncio.run(_state_names(run_id))
    assert "Queued" in history and not {"Crashed", "Cancelled"} & set(history), history
    assert "1 task(s) of this host put back in the queue" in host2.output()

    # Host 2 again: the task resumes and ends with each planned question answered once.
    restarted = time.monotonic()
    host2.start()
    done = _until_done(host1, bench, timeout=240)
    resumed_in = time.monotonic() - restarted
    assert done["label"] == "remote bench"
    with session_scope(ready_engine(host1.db_url)) as session:
        runs = list(
            session.scalars(select(BenchmarkRun).where(BenchmarkRun.prefect_flow_run_id == run_id))
        )
    assert [r.planned for r in runs] == [PLANNED]  # one run, resumed, not started over
    assert host1.results_of("remote bench") == PLANNED  # one row per question: none twice
    print(
        f"\nhost 2 came up in {up_after:.1f} s; {answered_before} of {PLANNED} answered before "
        f"its stop; after its restart the task finished in {resumed_in:.1f} s"
    )


# --- helpers ---------------------------------------------------------------------------------


def _add(host: Night, body: dict[str, Any]) -> int:
    response = httpx.post(f"{host.queue_url}/add", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return int(response.json()["task_id"])


def _task(host: Night, task_id: int) -> dict[str, Any]:
    return dict(httpx.get(f"{host.queue_url}/{task_id}", timeout=30).json())


def _until_done(host: Night, task_id: int, timeout: float = 180) -> dict[str, Any]:
    task = until(
        lambda: (t := _task(host, task_id))["status"] not in {"queued", "waiting", "running"} and t,
        timeout,
        f"task {task_id} ends",
    )
    assert task["status"] == "done", task
    return dict(task)


def _flow_run_id(db_url: str, task_id: int) -> str:
    wait_drained(db_url)  # an answered add is bound to its run once the outbox has sent it
    with session_scope(ready_engine(db_url)) as session:
        return str(session.get(QueueTaskId, task_id).flow_run_id)  # type: ignore[union-attr]


def _environ(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(e.decode(errors="replace").split("=", 1) for e in entries if b"=" in e)


async def _deployments() -> list[dict[str, Any]]:
    async with get_client() as client:
        return [d.model_dump(mode="json") for d in await client.read_deployments()]


async def _read_run(run_id: str) -> FlowRun:
    async with get_client() as client:
        return await client.read_flow_run(UUID(run_id))


async def _state_names(run_id: str) -> list[str]:
    async with get_client() as client:
        states = await client.read_flow_run_states(UUID(run_id))
    return [str(s.name) for s in sorted(states, key=lambda s: s.timestamp)]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--role", "worker"], "argument --role: invalid choice: 'worker'"),
        (["--role", "gpu"], "the gpu role runs no Prefect server: set PREFECT_API_URL"),
    ],
    ids=["unknown role", "gpu role without a server"],
)
def test_serve_refuses_a_role_it_cannot_run(args: list[str], said: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "deployments", "serve", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert said in done.stderr
