"""Two GPUs under the real stack (`Stack(gpus=["0", "1"])`, as `serve --gpus 0,1`): a worker
per GPU, and the manager sends each task to one GPU. Checked from what Prefect recorded: each
run's worker (its `prefect.worker.name` label), start and end times, and the times the manager
released the runs. The timing comparison with one GPU is perf/two_gpus.py."""

from __future__ import annotations

import asyncio
import socket
from itertools import pairwise
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect import get_client
from prefect.client.schemas.actions import WorkPoolUpdate
from prefect.client.schemas.objects import FlowRun

from biasbench.queue import gateway
from biasbench.queue.gpus import gpu_of, parse_worker_name
from biasbench.queue.model import GPU_POOL, RELEASED
from biasbench.queue.submit import SubmitRequest, submit
from deployments.recovery import this_hosts_worker
from deployments.stack import Stack
from tests.deployments.test_setup import setup
from tests.deployments.test_supervision import dataset_id, external_server
from tests.support.model_host import model_entry, write_catalogue
from tests.support.waiting import until, wait_final

__all__ = ["dataset_id", "external_server"]  # fixtures, used below

# 4 personas x 15 traits = 60 questions at 0.1 s: about 6 s of work per task.
QUICK_SLOW = {"llm": "fake", "model_name": "fake-model@slow=0.1", "batch_size": 1}


async def _live_gpus() -> list[str]:
    async with get_client() as client:
        return [g.worker for g in await gateway.read_gpus(client) if g.alive]


async def _submit_paused(requests: list[SubmitRequest]) -> list[str]:
    """Submitted with the pool paused: all in line before the first starts."""
    async with get_client() as client:
        await gateway.set_pool_paused(client, True)
        return [await submit(client, request) for request in requests]


async def _submit_all(requests: list[SubmitRequest]) -> list[str]:
    ids = await _submit_paused(requests)
    async with get_client() as client:
        await gateway.set_pool_paused(client, False)
    return ids


async def _submit_chain() -> list[str]:
    async with get_client() as client:
        pool = await submit(client, SubmitRequest("pool_gen", {"n": 30, "seed": 4}, label="c1"))
        balanced = SubmitRequest("balanced_gen", {"n": 4, "seed": 2}, upstream=[pool], label="c2")
        return [pool, await submit(client, balanced)]


async def _released_at(run_ids: list[str]) -> dict[str, Any]:
    """When the manager (last) released each run."""
    async with get_client() as client:
        released = {}
        for run_id in run_ids:
            states = await client.read_flow_run_states(UUID(run_id))
            released[run_id] = max(s.timestamp for s in states if s.name == RELEASED)
        return released


def _worker(run: FlowRun) -> str:
    return str(run.labels.get("prefect.worker.name"))


def test_two_gpus_run_one_task_each_in_priority_order_and_a_chain_in_order(
    external_server: str, tmp_path: Path, dataset_id: int
) -> None:
    config = {**QUICK_SLOW, "dataset_id": dataset_id}
    low = [SubmitRequest("benchmark", config, label=f"low-{i}") for i in range(4)]
    high = [SubmitRequest("benchmark", config, priority=5, label=f"high-{i}") for i in range(2)]
    try:
        with Stack(gpus=["0", "1"], api_port=None, logs=tmp_path / "logs") as stack:
            assert stack.gpu_workers == ["gpu-worker-0", "gpu-worker-1"]
            assert "gpu-worker" not in stack.processes  # never a plain worker beside them
            # The manager sees both GPUs alive once their workers have said hello.
            until(lambda: len(asyncio.run(_live_gpus())) == 2, 60, "two live GPUs")
            ids = asyncio.run(_submit_all([*low, *high]))
            chain = asyncio.run(_submit_chain())
            runs = asyncio.run(wait_final([*ids, *chain], timeout=300))
            released = asyncio.run(_released_at(ids))
    finally:
        setup(external_server, "--gpu-slots", "1")  # the session's other tests expect one GPU

    assert [r.state_name for r in runs] == ["Completed"] * 8
    by_id = {str(r.id): r for r in runs}
    workers = {_worker(r) for r in runs}
    assert len(workers) == 2 and all(parse_worker_name(w) for w in workers), workers

    # Each run ran on the GPU it was released to, and no GPU ever ran two at once.
    for run in runs:
        assert gpu_of(run.tags) == _worker(run), (run.name, run.tags, _worker(run))
    for worker in workers:
        spans = sorted((r.start_time, r.end_time, r.name) for r in runs if _worker(r) == worker)
        for (_, end, before), (start, _, after) in pairwise(spans):
            assert end is not None and start is not None
            assert end <= start, f"{before} and {after} overlapped on {worker}"

    # Priority first, then submission order, as released by the manager.
    expected = [*ids[4:], *ids[:4]]
    assert sorted(ids, key=lambda i: released[i]) == expected
    # The independent tasks really shared the two GPUs: some ran at the same time.
    independent = [by_id[i] for i in ids]
    assert any(
        a.start_time < b.end_time and b.start_time < a.end_time  # type: ignore[operator]
        for a, b in pairwise(sorted(independent, key=lambda r: r.start_time))  # type: ignore[arg-type, return-value]
    )
    # The dependent started only once its upstream had completed.
    first, second = by_id[chain[0]], by_id[chain[1]]
    assert first.end_time is not None and second.start_time is not None
    assert first.end_time <= second.start_time


def test_each_slot_sees_only_its_gpus_and_one_first_gpu_leaves_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    stack = Stack(api_port=None)
    try:
        stack.gpus = ["2", "3"]
        assert [stack._gpu_env(slot)["CUDA_VISIBLE_DEVICES"] for slot in (0, 1)] == ["2", "3"]
        stack.gpus = ["0+1", "2+3"]  # two slots of two GPUs, one model spanning each pair
        assert stack._gpu_env(1)["CUDA_VISIBLE_DEVICES"] == "2,3"
        stack.gpus = ["1"]  # `--gpus 1`: pinned
        assert stack._gpu_env(0) == {"CUDA_VISIBLE_DEVICES": "1"}
        stack.gpus = ["0"]  # the default: everything the stack sees, as before
        assert stack._gpu_env(0) == {}
    finally:
        stack.stop()


def test_recovery_knows_this_hosts_workers_by_name() -> None:
    host = socket.gethostname()
    assert this_hosts_worker(f"gpu@{host}")  # the plain worker
    assert this_hosts_worker(f"gpu-1@{host}")  # a per-GPU worker
    assert not this_hosts_worker("gpu-1@another-host")
    assert not this_hosts_worker(None)


async def _gpus_with_models() -> dict[str, str]:
    async with get_client() as client:
        return {g.worker: g.model for g in await gateway.read_gpus(client) if g.alive and g.model}


def test_with_model_hosts_a_task_goes_to_the_gpu_that_has_its_model(
    external_server: str, tmp_path: Path, dataset_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Round 1 loads model A on one GPU and B on the other; round 2, submitted B then A, sends
    each to the GPU that has its model (FIFO alone would give B the first free worker), and
    both hosts reuse their server."""
    a, b = "gpu-model-a", "gpu-model-b"
    catalogue = write_catalogue(tmp_path / "models.toml", model_entry(a), model_entry(b))
    monkeypatch.setenv("MODEL_CATALOGUE", str(catalogue))

    def tasks(*models: str, round_: int) -> list[SubmitRequest]:
        return [
            SubmitRequest(
                "benchmark",
                {"dataset_id": dataset_id, "model_name": m, "llm": "vllm", "batch_size": 4},
                label=f"{m}-round-{round_}",
            )
            for m in models
        ]

    try:
        with Stack(gpus=["0", "1"], api_port=None, logs=tmp_path / "logs") as stack:
            assert stack.model_hosts == ["model-host-0", "model-host-1"]
            until(lambda: len(asyncio.run(_live_gpus())) == 2, 60, "two live GPUs")
            first = asyncio.run(_submit_all(tasks(a, b, round_=1)))
            asyncio.run(wait_final(first, timeout=240))
            loaded = until(
                lambda: len(models := asyncio.run(_gpus_with_models())) == 2 and models,
                60,
                "both hosts publish their model",
            )
            second = asyncio.run(_submit_all(tasks(b, a, round_=2)))
            runs = asyncio.run(wait_final(second, timeout=240))
    finally:
        setup(external_server, "--gpu-slots", "1")

    assert sorted(loaded.values()) == [a, b]
    assert [r.state_name for r in runs] == ["Completed", "Completed"]
    for run, model in zip(runs, (b, a), strict=True):
        assert loaded[_worker(run)] == model, (run.name, _worker(run), loaded)
    for host in ("model-host-0", "model-host-1"):  # one load each, then a reuse: no swap
        said = (tmp_path / "logs" / f"{host}.log").read_text()
        assert (said.count(": cold start in"), said.count(": reused in")) == (1, 1), said


async def _ghost_gpu_and_resume(ghost: str) -> None:
    """A third GPU whose worker says hello once and then never again (as if it died at once),
    and a pool limit that lets the manager use it."""
    async with get_client() as client:
        await client.update_work_pool(GPU_POOL, WorkPoolUpdate(concurrency_limit=3))
        await client.send_worker_heartbeat(GPU_POOL, ghost)
        await gateway.set_pool_paused(client, False)


async def _history(run_id: str) -> list[tuple[str | None, str | None]]:
    async with get_client() as client:
        states = sorted(await client.read_flow_run_states(UUID(run_id)), key=lambda s: s.timestamp)
    return [(s.name, s.message) for s in states]


def test_a_task_released_to_a_gpu_whose_worker_died_goes_back_and_runs_on_a_live_one(
    external_server: str, tmp_path: Path, dataset_id: int
) -> None:
    ghost = f"gpu-2@{socket.gethostname()}"
    config = {**QUICK_SLOW, "dataset_id": dataset_id}
    requests = [SubmitRequest("benchmark", config, label=f"task-{i}") for i in range(3)]
    try:
        with Stack(gpus=["0", "1"], api_port=None, logs=tmp_path / "logs"):
            until(lambda: len(asyncio.run(_live_gpus())) == 2, 60, "two live GPUs")
            ids = asyncio.run(_submit_paused(requests))
            asyncio.run(_ghost_gpu_and_resume(ghost))
            runs = asyncio.run(wait_final(ids, timeout=300))
            histories = {i: asyncio.run(_history(i)) for i in ids}
    finally:
        setup(external_server, "--gpu-slots", "1")

    assert [r.state_name for r in runs] == ["Completed"] * 3
    sent_back = [
        i for i, h in histories.items() if any(m and ghost in m for n, m in h if n == "Queued")
    ]
    assert len(sent_back) == 1, histories
    moved = next(r for r in runs if str(r.id) == sent_back[0])
    assert _worker(moved) != ghost and gpu_of(moved.tags) == _worker(moved)
    names = [n for n, _ in histories[sent_back[0]]]
    assert names.index("Queued", names.index("Released")) < names.index("Running"), names
