"""Messages users get on their phone, end to end: a real Prefect server (its automations send
them), real worker and manager processes, and a real Bot API server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from prefect import get_client

from biasbench.errors import LLM_UNREACHABLE
from biasbench.queue.control import cancel, set_paused
from biasbench.queue.submit import SubmitRequest, submit
from deployments.notifications import MANAGER_STOPPED, SEND_MESSAGES
from deployments.telegram import TelegramBot
from tests.support.notifications import wait_for_message
from tests.support.openai_server import closed_port_url
from tests.support.smtp_server import smtp_server
from tests.support.stack import REPO, RunningStack, queue_stack
from tests.support.telegram_server import Answer, TelegramServer
from tests.support.waiting import all_final, wait_for


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("notifications")


@pytest.fixture(scope="module")
def inbox() -> Iterator[tuple[dict[str, str], list[EmailMessage]]]:
    """A real SMTP server on 127.0.0.1 and the environment that points setup at it."""
    with smtp_server() as (server, messages):
        env = {
            "SMTP_HOST": server.hostname,
            "SMTP_PORT": str(server.port),
            "SMTP_STARTTLS": "false",
            "EMAIL_FROM": "queue@example.org",
            "EMAIL_TO": "night-shift@example.org, lead@example.org",
        }
        yield env, messages


@pytest.fixture(scope="module")
def stack(
    prefect_server: str,
    home: Path,
    telegram_env: tuple[TelegramServer, dict[str, str]],
    inbox: tuple[dict[str, str], list[EmailMessage]],
) -> Iterator[RunningStack]:
    channels = {**telegram_env[1], **inbox[0]}  # Telegram and e-mail
    with queue_stack(
        prefect_server, f"sqlite:///{home / 'queue.db'}", home, extra_env=channels
    ) as running:
        yield running


@pytest.fixture(scope="module")
def dataset_id(stack: RunningStack, telegram: TelegramServer) -> int:
    """A 4-persona dataset made through the queue; its two tasks announce their completion."""

    async def make() -> list[str]:
        async with get_client() as client:
            pool = await submit(
                client, SubmitRequest("pool_gen", {"n": 100, "seed": 3}, label="notify-pool")
            )
            balanced = await submit(
                client, SubmitRequest("balanced_gen", {"n": 4}, upstream=[pool], label="notify-ds")
            )
        await wait_for(all_final, [pool, balanced])
        return [pool, balanced]

    asyncio.run(make())
    done = wait_for_message(telegram, "✅ <b>Done</b>", "notify-ds", "Result: dataset")
    return int(done.text.split("Result: dataset ")[1].split(" ")[0])


def test_the_queue_announces_its_start_and_each_completed_task(
    telegram: TelegramServer, dataset_id: int
) -> None:
    assert wait_for_message(telegram, "▶️ <b>Queue started</b>")
    pool = wait_for_message(telegram, "✅ <b>Done</b> in ", "pool_gen “notify-pool”")
    assert "Result: dataset" in pool.text and "Open in Prefect" in pool.text

    async def benchmark() -> None:
        async with get_client() as client:
            bench = await submit(
                client,
                SubmitRequest(
                    "benchmark",
                    {"llm": "fake", "model_name": "m", "dataset_id": dataset_id},
                    label="notify-bench",
                ),
            )
        await wait_for(all_final, [bench])

    asyncio.run(benchmark())
    done = wait_for_message(telegram, "benchmark “notify-bench”")
    assert "Quick analysis: 60/60 results, 0 failed" in done.text  # 4 personas × 15 traits
    # Then the queue is idle: one message per idle spell, counting what ran since the last one.
    drained = "🏁 <b>All queued tasks processed</b>: "
    wait_for_message(telegram, drained, after=telegram.messages.index(done))
    counts = [t.removeprefix(drained) for t in telegram.texts() if t.startswith(drained)]
    assert sum(int(c.split(" done")[0]) for c in counts) == 3  # pool, dataset, benchmark


def test_a_failure_names_its_error_and_dependents_and_arrives_once_through_429s(
    stack: RunningStack, telegram: TelegramServer
) -> None:
    telegram.script([Answer(429, retry_after=1, text="notify-broken")] * 2)

    async def scenario() -> None:
        async with get_client() as client:
            await set_paused(client, True)  # both are queued before the first one fails
            broken = await submit(
                client,
                SubmitRequest(
                    "attrgen",
                    {"llm": "fake", "model_name": "m", "dataset_id": 10**6},
                    label="notify-broken",
                ),
            )
            after = await submit(
                client,
                SubmitRequest(
                    "benchmark",
                    {"llm": "fake", "model_name": "m"},
                    upstream=[broken],
                    label="notify-after-broken",
                ),
            )
            await set_paused(client, False)
        runs = await wait_for(all_final, [broken, after])
        assert [r.state_name for r in runs] == ["Failed", "Skipped"]

    asyncio.run(scenario())
    failed = wait_for_message(telegram, "❌ <b>Failed</b>: attrgen “notify-broken”")
    assert "dataset_id" in failed.text and "1 dependent task will be skipped." in failed.text
    wait_for_message(telegram, "🏁 <b>All queued tasks processed</b>: 1 failed, 1 skipped")
    texts = telegram.texts()
    assert texts.count(failed.text) == 1  # the 429s were retried, nothing was sent twice
    assert not any("notify-after-broken" in t for t in texts)  # no message per skipped task
    assert sum(r.get("text") == failed.text for r in telegram.requests) == 3


def test_the_same_messages_arrive_by_e_mail(
    telegram: TelegramServer, inbox: tuple[dict[str, str], list[EmailMessage]]
) -> None:
    failed = wait_for_message(telegram, "❌ <b>Failed</b>: attrgen “notify-broken”")
    deadline = time.monotonic() + 60
    while not any("notify-broken" in str(m["Subject"]) for m in inbox[1]):
        assert time.monotonic() < deadline, [m["Subject"] for m in inbox[1]]
        time.sleep(0.2)
    mail = next(m for m in inbox[1] if "notify-broken" in str(m["Subject"]))
    assert mail["To"] == "night-shift@example.org, lead@example.org"
    plain = mail.get_body(preferencelist=("plain",))
    assert plain is not None and "1 dependent task will be skipped." in plain.get_content()
    assert "<b>" not in plain.get_content()  # the plain part is plain
    assert mail["Subject"] == "❌ Failed: attrgen “notify-broken”" and failed


def test_a_critical_failure_is_marked_with_its_hint_within_seconds(
    stack: RunningStack, telegram: TelegramServer, dataset_id: int
) -> None:
    async def scenario() -> float:
        async with get_client() as client:
            bench = await submit(
                client,
                SubmitRequest(
                    "benchmark",
                    {
                        "llm": "vllm",
                        "model_name": "m",
                        "dataset_id": dataset_id,
                        "vllm_base_url": closed_port_url(),
                    },
                    label="notify-unreachable",
                ),
            )
        (run,) = await wait_for(all_final, [bench])
        assert run.state is not None and run.state_name == LLM_UNREACHABLE.name
        return run.state.timestamp.timestamp()

    failed_at = asyncio.run(scenario())
    message = wait_for_message(telegram, "⚠️ <b>CRITICAL: LLM unreachable</b>", "notify-unreachable")
    assert f"Hint: {LLM_UNREACHABLE.hint}" in message.text
    # Reported, not asserted (timings belong in benchmarks): the issue asks for under 2 s.
    print(f"failure message arrived {message.received - failed_at:.2f} s after the failure")


def test_a_cancelled_task_sends_no_message(stack: RunningStack, telegram: TelegramServer) -> None:
    async def scenario() -> None:
        async with get_client() as client:
            await set_paused(client, True)
            await asyncio.to_thread(wait_for_message, telegram, "⏸ <b>Queue paused</b>")
            try:
                held = await submit(
                    client, SubmitRequest("pool_gen", {"n": 10}, label="notify-cancelled")
                )
                await cancel(client, held)
                await wait_for(all_final, [held])
                after = await submit(
                    client, SubmitRequest("pool_gen", {"n": 10}, label="notify-after-cancel")
                )
            finally:
                await set_paused(client, False)
        await wait_for(all_final, [after])

    asyncio.run(scenario())
    wait_for_message(telegram, "pool_gen “notify-after-cancel”")
    assert not any("notify-cancelled" in text for text in telegram.texts())


def test_a_run_scheduled_for_later_does_not_hold_back_the_drained_message(
    stack: RunningStack, telegram: TelegramServer, prefect_server: str
) -> None:
    command = [
        *(sys.executable, "-m", "prefect", "deployment", "run", "pool_gen/gpu"),
        *("--param", "n=10", "--flow-run-name", "notify-tomorrow", "--start-in", "1 day"),
    ]
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    out = subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True, text=True)
    later = out.stdout.split("UUID: ")[1].split()[0]

    async def scenario() -> None:
        async with get_client() as client:
            now = await submit(client, SubmitRequest("pool_gen", {"n": 10}, label="notify-tonight"))
        await wait_for(all_final, [now])

    try:
        asyncio.run(scenario())
        done = wait_for_message(telegram, "pool_gen “notify-tonight”")
        # Whatever it counts (an earlier test's tasks may not have drained yet on a loaded
        # machine), it comes although tomorrow's run is still waiting.
        drained = "🏁 <b>All queued tasks processed</b>"
        wait_for_message(telegram, drained, after=telegram.messages.index(done))
    finally:
        asyncio.run(_delete(later))


async def _delete(run_id: str) -> None:
    async with get_client() as client:
        await client.delete_flow_run(run_id)  # type: ignore[arg-type]


def test_a_manager_that_dies_is_reported_by_the_server(
    stack: RunningStack, telegram: TelegramServer
) -> None:
    before = len(telegram.messages)
    stack.restart_manager()  # SIGKILL; its run is marked Crashed
    message = wait_for_message(telegram, "⚠️ <b>CRITICAL: queue manager Crashed</b>", after=before)
    assert "Hint: no queued task starts" in message.text and "Open in Prefect" in message.text
    assert wait_for_message(telegram, "▶️ <b>Queue started</b>", after=before)  # the new one


def test_a_task_that_ends_while_no_manager_watches_is_announced_once_by_the_next(
    stack: RunningStack, telegram: TelegramServer, dataset_id: int
) -> None:
    slow = {"llm": "fake", "model_name": "m@slow=0.5", "batch_size": 4, "dataset_id": dataset_id}

    async def scenario() -> None:
        async with get_client() as client:
            run = await submit(client, SubmitRequest("benchmark", slow, label="notify-unwatched"))
        await wait_for(lambda runs: runs[0].state_name == "Running", [run], timeout=120)
        stack.kill_manager()  # the task runs on; nobody watches it end
        await wait_for(all_final, [run])
        stack.restart_manager()
        async with get_client() as client:  # proof that the new manager has looked since
            later = await submit(
                client, SubmitRequest("pool_gen", {"n": 10}, label="notify-after-unwatched")
            )
        await wait_for(all_final, [later])

    asyncio.run(scenario())
    wait_for_message(telegram, "✅ <b>Done</b>", "benchmark “notify-unwatched”")
    wait_for_message(telegram, "pool_gen “notify-after-unwatched”")
    assert sum("“notify-unwatched”" in text for text in telegram.texts()) == 1


def _setup(env: dict[str, str]) -> str:
    command = [sys.executable, "-m", "deployments", "setup"]
    return subprocess.run(
        command, cwd=REPO, env=env, check=True, capture_output=True
    ).stdout.decode()


def test_setup_twice_leaves_one_block_and_one_of_each_automation(stack: RunningStack) -> None:
    said = _setup(stack.env)  # the stack's environment names the test Bot API server
    assert "Messages go to: Telegram chat -100777, e-mail to night-shift@example.org" in said

    async def count() -> tuple[int, int, int]:
        async with get_client() as client:
            blocks = await client.read_block_documents_by_type(TelegramBot.get_block_type_slug())
            return (
                len(blocks),
                len(await client.read_automations_by_name(SEND_MESSAGES)),
                len(await client.read_automations_by_name(MANAGER_STOPPED)),
            )

    assert asyncio.run(count()) == (1, 1, 1)


def test_without_credentials_failures_are_logged_and_the_next_task_runs(
    stack: RunningStack, telegram: TelegramServer, home: Path
) -> None:
    channels = ("TELEGRAM_", "SMTP_", "EMAIL_")
    bare = {k: v for k, v in stack.env.items() if not k.startswith(channels)}
    said = _setup(bare)  # no channel: the automations and the block are removed
    assert "Messages are only logged." in said
    before = len(telegram.messages)

    async def scenario() -> None:
        async with get_client() as client:
            broken = await submit(
                client,
                SubmitRequest(
                    "attrgen",
                    {"llm": "fake", "model_name": "m", "dataset_id": 10**6},
                    label="notify-unsent",
                ),
            )
            after = await submit(
                client, SubmitRequest("pool_gen", {"n": 10}, label="notify-goes-on")
            )
        runs = await wait_for(all_final, [broken, after])
        assert [r.state_name for r in runs] == ["Failed", "Completed"]

    asyncio.run(scenario())
    log = (home / "manager.log").read_text()
    assert "Message: ❌ <b>Failed</b>: attrgen “notify-unsent”" in log
    assert len(telegram.messages) == before
