"""Stall detection: a running task that makes no progress for too long is stopped and failed.

Progress is what a task shows users: its progress artifact (updated as answers arrive) or, before
the first one, the moment it entered Running. A stalled task's process is stopped through
Prefect's cancellation (the worker kills it), then the run is marked Failed/"Stalled", which
notifications treat as critical: it almost always means the LLM server hangs."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime

from prefect.client.orchestration import PrefectClient

from biasbench.queue import gateway
from biasbench.queue.model import QueueRun


class StallWatch:
    def __init__(self, after_seconds: float, *, every_seconds: float = 5.0) -> None:
        self.after_seconds = after_seconds
        self.every_seconds = every_seconds  # stalls are minutes long: no need to look each tick
        self.stalled: set[str] = set()  # every run this watch stopped: the queue counts it failed
        self._last_look = 0.0
        self._stopping: dict[str, str] = {}  # run id -> the reason, until its process is gone

    async def check(self, client: PrefectClient, runs: Mapping[str, QueueRun]) -> list[str]:
        """Returns the ids of runs found stalled in this check."""
        if time.monotonic() - self._last_look < self.every_seconds and not self._stopping:
            return []
        self._last_look = time.monotonic()
        now = datetime.now(UTC)
        found = []
        for run in runs.values():
            if run.state_type != "RUNNING" or run.id in self._stopping:
                continue
            last = await gateway.last_progress(client, run.id)
            if last is not None and (now - last).total_seconds() > self.after_seconds:
                reason = (
                    f"stalled: no progress for {self.after_seconds:.0f} s "
                    "(is the LLM server responding?)"
                )
                await gateway.stop_stalled(client, run.id, reason)
                self._stopping[run.id] = reason
                self.stalled.add(run.id)
                found.append(run.id)
        for run_id, reason in list(self._stopping.items()):
            if await gateway.fail_stalled(client, run_id, reason):
                del self._stopping[run_id]
        return found
