"""A Prefect progress artifact per flow run, updated at most every few seconds."""

from __future__ import annotations

import time
from uuid import UUID

from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact

from biasbench.queue.progress import ProgressCount


class Progress:
    """Shows `done / total` on the run's Artifacts tab; cheap to call on every answer."""

    def __init__(self, total: int, *, interval: float, what: str) -> None:
        self.total = total
        self.interval = interval
        self.what = what
        self._artifact: UUID | None = None
        self._last = 0.0

    def _percent(self, done: int) -> float:
        return ProgressCount(done, self.total).percent

    def _description(self, done: int) -> str:
        return ProgressCount(done, self.total).describe(self.what)

    async def start(self, done: int) -> None:
        self._artifact = await acreate_progress_artifact(
            progress=self._percent(done), description=self._description(done)
        )
        self._last = time.monotonic()

    async def update(self, done: int, *, force: bool = False) -> None:
        if self._artifact is None:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        await aupdate_progress_artifact(
            self._artifact, progress=self._percent(done), description=self._description(done)
        )
