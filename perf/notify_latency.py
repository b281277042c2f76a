"""How soon a failure's message reaches Telegram, next to Prefect's plain automation path.

    .venv/bin/python perf/notify_latency.py            # --tasks 10; about 1.5 min

Starts the whole stack (`deployments.stack.Stack`, fresh SQLite server database, port 4262) with
Telegram pointed at the test Bot API server of `tests/support/telegram_server.py` on 127.0.0.1,
then fails `--tasks` queue tasks one after another (attrgen on a dataset that does not exist).
Each failure is delivered twice to the same server:

- **this queue**: the manager notices the failure, writes the message (with the dependents it
  will skip) and emits it as an event; the "send queue messages" automation sends it;
- **baseline**: a plain Prefect automation on the run's FAILED state that sends a fixed text
  through the same block type (what a state-triggered notification costs at best).

Latency = the failed state's server timestamp → the Bot API server receiving the message.
Prints p50 and max of both and the ratio of the medians. The issue's target is 2 s."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefect import get_client
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from pydantic import SecretStr

from biasbench.queue.model import QUEUE_TAG
from biasbench.queue.submit import SubmitRequest, submit
from deployments.automations import ensure_automation
from deployments.stack import Stack
from deployments.telegram import TelegramBot
from tests.support.notifications import wait_for_message
from tests.support.telegram_server import CHAT_ID, TOKEN, TelegramServer

PORT = 4262
BASELINE = "perf: baseline failure message"


async def add_baseline(server: TelegramServer) -> None:
    block = TelegramBot(bot_token=SecretStr(TOKEN), chat_id=CHAT_ID, api_base=server.base_url)
    block_id = await block.asave("perf-baseline", overwrite=True)
    trigger = EventTrigger(
        expect={"prefect.flow-run.*"},
        match=ResourceSpecification(
            {"prefect.resource.id": "prefect.flow-run.*", "prefect.state-type": ["FAILED"]}
        ),
        match_related=ResourceSpecification(
            {"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{QUEUE_TAG}"}
        ),
        posture=Posture.Reactive,
        threshold=1,
        within=0,
    )
    action = SendNotification(block_document_id=block_id, body="baseline {{ flow_run.id }}")
    async with get_client() as client:
        await ensure_automation(
            client, AutomationCore(name=BASELINE, trigger=trigger, actions=[action])
        )


async def fail_one(server: TelegramServer, i: int) -> tuple[float, float]:
    label = f"perf-broken-{i}"
    async with get_client() as client:
        run_id = await submit(
            client,
            SubmitRequest(
                "attrgen", {"llm": "fake", "model_name": "m", "dataset_id": 10**6}, label=label
            ),
        )
        while True:
            run = await client.read_flow_run(run_id)  # type: ignore[arg-type]
            if run.state is not None and run.state.is_final():
                break
            await asyncio.sleep(0.1)
    assert run.state is not None
    failed_at = run.state.timestamp.timestamp()
    ours = await asyncio.to_thread(wait_for_message, server, "❌ <b>Failed</b>", label)
    baseline = await asyncio.to_thread(wait_for_message, server, f"baseline {run_id}")
    return ours.received - failed_at, baseline.received - failed_at


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10)
    args = parser.parse_args()
    with TelegramServer() as server, tempfile.TemporaryDirectory(prefix="notify-") as tmp:
        os.environ.pop("PREFECT_API_URL", None)
        os.environ["PREFECT_API_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{tmp}/p.db"
        os.environ["DB_URL"] = f"sqlite:///{tmp}/biasbench.db"
        os.environ["TELEGRAM_BOT_TOKEN"] = TOKEN
        os.environ["TELEGRAM_CHAT_ID"] = CHAT_ID
        os.environ["TELEGRAM_API_BASE"] = server.base_url
        with Stack(port=PORT, api_port=None, logs=Path(tmp) / "logs"):
            asyncio.run(add_baseline(server))
            pairs = [asyncio.run(fail_one(server, i)) for i in range(args.tasks)]
    ours, baseline = [p[0] for p in pairs], [p[1] for p in pairs]
    print(f"\n{args.tasks} failures, seconds from the FAILED state to the Bot API server")
    print(f"{'':28} {'p50':>6} {'max':>6}")
    print(f"{'this queue (via manager)':28} {statistics.median(ours):6.2f} {max(ours):6.2f}")
    print(
        f"{'baseline (state automation)':28} "
        f"{statistics.median(baseline):6.2f} {max(baseline):6.2f}"
    )
    print(f"ratio of medians: {statistics.median(ours) / statistics.median(baseline):.2f}")
    print("(target: this queue under 2 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
