"""The manager's view ahead: the "queue plan" artifact and the drain time its messages quote.

Kept apart from the manager's loop (one call per look) so that its rules stay the manager's:
the plan is computed from the snapshot the manager has read anyway (biasbench.queue.forecast,
then biasbench.queue.eta), when that snapshot changed (at most every 5 s) or a minute has
passed, and the artifact is written only when what it shows changed (times to the minute).

The drain time predicted when the queue became busy is kept until it drains, so the drained
message can put the actual time next to the prediction: that is how users learn how far to
trust the next one."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from prefect.artifacts import acreate_markdown_artifact
from prefect.utilities.urls import url_for
from sqlalchemy import Engine

from biasbench.queue.decide import describe
from biasbench.queue.eta import QueuePlan
from biasbench.queue.forecast import plan_now
from biasbench.queue.messages import Forecast, clock_text
from biasbench.queue.model import QueueRun

ARTIFACT_KEY = "queue-plan"
REPLAN_SECONDS = 60.0  # a plan is redone this often even when nothing changed (rates move)
MIN_REPLAN_SECONDS = 5.0  # and not more often than this while a script submits a batch


def plan_link(flow_run_id: str | None) -> str:
    """A markdown link to the queue plan for a task's own artifacts ("when will I be done"),
    or its key where the UI's address is unknown. Prefect's url_for has no artifact pages, so
    the key page's address is derived from the run's."""
    run_url = url_for("flow-run", obj_id=flow_run_id) if flow_run_id else None
    if not run_url or "/runs/flow-run/" not in run_url:
        return f"expected times: artifact `{ARTIFACT_KEY}`"
    base = run_url.split("/runs/flow-run/", 1)[0]
    return f"[expected times: queue plan]({base}/artifacts/key/{ARTIFACT_KEY})"


class QueuePlanner:
    def __init__(
        self,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        engine: Engine,
        *,
        timezone: str,
        swap_seconds: float,
    ) -> None:
        self._logger, self._engine, self._swap = logger, engine, swap_seconds
        self.timezone: tzinfo = ZoneInfo(timezone)
        self._seen: tuple[tuple[str, str, str | None], ...] | None = None
        self._planned_at = -REPLAN_SECONDS  # the first look plans at once
        self._shown: str | None = None
        self._failing = False
        self.plan: QueuePlan | None = None
        self.predicted: Forecast | None = None  # when the busy spell began: the drain expected

    async def look(
        self,
        runs: dict[str, QueueRun],
        slots: int,
        read_hosts: Callable[[], Awaitable[Mapping[str, Mapping[str, Any]]]] | None = None,
    ) -> None:
        """Replan when the queue changed (or a minute passed); never stops the queue.
        read_hosts: what the model hosts published (loaded models, measured load times), read
        only when a plan is made."""
        seen = tuple(sorted((r.id, r.state_type, r.state_name) for r in runs.values()))
        age = time.monotonic() - self._planned_at
        if age < MIN_REPLAN_SECONDS or (seen == self._seen and age < REPLAN_SECONDS):
            return
        self._planned_at = time.monotonic()  # a failed plan is tried again in a while
        try:
            hosts = await self._hosts(read_hosts)
            # In a thread: a long queue's plan takes a moment, and the loop sends heartbeats.
            self.plan = await asyncio.to_thread(
                plan_now, self._engine, runs, slots=slots, swap_seconds=self._swap, hosts=hosts
            )
            self._seen = seen
            if self.predicted is None and (forecast := self.forecast()) is not None:
                self.predicted = forecast
            await self._show(runs)
            self._failing = False
        except Exception:  # an ETA is for show: the queue goes on without it
            if not self._failing:  # said once, not every few seconds for a night
                self._logger.exception("The queue plan could not be made (tried again later)")
            self._failing = True

    async def _hosts(
        self, read_hosts: Callable[[], Awaitable[Mapping[str, Mapping[str, Any]]]] | None
    ) -> Mapping[str, Mapping[str, Any]]:
        """Without them the plan prices every swap at QUEUE_MODEL_SWAP_SECONDS: still a plan."""
        if read_hosts is None:
            return {}
        try:
            return await read_hosts()
        except Exception as exc:
            self._logger.debug("Model hosts not read for the plan: %r", exc)
            return {}

    def forecast(self) -> Forecast | None:
        plan = self.plan
        if plan is None or plan.drain is None or plan.drain_p90 is None:
            return None
        return Forecast(plan.drain, plan.drain_p90, self.timezone)

    def drained(self) -> Forecast | None:
        """The prediction the busy spell started with; the next spell starts afresh."""
        predicted, self.predicted = self.predicted, None
        return predicted

    async def _show(self, runs: dict[str, QueueRun]) -> None:
        if self.plan is None:
            return
        markdown = plan_markdown(self.plan, runs, self.timezone)
        if markdown == self._shown:
            return
        await acreate_markdown_artifact(
            key=ARTIFACT_KEY, markdown=markdown, description="When each queued task is expected"
        )
        self._shown = markdown


def plan_markdown(plan: QueuePlan, runs: dict[str, QueueRun], timezone: tzinfo) -> str:
    now = datetime.now(UTC)
    zone = now.astimezone(timezone).tzname()

    def at(when: datetime) -> str:
        return clock_text(when, timezone, today=now)

    lines = [
        "# Queue plan",
        "",
        f"Expected times ({zone}) from measured rates; P90: 9 in 10 end before.",
        "",
        "| task | model | expected start | end | P90 |",
        "|---|---|---|---|---|",
    ]
    for run_id, planned in plan.tasks.items():
        run = runs[run_id]
        started = "running" if run.is_running else at(planned.start)
        model = f"`{planned.model}`" if planned.model else "–"
        label = describe(run).replace("|", "\\|")
        cells = [label, model, started, at(planned.end), at(planned.end_p90)]
        lines.append("| " + " | ".join(cells) + " |")
    if plan.drain is not None and plan.drain_p90 is not None:
        lines += ["", f"All done by about {at(plan.drain)} (P90 {at(plan.drain_p90)})."]
    else:
        lines += ["", "Nothing queued."]
    return "\n".join(lines) + "\n"
