"""The stack supervises its machine (design.md §8): what dies is restarted and announced, what
keeps dying makes it give up and say why, and a shutdown keeps what users did. (Faults in the
middle of a night, the server's and serve's own included, are the matrix in tests/faults.)

Real processes throughout: the stack's children run against the test session's Prefect server,
faults are real SIGKILLs, and the messages are read back from the server's events. Timings are
printed, not asserted."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prefect import get_client
from prefect.client.schemas.objects import FlowRun, StateType

from biasbench.queue.control import cancel
from biasbench.queue.messages import STACK_GAVE_UP, STACK_RESTARTED
from biasbench.queue.submit import SubmitRequest, submit
from deployments.stack import Stack
from flows.balanced_gen import balanced_gen
from flows.pool_gen import pool_gen
from tests.support.stack import REPO
from tests.support.waiting import read_runs, wait_final, wait_for

# 4 personas x 15 traits = 60 questions, half a second each: half a minute of running.
SLOW = {"llm": "fake", "model_name": "fake-model@slow=0.5", "batch_size": 1}
SMALL_POOL = {"n": 20}
SERVE = [sys.executable, "-m", "deployments", "serve"]


@pytest.fixture
def external_server(prefect_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The stack uses the session's server instead of starting its own."""
    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    return prefect_server


@pytest.fixture
def dataset_id() -> int:
    """4 personas, made by the real flows in this process, in the test's domain database."""
    pool = asyncio.run(pool_gen(n=100, seed=3))
    return asyncio.run(balanced_gen(dataset_id=pool.dataset_id, n=4, seed=1)).dataset_id


def serve_env(prefect_server: str, db_url: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "SMTP_"))},
        "PREFECT_API_URL": prefect_server,
        "DB_URL": db_url,
    }


async def submit_one(task_type: str, config: dict[str, Any], label: str) -> str:
    async with get_client() as client:
        return await submit(client, SubmitRequest(task_type, config, label=label))


def first_start(run: FlowRun) -> datetime:
    assert run.start_time is not None, f"{run.name} never started"
    return run.start_time


async def events_named(name: str, since: datetime) -> list[dict[str, Any]]:
    async with get_client() as client:
        response = await client.request(
            "POST",
            "/events/filter",
            json={
                "filter": {"event": {"name": [name]}, "occurred": {"since": since.isoformat()}},
                "limit": 50,
            },
        )
    return list(response.json()["events"])


def wait_for_events(name: str, since: datetime, timeout: float = 120) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while not (found := asyncio.run(events_named(name, since))):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {name} event within {timeout} s")
        time.sleep(1)
    return found


# --- a dead child is restarted and announced ------------------------------------------------


def test_a_killed_gpu_worker_is_restarted_announced_and_the_queue_goes_on(
    external_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Stack(api_port=None, logs=tmp_path / "logs") as stack:
        before_id = asyncio.run(submit_one("pool_gen", SMALL_POOL, "before the kill"))
        (before,) = asyncio.run(wait_final([before_id]))
        worker = stack.processes["gpu-worker"]
        killed_at = datetime.now(UTC)
        os.killpg(worker.pid, signal.SIGKILL)
        after_id = asyncio.run(submit_one("pool_gen", SMALL_POOL, "after the kill"))
        (after,) = asyncio.run(wait_final([after_id]))
        events = wait_for_events(STACK_RESTARTED, killed_at)
    out = capsys.readouterr().out

    assert [before.state_name, after.state_name] == ["Completed", "Completed"]
    (event,) = events
    assert event["resource"]["prefect.resource.id"] == "biasbench.stack"
    assert event["payload"]["critical"] == "Process died"
    assert event["payload"]["text"] == (
        "⚠️ <b>CRITICAL</b>: the GPU worker died (exit -9, SIGKILL) and was restarted."
    )
    # serve's output says what died, how, and what its log said last.
    assert "the GPU worker died (exit status -9)" in out
    assert "gpu-worker.log:\n    | " in out
    stood_still = (first_start(after) - killed_at).total_seconds()
    healthy = (first_start(before) - before.created).total_seconds()  # type: ignore[operator]
    announced = (datetime.fromisoformat(event["occurred"]) - killed_at).total_seconds()
    print(
        f"\nGPU worker SIGKILLed: a task submitted at once started {stood_still:.1f} s later "
        f"(on the healthy queue: {healthy:.1f} s from submission); announced after "
        f"{announced:.1f} s"
    )


# --- a child that keeps dying ----------------------------------------------------------------


def test_a_process_that_keeps_dying_makes_serve_give_up_and_say_why(
    prefect_server: str, db_url: str, tmp_path: Path
) -> None:
    since = datetime.now(UTC)
    log = tmp_path / "serve.log"
    with socket.socket() as taken:  # the /queue API cannot listen: it exits at every start
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with log.open("wb") as out:
            serve = subprocess.Popen(
                [*SERVE, "--api-port", str(port), "--restart-delay", "0.1"],
                cwd=REPO,
                env=serve_env(prefect_server, db_url),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started = time.monotonic()
        try:
            serve.wait(timeout=300)
        finally:
            if serve.poll() is None:
                os.killpg(serve.pid, signal.SIGKILL)
        gave_up_after = time.monotonic() - started
    output = log.read_text()
    events = wait_for_events(STACK_GAVE_UP, since)

    assert serve.returncode == 1, output
    assert output.count("restarting the /queue API in") == 5
    assert "The queue stopped: the /queue API died again after 5 restarts within 10 minutes" in (
        output
    )
    assert "address already in use" in output.lower()  # its log's last lines, shown by serve
    (event,) = events
    assert event["payload"]["text"].startswith(
        "⛔ <b>CRITICAL: the queue stopped</b>: the /queue API died again after 5 restarts"
    )
    print(f"\nserve gave up {gave_up_after:.1f} s after it was started")


# --- nothing outlives the stack --------------------------------------------------------------


# --- a shutdown keeps what users did ---------------------------------------------------------


def test_stopping_keeps_a_users_cancel_and_requeues_the_task_it_stopped(
    external_server: str, tmp_path: Path, dataset_id: int
) -> None:
    config = {**SLOW, "dataset_id": dataset_id}
    with Stack(gpu_slots=2, api_port=None, logs=tmp_path / "logs"):
        kept = asyncio.run(submit_one("benchmark", config, "stopped by the shutdown"))
        cancelled = asyncio.run(submit_one("benchmark", config, "cancelled by its user"))
        asyncio.run(wait_for(_all_running, [kept, cancelled], timeout=180))

        async def users_cancel() -> None:
            async with get_client() as client:
                await cancel(client, cancelled)

        asyncio.run(users_cancel())
        stopping = time.monotonic()
    stopped_after = time.monotonic() - stopping
    after_stop = asyncio.run(read_runs([kept, cancelled]))

    assert [(r.state_type, r.state_name) for r in after_stop] == [
        (StateType.PAUSED, "Queued"),  # back in the queue, at its place
        (StateType.CANCELLED, "Cancelled"),  # as its user asked
    ]
    with Stack(gpu_slots=2, api_port=None, logs=tmp_path / "logs"):
        final = asyncio.run(wait_final([kept, cancelled], timeout=240))
    assert [r.state_name for r in final] == ["Completed", "Cancelled"]
    print(f"\nthe stack stopped {stopped_after:.1f} s after leaving its block")


def _all_running(runs: list[FlowRun]) -> bool:
    return all(r.state_type == StateType.RUNNING for r in runs)
