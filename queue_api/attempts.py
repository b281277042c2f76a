"""Each task's current attempt (times, cancel reason) for the task views, from its Prefect state
history: one read per task that has left the queue's hold, and none again until its state
changes (a history never changes behind its current state)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from prefect.client.orchestration import PrefectClient

from biasbench.queue import gateway
from biasbench.queue.attempt import NOT_STARTED, Attempt, current_attempt
from biasbench.queue.model import QueueRun, QueueStatus

_HELD = {QueueStatus.QUEUED, QueueStatus.WAITING}  # not started in this attempt: no read needed
_READS_AT_ONCE = 8
_REMEMBERED = 10_000

_StateKey = tuple[str, object, str, str | None]  # run id and its current state


class Attempts:
    def __init__(self) -> None:
        self._known: dict[_StateKey, Attempt] = {}

    async def of(self, client: PrefectClient, runs: Sequence[QueueRun]) -> dict[str, Attempt]:
        found = {r.id: a for r in runs if (a := _without_history(r)) is not None}
        unknown = [r for r in runs if r.id not in found and _key(r) not in self._known]
        limit = asyncio.Semaphore(_READS_AT_ONCE)

        async def read(run: QueueRun) -> None:
            async with limit:
                history = await gateway.state_history(client, run.id)
            # As of the listed state: a later state belongs to the next listing.
            if run.state_since is not None:
                history = [s for s in history if s.timestamp <= run.state_since]
            self._remember(_key(run), current_attempt(history))

        await asyncio.gather(*(read(r) for r in unknown))
        for run in runs:
            found.setdefault(run.id, self._known.get(_key(run), NOT_STARTED))
        return found

    def _remember(self, key: _StateKey, attempt: Attempt) -> None:
        if len(self._known) >= _REMEMBERED:
            del self._known[next(iter(self._known))]  # the oldest entry
        self._known[key] = attempt


def _without_history(run: QueueRun) -> Attempt | None:
    """The attempt, where the run alone tells it: held runs have not started, and a cascade
    (skip or cancel naming its upstream) ends only held runs, so often hundreds at once."""
    if run.status in _HELD:
        return NOT_STARTED
    if run.ended_by is not None and run.state_type == "CANCELLED":
        reason = None if run.status is QueueStatus.SKIPPED else run.state_message
        return Attempt(started_at=None, finished_at=run.state_since, cancel_reason=reason)
    return None


def _key(run: QueueRun) -> _StateKey:
    return (run.id, run.state_since, run.state_type, run.state_name)
