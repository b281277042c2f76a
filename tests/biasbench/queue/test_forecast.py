"""The plan's inputs from what is known now: the model hosts' loaded models and measured loads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from biasbench.db.engine import session_scope
from biasbench.queue.forecast import DEFAULT_IDLE_GAP, plan_queue
from biasbench.queue.model import QueueRun, TaskType

NOW = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)


def queued(rid: str, model: str, minute: int) -> QueueRun:
    return QueueRun(
        id=rid,
        name=rid,
        task_type=TaskType.ATTRGEN,
        state_type="PAUSED",
        state_name="Queued",
        created=NOW - timedelta(hours=1) + timedelta(minutes=minute),
        parameters={"model_name": model},  # no dataset yet, no past runs: no time of its own
    )


def test_swaps_cost_what_the_hosts_measured_and_start_from_the_model_they_have_loaded(
    engine: Engine,
) -> None:
    runs = {"A": queued("A", "m1", 1), "B": queued("B", "m2", 2)}
    hosts = {
        "model-host-gpu-0": {
            "model": "m1",
            "servers": {"m1": "ready"},
            "loads": [{"model": "m2", "how": "cold start", "seconds": 20.0, "at": 1.0}],
        }
    }
    gap = DEFAULT_IDLE_GAP
    with session_scope(engine) as session:
        measured = plan_queue(session, runs, slots=1, now=NOW, swap_seconds=60.0, hosts=hosts)
        unknown = plan_queue(session, runs, slots=1, now=NOW, swap_seconds=60.0)
    # m1 is loaded: A pays only the gap; B pays the gap and m2's measured 20 s load.
    assert measured.tasks["A"].start == NOW + timedelta(seconds=gap)
    assert measured.tasks["B"].start == NOW + timedelta(seconds=2 * gap + 20.0)
    # No host known: every load costs QUEUE_MODEL_SWAP_SECONDS, the first one too.
    assert unknown.tasks["B"].start == NOW + timedelta(seconds=2 * (gap + 60.0))
