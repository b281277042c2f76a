"""A GPU host on the cluster profile (README "Scaling out"): host 1 is `serve --profile cluster
--role control` (Prefect as two API processes and a services process on PostgreSQL with Redis,
the manager, the /queue API, no GPU worker); host 2 is `serve --role gpu` from its own copy of
the code with its own PREFECT_HOME, sharing only host 1's Prefect address and the PostgreSQL
domain database. The same as tests/deployments/test_remote_host.py on the embedded profile, where
host 2's stop and restart mid-task are tested too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.support.cluster import Cluster, cluster_stack
from tests.support.gpu_host import MODEL, GpuHost
from tests.support.model_host import server_pid
from tests.support.process_tree import descendants
from tests.support.processes import flow_process_pids

# Alone: a cluster stack, a second host and a model server together load both cores, and timed
# tests in the other process flaked beside it (two failures in a CI rehearsal, none without it).
pytestmark = [pytest.mark.postgres, pytest.mark.alone]

# Host 2's model: 4 personas x 15 traits = 60 questions, half a second each.
PLANNED = 60


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[tuple[Cluster, GpuHost]]:
    (tmp_path / "host1").mkdir()
    with cluster_stack(tmp_path / "host1", role="control") as host1:
        host2 = GpuHost(tmp_path / "host2", host1.prefect_api, host1.domain_db)
        host2.install()
        try:
            host2.start()
            yield host1, host2
        finally:
            if host2.process is not None and host2.process.poll() is None:
                host2.stop()


def test_a_chain_submitted_on_the_cluster_runs_on_the_gpu_host(
    hosts: tuple[Cluster, GpuHost],
) -> None:
    host1, host2 = hosts
    pool = host1.add("pool_gen", {"n": 40, "seed": 5}, "gpu-host-pool")
    balanced = host1.add("balanced_gen", {"n": 4, "seed": 1}, "gpu-host-bal", depends_on=pool)
    _, dataset = host1.wait_done([pool, balanced], timeout=180)
    assert dataset["status"] == "done", dataset
    bench_config = {
        "llm": "vllm",
        "model_name": MODEL,
        "batch_size": 1,
        "dataset_id": dataset["result_run_id"],
    }
    bench = host1.add("benchmark", bench_config, "gpu-host-bench")

    # While it runs: its process is one of host 2's (forked from host 2's warm starter), and its
    # model is served by host 2's model host; its progress shows in /queue on host 1.
    running = host1.wait(
        lambda: (t := host1.task(bench)).get("progress", {}).get("done", 0) >= 1 and t,
        240,
        "the benchmark answers on host 2",
    )
    assert (running["status"], running.get("model")) == ("running", MODEL), running
    assert running["progress"]["total"] == PLANNED
    assert host2.process is not None
    run_id = _flow_run_id(host1, bench)
    (flow_process,) = flow_process_pids(run_id)
    assert flow_process in descendants(host2.process.pid)
    assert server_pid(host2.model_state, MODEL) in descendants(host2.process.pid)
    listed = httpx.get(f"{host1.base}/queue", params={"limit": 50}, timeout=30).json()
    assert {t["id"]: t["status"] for t in listed}[bench] == "running"

    # Its results are in the shared PostgreSQL domain database: every question answered once.
    (done,) = host1.wait_done([bench], timeout=240)
    assert done["status"] == "done", done
    result_run = done["result_run_id"]
    assert _scalar(
        host1.domain_db, f"SELECT planned FROM benchmark_runs WHERE id={result_run}"
    ) == (PLANNED)
    answered = f"SELECT count(*) FROM benchmark_results WHERE run_id={result_run}"
    assert _scalar(host1.domain_db, answered) == PLANNED


def _flow_run_id(host: Cluster, task_id: int) -> str:
    flow_run_id = _scalar(
        host.domain_db, f"SELECT flow_run_id FROM queue_task_ids WHERE id={task_id}"
    )
    assert isinstance(flow_run_id, str) and not flow_run_id.startswith("reserved:"), flow_run_id
    return flow_run_id


def _scalar(db_url: str, sql: str) -> Any:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar_one()
    finally:
        engine.dispose()
