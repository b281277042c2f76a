"""Faults in the queue: a running task cancelled or SIGKILLed, a failure retried. Real Prefect
server, real worker and manager processes, a real OpenAI-protocol server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect import get_client
from prefect.client.schemas.objects import FlowRun
from sqlalchemy import Engine, func, select

from biasbench.db.engine import ready_engine, session_scope
from biasbench.db.models import BenchmarkResult, BenchmarkRun
from biasbench.queue.control import cancel, retry, set_paused
from biasbench.queue.submit import SubmitRequest, submit
from biasbench.results import result_of_flow_run
from tests.support.notifications import wait_for_message
from tests.support.openai_server import Delay, OpenAIServer, Status
from tests.support.processes import alive, flow_process_pids, launcher_pid
from tests.support.stack import RunningStack, queue_stack
from tests.support.telegram_server import TelegramServer
from tests.support.waiting import all_final, read_runs, wait_for

MODEL = "test-model"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def stack(
    prefect_server: str, home: Path, telegram_env: tuple[TelegramServer, dict[str, str]]
) -> Iterator[RunningStack]:
    env = {"LLM_MAX_RETRIES": "1", "QUEUE_STALL_SECONDS": "15", **telegram_env[1]}
    with queue_stack(prefect_server, f"sqlite:///{home / 'queue.db'}", home, extra_env=env) as s:
        yield s


@pytest.fixture(scope="module")
def stack_db(stack: RunningStack, home: Path) -> Engine:
    return ready_engine(f"sqlite:///{home / 'queue.db'}")


@pytest.fixture(scope="module")
def dataset_id(stack_db: Engine) -> int:
    """A 4-persona dataset made through the queue (4 × 15 traits = 60 questions per benchmark)."""

    async def make() -> str:
        async with get_client() as client:
            pool = await submit(
                client, SubmitRequest("pool_gen", {"n": 100, "seed": 9}, label="faults-pool")
            )
            balanced = await submit(
                client, SubmitRequest("balanced_gen", {"n": 4}, upstream=[pool], label="faults-ds")
            )
        await wait_for(
            lambda runs: all(r.state and r.state.is_final() for r in runs), [pool, balanced]
        )
        return balanced

    balanced = asyncio.run(make())
    with session_scope(stack_db) as session:
        found = result_of_flow_run(session, balanced)
    assert found is not None
    return found.dataset_id


def results_of(engine: Engine, flow_run_id: str) -> int:
    with session_scope(engine) as session:
        run_id = session.scalar(
            select(BenchmarkRun.id).where(BenchmarkRun.prefect_flow_run_id == flow_run_id)
        )
        if run_id is None:
            return 0
        return (
            session.scalar(
                select(func.count())
                .select_from(BenchmarkResult)
                .where(BenchmarkResult.run_id == run_id)
            )
            or 0
        )


def bench_config(server: OpenAIServer, dataset_id: int) -> dict[str, object]:
    return {
        "dataset_id": dataset_id,
        "model_name": MODEL,
        "llm": "vllm",
        "vllm_base_url": server.base_url,
        "batch_size": 1,
    }


def test_a_failed_task_retried_resumes_and_its_skipped_dependents_run_again(
    stack_db: Engine, dataset_id: int
) -> None:
    with OpenAIServer(models=[MODEL]) as server:
        # 20 answers, then the server fails every request (and its one retry) until more than
        # 20 % of the 60 items failed (LLM_MAX_ERROR_SHARE): 13 items, 26 requests, and the
        # benchmark fails. A retry then asks the 40 items without an answer.
        server.script([Delay(0)] * 20 + [Status(500)] * 26)

        async def scenario() -> tuple[list[FlowRun], list[str], list[FlowRun]]:
            async with get_client() as client:
                bench = await submit(
                    client,
                    SubmitRequest("benchmark", bench_config(server, dataset_id), label="flaky"),
                )
                after = await submit(
                    client,
                    SubmitRequest(
                        "benchmark",
                        {"llm": "fake", "model_name": "m", "dataset_id": dataset_id},
                        upstream=[bench],
                        label="after-flaky",
                    ),
                )
            first = await wait_for(all_final, [bench, after])
            async with get_client() as client:
                requeued = await retry(client, bench)
            second = await wait_for(all_final, [bench, after])
            return first, requeued, second

        first, requeued, second = asyncio.run(scenario())
        asked = len(server.requests)

    assert [r.state_name for r in first] == ["Failed", "Skipped"]
    bench_id = str(first[0].id)
    assert requeued == [bench_id, str(first[1].id)]
    assert [r.state_name for r in second] == ["Completed", "Completed"]
    assert results_of(stack_db, bench_id) == 60  # every key once
    assert asked == 20 + 26 + 40  # nothing stored was asked again


def test_cancelling_a_running_task_stops_its_process_and_keeps_its_results(
    stack_db: Engine, dataset_id: int, telegram: TelegramServer
) -> None:
    with OpenAIServer(models=[MODEL], latency=0.3) as server:

        async def scenario() -> tuple[float, int, int, list[FlowRun]]:
            async with get_client() as client:
                bench = await submit(
                    client,
                    SubmitRequest("benchmark", bench_config(server, dataset_id), label="to-stop"),
                )
                after = await submit(
                    client, SubmitRequest("pool_gen", {"n": 10}, label="after-stop")
                )
            await wait_for(lambda runs: results_of(stack_db, bench) >= 5, [bench], timeout=120)
            (running,) = await read_runs([bench])
            pids = [launcher_pid(running), *flow_process_pids(bench)]
            async with get_client() as client:
                await cancel(client, bench)
            started = time.monotonic()
            while any(map(alive, pids)) and time.monotonic() - started < 30:
                await asyncio.sleep(0.1)
            gone_after = time.monotonic() - started
            final = await wait_for(all_final, [bench, after])
            return gone_after, pids, results_of(stack_db, bench), final

        gone_after, pids, kept, final = asyncio.run(scenario())

    assert len(pids) == 2, "the worker's process and the flow process"
    assert not any(map(alive, pids)) and gone_after < 10
    assert [r.state_name for r in final] == ["Cancelled", "Completed"]
    assert 5 <= kept < 60
    assert results_of(stack_db, str(final[0].id)) == kept  # the partial results stay
    wait_for_message(telegram, "✅ <b>Done</b>", "pool_gen “after-stop”")
    assert not any("to-stop" in text for text in telegram.texts())  # the user knows already


async def kill_flow_process_after(engine: Engine, run_id: str, results: int) -> None:
    """SIGKILL the task's flow process (from outside, as the OOM killer would) once it has
    stored at least `results` answers."""
    await wait_for(lambda runs: results_of(engine, run_id) >= results, [run_id], timeout=120)
    (flow_process,) = flow_process_pids(run_id)
    os.kill(flow_process, signal.SIGKILL)


def test_a_task_killed_from_outside_goes_back_in_its_place_and_resumes(
    stack_db: Engine, dataset_id: int, telegram: TelegramServer
) -> None:
    with OpenAIServer(models=[MODEL], latency=0.2) as server:

        async def scenario() -> tuple[list[FlowRun], float]:
            async with get_client() as client:
                bench = await submit(
                    client,
                    SubmitRequest(
                        "benchmark", bench_config(server, dataset_id), label="killed-once"
                    ),
                )
                dependent = await submit(
                    client,
                    SubmitRequest(
                        "benchmark",
                        {"llm": "fake", "model_name": "m", "dataset_id": dataset_id},
                        upstream=[bench],
                        label="after-killed-once",
                    ),
                )
            await kill_flow_process_after(stack_db, bench, 5)
            killed, stored = time.monotonic(), results_of(stack_db, bench)
            await wait_for(lambda runs: results_of(stack_db, bench) > stored, [bench])
            still = time.monotonic() - killed
            return await wait_for(all_final, [bench, dependent]), still

        final, still = asyncio.run(scenario())

    print(f"the queue stood still {still:.1f} s after the task's process was killed")
    assert [r.state_name for r in final] == ["Completed", "Completed"]
    assert results_of(stack_db, str(final[0].id)) == 60  # resumed: every answer exactly once
    wait_for_message(telegram, "✅ <b>Done</b>", "benchmark “after-killed-once”")
    assert not any("killed-once”" in t and "CRITICAL" in t for t in telegram.texts())


def test_a_task_killed_twice_fails_as_crashed_and_its_dependents_are_skipped(
    stack_db: Engine, dataset_id: int, telegram: TelegramServer
) -> None:
    with OpenAIServer(models=[MODEL], latency=0.2) as server:

        async def scenario() -> tuple[list[FlowRun], list[FlowRun]]:
            async with get_client() as client:
                bench = await submit(
                    client,
                    SubmitRequest("benchmark", bench_config(server, dataset_id), label="killed"),
                )
                dependent = await submit(
                    client,
                    SubmitRequest(
                        "benchmark",
                        {"llm": "fake", "model_name": "m", "dataset_id": dataset_id},
                        upstream=[bench],
                        label="after-killed",
                    ),
                )
                unrelated = await submit(
                    client, SubmitRequest("pool_gen", {"n": 10}, label="goes-on")
                )
            await kill_flow_process_after(stack_db, bench, 5)
            await kill_flow_process_after(stack_db, bench, results_of(stack_db, bench) + 5)
            first = await wait_for(all_final, [bench, dependent, unrelated])
            async with get_client() as client:
                await set_paused(client, False)
                await retry(client, bench)
            second = await wait_for(all_final, [bench, dependent])
            return first, second

        first, second = asyncio.run(scenario())

    assert [r.state_name for r in first] == ["Crashed", "Skipped", "Completed"]
    assert [r.state_name for r in second] == ["Completed", "Completed"]
    assert results_of(stack_db, str(first[0].id)) == 60
    crashed = wait_for_message(telegram, "⚠️ <b>CRITICAL: Crashed</b>: benchmark “killed”")
    assert "Hint: its process was killed" in crashed.text
    assert "1 dependent task will be skipped." in crashed.text


def test_a_task_without_progress_fails_as_stalled_and_its_dependents_are_skipped(
    stack_db: Engine, dataset_id: int, telegram: TelegramServer
) -> None:
    with OpenAIServer(models=[MODEL]) as server:
        server.script([Delay(90)] * 5)  # the LLM server hangs

        async def scenario() -> list[FlowRun]:
            async with get_client() as client:
                bench = await submit(
                    client,
                    SubmitRequest("benchmark", bench_config(server, dataset_id), label="hangs"),
                )
                dependent = await submit(
                    client,
                    SubmitRequest(
                        "benchmark",
                        {"llm": "fake", "model_name": "m", "dataset_id": dataset_id},
                        upstream=[bench],
                        label="after-hang",
                    ),
                )
            return await wait_for(all_final, [bench, dependent], timeout=120)

        hung, dependent = asyncio.run(scenario())

    assert hung.state is not None and hung.state.type.value == "FAILED"
    assert hung.state_name == "Stalled" and "no progress for 15 s" in (hung.state.message or "")
    assert dependent.state_name == "Skipped"
    stalled = wait_for_message(telegram, "⚠️ <b>CRITICAL: Stalled</b>: benchmark “hangs”")
    assert "Hint: no progress for a long time" in stalled.text
