"""`make run`: the demo pipeline through the real queue, on two fake models.

pool_gen → balanced_gen → attrgen → two benchmarks (`in` and `rev`), submitted at once; the queue
runs them one at a time, wiring each result into the next. Progress is printed as it changes,
then a summary with links into the Prefect UI.

The LLM tasks name models of a demo catalogue (unless MODEL_CATALOGUE names one): two fake
models served by the project's OpenAI-protocol test server, which "loads" for a few seconds, so
the summary shows the GPU's model host at work: a cold start (attrgen, fake-small), a reuse
(benchmark in, fake-small) and a swap (benchmark rev, fake-large: fake-small is put to sleep)."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path

from prefect import get_client

from biasbench.queue import gateway
from biasbench.queue.messages import model_load_text
from biasbench.queue.model import QueueRun, QueueStatus
from biasbench.queue.submit import SubmitRequest, submit
from biasbench.settings import Settings
from deployments.notifications import describe_channels
from deployments.settings import DeploymentSettings

SMALL, LARGE = "fake-small", "fake-large"
FAKE_SERVER = "{python} -m tests.support.openai_server --port {port} --workers 1 --answers fake"
DEMO_CATALOGUE = f"""# The demo's models: fake ones, served by the project's test server.
[models.{SMALL}]
serve = "{FAKE_SERVER} --model {SMALL} --latency 0.01 --load-seconds 3"
supports_sleep = true
start_timeout = 60

[models.{LARGE}]
serve = "{FAKE_SERVER} --model {LARGE} --latency 0.01 --load-seconds 5"
supports_sleep = true
start_timeout = 60
"""


def use_demo_catalogue(directory: Path) -> Path | None:
    """Point MODEL_CATALOGUE at the demo's catalogue, unless the user set one; before the
    stack starts, so its model host and GPU worker see it."""
    if Settings().model_catalogue is not None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "demo-models.toml"
    path.write_text(DEMO_CATALOGUE)
    os.environ["MODEL_CATALOGUE"] = str(path)
    return path


@dataclass
class Submitted:
    label: str
    run_id: str


async def submit_demo() -> list[Submitted]:
    async with get_client() as client:
        # The original study's population (people living in Germany, official statistics).
        pool = await submit(
            client,
            SubmitRequest(
                "pool_gen",
                {"n": 2000, "seed": 7, "population": "de"},
                label="Pool Generation: 2000 personas",
            ),
        )
        balanced = await submit(
            client,
            SubmitRequest(
                "balanced_gen",
                {"n": 60, "seed": 42},
                upstream=[pool],
                label="Balanced Gen: 60 personas",
            ),
        )
        catalogue = Settings().catalogue
        attrs = await submit(
            client,
            SubmitRequest(
                "attrgen",
                {"model_name": SMALL, "batch_size": 16},
                upstream=[balanced],
                label=f"AttrGen: {SMALL}",
                catalogue=catalogue,
            ),
        )
        benchmarks = [
            await submit(
                client,
                SubmitRequest(
                    "benchmark",
                    {
                        "model_name": model,
                        "batch_size": 32,
                        "scale_mode": mode,
                        "dual_fraction": 0.2,
                    },
                    upstream=[attrs],
                    label=f"Benchmark: {model} ({mode})",
                    catalogue=catalogue,
                ),
            )
            for model, mode in ((SMALL, "in"), (LARGE, "rev"))
        ]
    labels = ["pool", "balanced", "attrgen", "benchmark in", "benchmark rev"]
    return [
        Submitted(label, run_id)
        for label, run_id in zip(labels, [pool, balanced, attrs, *benchmarks], strict=True)
    ]


async def watch(tasks: list[Submitted], timeout: float = 900) -> list[QueueRun]:
    """Print each status change; return when every task is final."""
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while True:
            by_id = await gateway.runs_by_id(client, [t.run_id for t in tasks])
            runs = [by_id[task.run_id] for task in tasks]
            for task, run in zip(tasks, runs, strict=True):
                if seen.get(task.run_id) != run.status:
                    seen[task.run_id] = run.status
                    print(f"  {time.strftime('%H:%M:%S')}  {task.label:14} {run.status}")
            if all(r.is_final for r in runs) or time.monotonic() > deadline:
                return runs
            await asyncio.sleep(1)


async def summary(tasks: list[Submitted], ui_url: str) -> str:
    lines = ["", "Demo pipeline through the queue:", ""]
    async with get_client() as client:
        runs = await gateway.runs_by_id(client, [t.run_id for t in tasks])
        loads = await gateway.model_loads(client)
    for task in tasks:
        run = runs[task.run_id]
        took = f"{run.run_time.total_seconds():5.1f} s" if run.run_time else "     -"
        lines.append(
            f"  {task.label:14} {run.state_name or '':10} {took}  "
            f"{ui_url}/runs/flow-run/{task.run_id}"
        )
        if (load := loads.get(task.run_id)) is not None:
            lines.append(f"  {'':14} {model_load_text(load)}")
    on = describe_channels(DeploymentSettings())
    messages = (
        f"sent to {', '.join(on)} (make notify-test checks them)"
        if on
        else "in the queue manager's log only (set TELEGRAM_BOT_TOKEN and TELEGRAM_CHAT_ID)"
    )
    lines += [
        "",
        f"  domain database  {Settings().db_url}",
        f"  Prefect UI       {ui_url}",
        f"  messages         {messages}",
    ]
    return "\n".join(lines)


def run_demo(ui_url: str) -> int:
    tasks = asyncio.run(submit_demo())
    print(f"Submitted {len(tasks)} tasks; the queue runs them one at a time:")
    runs = asyncio.run(watch(tasks))
    print(asyncio.run(summary(tasks, ui_url)))
    return 0 if all(r.status is QueueStatus.DONE for r in runs) else 1
