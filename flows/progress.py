"""A Prefect progress artifact per flow run, updated at most every few seconds.

Updates are sent in the background, one at a time: the work must go on while the Prefect server
is slow or unreachable (a stopped server would otherwise hold every answer for minutes). An
update that finds the last one still on its way is dropped; the next carries newer numbers."""

from __future__ import annotations

import asyncio
import logging
import time
from uuid import UUID

from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact

from biasbench.queue.progress import ProgressCount
from flows.queue_plan import plan_link
from flows.runtime import current_flow_run_id

log = logging.getLogger(__name__)


class Progress:
    """Shows `done / total` on the run's Artifacts tab; cheap to call on every answer."""

    def __init__(self, total: int, *, interval: float, what: str) -> None:
        self.total = total
        self.interval = interval
        self.what = what
        self._link = plan_link(current_flow_run_id())  # every task links the queue's plan
        self._artifact: UUID | None = None
        self._last = 0.0
        self._sending: asyncio.Task[None] | None = None

    def _percent(self, done: int) -> float:
        return ProgressCount(done, self.total).percent

    def _description(self, done: int) -> str:
        return f"{ProgressCount(done, self.total).describe(self.what)} · {self._link}"

    async def start(self, done: int) -> None:
        self._artifact = await acreate_progress_artifact(
            progress=self._percent(done), description=self._description(done)
        )
        self._last = time.monotonic()

    async def update(self, done: int, *, force: bool = False) -> None:
        """force: the last update of a pass, sent after the one on its way (and awaited)."""
        if self._artifact is None:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        if self._sending is not None and not self._sending.done():
            if not force:
                return
            await self._sending
        self._last = now
        self._sending = asyncio.create_task(self._send(self._artifact, done))
        if force:
            await self._sending

    async def _send(self, artifact: UUID, done: int) -> None:
        try:
            await aupdate_progress_artifact(
                artifact, progress=self._percent(done), description=self._description(done)
            )
        except Exception as exc:  # progress is for show: the work goes on without it
            log.warning("Progress not updated (%s: %s)", type(exc).__name__, exc)
