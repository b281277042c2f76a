"""`serve --profile cluster`: the queue on Prefect's distributed set-up (deployments/cluster.py).

One stack for the module, as a user starts it: Prefect on a PostgreSQL database of its own with
Redis messaging, two API processes behind one port, one services process, the domain database on
PostgreSQL. Tasks go in through the /queue API, whose Prefect client talks to that one port."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from itertools import pairwise

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.support.cluster import Cluster, cluster_stack
from tests.support.night import pipeline
from tests.support.notifications import wait_for_message
from tests.support.waiting import until

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster_stack(tmp_path_factory.mktemp("cluster")) as stack:
        yield stack


def _count(db_url: str, sql: str) -> int:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(sql)).scalar_one())
    finally:
        engine.dispose()


def test_a_dependent_pair_runs_on_the_cluster_profile(cluster: Cluster) -> None:
    assert len(cluster.api_processes()) == 2, "two API processes behind the one port"
    assert len(cluster.services_processes()) == 1

    pool = cluster.add("pool_gen", {"n": 40, "seed": 5}, "cluster-pool")
    balanced = cluster.add("balanced_gen", {"n": 4, "seed": 1}, "cluster-bal", depends_on=pool)
    first, second = cluster.wait_done([pool, balanced])

    assert (first["status"], second["status"]) == ("done", "done"), (first, second)
    assert second["started_at"] >= first["finished_at"]
    assert second["config"]["dataset_id"] == first["result_run_id"]
    # Both databases are the PostgreSQL ones: Prefect's holds the runs, the domain's the data.
    flow_runs = "SELECT count(*) FROM flow_run"
    assert _count(cluster.prefect_db, flow_runs) >= 2
    assert _count(cluster.domain_db, "SELECT count(*) FROM datasets") == 2


def test_a_killed_api_process_loses_no_submission_and_the_queue_goes_on(
    cluster: Cluster,
) -> None:
    labels = [f"kill-{i}" for i in range(5)]
    # A pool_gen ends within a poll or two: the task running at the kill asks a slow fake LLM.
    ids = [cluster.add("pool_gen", {"n": 10, "seed": 1}, labels[0])]
    slow = {"llm": "fake", "model_name": "fake-model@slow=0.5"}
    ids.append(cluster.add("attrgen", slow, labels[1], depends_on=ids[0]))
    cluster.wait(lambda: cluster.task(ids[1])["status"] == "running", 120, "the attrgen runs")

    # The other submissions go in while one API process is SIGKILLed, as the OOM killer would.
    def submit() -> None:
        ids.extend(cluster.add("pool_gen", {"n": 10, "seed": 1}, label) for label in labels[2:])

    submitter = threading.Thread(target=submit)
    victim, survivor = cluster.api_processes()
    submitter.start()
    os.kill(victim, signal.SIGKILL)
    submitter.join(timeout=180)
    assert not submitter.is_alive()

    tasks = cluster.wait_done(ids)
    print(f"\nrequests answered 503 (try again) so far: {cluster.retried}")
    assert [t["status"] for t in tasks] == ["done"] * len(labels), tasks
    listed = httpx.get(f"{cluster.base}/queue", params={"limit": 100}, timeout=30).json()
    mine = sorted(t["label"] for t in listed if t["label"] in labels)
    assert mine == labels, "each submission exactly once"
    # Prefect's client retries a request whose answer was lost: still one run per submission.
    runs = sorted(name for name, _, _ in cluster.runs() if name in labels)
    assert runs == labels, "each submission is one Prefect run"
    # The API process is started again; the other one served meanwhile.
    until(lambda: len(cluster.api_processes()) == 2, 60, "a second API process again")
    assert survivor in cluster.api_processes() and victim not in cluster.api_processes()


def test_a_killed_services_process_is_restarted_and_messages_flow_again(cluster: Cluster) -> None:
    """The automations run in the services process: the queue's messages reach Telegram only
    through its triggers and actions, fed over Redis by the API processes."""
    (services,) = cluster.services_processes()
    os.kill(services, signal.SIGKILL)
    until(
        lambda: [p for p in cluster.services_processes() if p != services],
        120,
        "the stack starts the services process again",
    )

    pool = cluster.add("pool_gen", {"n": 40, "seed": 4}, "cluster-pool-2")
    fake_failing = {"llm": "fake", "model_name": "m@fail"}
    broken = cluster.add("attrgen", fake_failing, "cluster-broken", depends_on=pool)
    assert cluster.wait_done([broken])[0]["status"] == "failed"
    wait_for_message(cluster.telegram, "cluster-broken", timeout=120)


def test_the_night_pipeline_runs_on_the_cluster_profile(cluster: Cluster) -> None:
    """The night of the fault matrix (tests/support/night.py), as a client submits it through
    /queue/add: it runs in order, one task at a time, wired, its results in PostgreSQL."""
    ids: dict[str, int] = {}
    night = pipeline({"llm": "fake", "model_name": "fake-model"})
    for task in night:
        upstream = [ids[label] for label in task.upstream]
        extra = {"depends_on": upstream} if upstream else {}
        ids[task.label] = cluster.add(task.task_type, task.config, task.label, **extra)
    tasks = cluster.wait_done(list(ids.values()), timeout=300)

    assert [t["status"] for t in tasks] == ["done"] * len(night), tasks
    spans = sorted((t["started_at"], t["finished_at"], t["label"]) for t in tasks)
    assert [label for _, _, label in spans] == [t.label for t in night], "order not kept"
    assert all(end <= start for (_, end, _), (start, _, _) in pairwise(spans)), "overlap"
    by_label = {t["label"]: t for t in tasks}
    attrgen = by_label["night-attrgen"]
    for bench in ("night-slow-bench", "night-quick-bench"):
        assert by_label[bench]["config"]["attrgen_run_id"] == attrgen["result_run_id"]
    # Every planned question answered once, in the PostgreSQL domain database.
    bench_runs = [by_label[b]["result_run_id"] for b in ("night-slow-bench", "night-quick-bench")]
    for run_id in bench_runs:
        planned = _count(cluster.domain_db, f"SELECT planned FROM benchmark_runs WHERE id={run_id}")
        answered = _count(
            cluster.domain_db, f"SELECT count(*) FROM benchmark_results WHERE run_id={run_id}"
        )
        assert planned > 0 and answered == planned, (run_id, planned, answered)
