"""A task's current attempt, read from its Prefect state history.

Prefect's `start_time` is a run's first start ever, and its `end_time` its latest end: a task
that failed, waited a night and was retried would show a night-long duration. The /queue
contract's `started_at`/`finished_at` are those of the attempt since the task last joined the
queue (submission, retry, or a requeue after a crash or shutdown): every (re)queue puts the run
in a held (PAUSED) state, so the attempt is what follows the last one.

Pure: states are plain records, their types Prefect's string values."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from biasbench.queue.model import FINAL_TYPES, SKIPPED

USER_CANCEL: Final = "Cancelled by user"  # the reason of a cancel a user asked for


@dataclass(frozen=True)
class StateRecord:
    """One state of a run's history."""

    type: str  # Prefect's state type, e.g. "RUNNING"
    name: str | None
    message: str | None
    timestamp: datetime


@dataclass(frozen=True)
class Attempt:
    started_at: datetime | None  # it entered Running in this attempt (None: it never did)
    finished_at: datetime | None  # it reached a final state (None: not finished)
    cancel_reason: str | None = None  # a cancelled attempt: why it was cancelled


NOT_STARTED: Final = Attempt(None, None)


def current_attempt(history: Sequence[StateRecord]) -> Attempt:
    states = sorted(history, key=lambda s: s.timestamp)
    if not states:
        return NOT_STARTED
    held = [i for i, s in enumerate(states) if s.type == "PAUSED"]
    attempt = states[held[-1] + 1 :] if held else states
    last = states[-1]
    return Attempt(
        started_at=next((s.timestamp for s in attempt if s.type == "RUNNING"), None),
        finished_at=last.timestamp if last.type in FINAL_TYPES else None,
        cancel_reason=_cancel_reason(attempt, last),
    )


def _cancel_reason(attempt: Sequence[StateRecord], last: StateRecord) -> str | None:
    """Why the attempt was cancelled: the cancel request's message, not the worker's "Flow run
    was cancelled successfully." that confirms it. A cancel without a reason (the Prefect UI,
    or a held run, which Prefect cancels at once under its own message-less state) came from a
    user; the queue's own cancels (a cascade, a shutdown, a stall) always give one."""
    if last.type != "CANCELLED" or last.name == SKIPPED:
        return None
    requests = [s for s in attempt if s.type == "CANCELLING"]
    reason = requests[-1].message if requests else last.message
    return reason or USER_CANCEL
