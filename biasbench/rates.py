"""Measured task rates: what each LLM task did per interval, kept in the domain database.

Why a table of intervals and not a duration per task: the ETA of a running task needs its
recent rate (a server that slows down half-way), the ETA of a queued task needs the rates of
past runs of its kind (model, task type, batch size), and both must survive a restart of any
process and be shared by several hosts. One row per result flush is small (a few thousand per
night) and is written in its own short transaction right after the batch it describes."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from biasbench.db.models import TaskRate
from biasbench.llm.base import Usage

# Past runs of a kind looked at for its prior: enough for a median, few enough to follow a
# server upgrade within a night or two.
PAST_RUNS = 20


@dataclass(frozen=True)
class RateKind:
    """What makes two runs' rates comparable."""

    task_type: str
    model_name: str
    batch_size: int


@dataclass(frozen=True)
class Interval:
    """One recorded interval, as the estimators read it (biasbench.estimate)."""

    seconds: float
    requests: int
    failures: int
    done: int
    total: int
    ended_at: datetime

    @property
    def items(self) -> int:
        """Items the interval settled: a failure takes server time too."""
        return self.requests + self.failures


class RateMeter:
    """Counts a task's outcomes and turns them into one row per flush (`store` writes it).

    Token counts come from the client's `usage` (the OpenAI `usage` field, summed), so the row
    holds the difference since the last flush."""

    def __init__(
        self,
        kind: RateKind,
        *,
        server: str,
        flow_run_id: str | None,
        total: int,
        usage: Usage,
        store: Callable[[dict[str, Any]], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kind, self.server, self.flow_run_id, self.total = kind, server, flow_run_id, total
        self._usage, self._store, self._clock = usage, store, clock
        self._since = clock()
        self._tokens = (usage.prompt_tokens, usage.completion_tokens)
        self._requests = self._failures = 0

    def note(self, *, answered: bool) -> None:
        if answered:
            self._requests += 1
        else:
            self._failures += 1

    def flush(self, done: int) -> None:
        """Write what happened since the last flush; nothing when nothing was settled."""
        if not (self._requests or self._failures):
            return
        now = self._clock()
        prompt, completion = self._usage.prompt_tokens, self._usage.completion_tokens
        row = {
            "flow_run_id": self.flow_run_id,
            "task_type": self.kind.task_type,
            "model_name": self.kind.model_name,
            "server": self.server,
            "batch_size": self.kind.batch_size,
            "seconds": max(now - self._since, 0.0),
            "requests": self._requests,
            "failures": self._failures,
            "prompt_tokens": prompt - self._tokens[0],
            "completion_tokens": completion - self._tokens[1],
            "done": done,
            "total": self.total,
        }
        self._store(row)
        self._since, self._tokens = now, (prompt, completion)
        self._requests = self._failures = 0


def record(session: Session, row: dict[str, Any], *, ended_at: datetime | None = None) -> None:
    session.add(TaskRate(**row, ended_at=ended_at or datetime.now(UTC)))


def _interval(row: TaskRate) -> Interval:
    ended = row.ended_at if row.ended_at.tzinfo else row.ended_at.replace(tzinfo=UTC)
    return Interval(row.seconds, row.requests, row.failures, row.done, row.total, ended)


def intervals_of(session: Session, flow_run_id: str) -> list[Interval]:
    """A run's intervals in the order they happened (all its attempts: a resume goes on)."""
    rows = session.scalars(
        select(TaskRate).where(TaskRate.flow_run_id == flow_run_id).order_by(TaskRate.id)
    )
    return [_interval(r) for r in rows]


def kind_of(session: Session, flow_run_id: str) -> RateKind | None:
    row = session.scalars(
        select(TaskRate).where(TaskRate.flow_run_id == flow_run_id).order_by(TaskRate.id.desc())
    ).first()
    return None if row is None else RateKind(row.task_type, row.model_name, row.batch_size)


def past_runs(
    session: Session, kind: RateKind, *, excluding: Collection[str] = ()
) -> list[list[Interval]]:
    """The newest PAST_RUNS runs of this kind (oldest first), each as two intervals: its first
    (the warm-up) and the rest summed, which is all a prior needs (biasbench.estimate.prior_of).
    Summed in the database: a night's runs have thousands of rows, and the queue's plan is
    made every minute."""
    runs = (
        select(
            TaskRate.flow_run_id,
            func.min(TaskRate.id),
            func.max(TaskRate.id),
            func.sum(TaskRate.seconds),
            func.sum(TaskRate.requests),
            func.sum(TaskRate.failures),
        )
        .where(
            TaskRate.task_type == kind.task_type,
            TaskRate.model_name == kind.model_name,
            TaskRate.batch_size == kind.batch_size,
            TaskRate.flow_run_id.is_not(None),
        )
        .group_by(TaskRate.flow_run_id)
        .order_by(func.max(TaskRate.id).desc())
        .limit(PAST_RUNS + len(excluding))
    )
    found: list[list[Interval]] = []
    for flow_run_id, first_id, last_id, seconds, requests, failures in session.execute(runs):
        if flow_run_id in excluding or len(found) == PAST_RUNS:
            continue
        first = _interval(session.get_one(TaskRate, first_id))
        if first_id == last_id:
            found.append([first])
            continue
        last = _interval(session.get_one(TaskRate, last_id))
        rest = Interval(
            seconds - first.seconds,
            requests - first.requests,
            failures - first.failures,
            last.done,
            last.total,
            last.ended_at,
        )
        found.append([first, rest])
    return found[::-1]


def idle_gaps(session: Session, *, limit: int = 50) -> list[float]:
    """Seconds between the end of one run and the first interval of the next (its start-up,
    the worker's pick-up, a model load): measured, not assumed. Gaps over an hour are the
    queue being empty, not overhead, and are left out."""
    spans = session.execute(
        select(
            TaskRate.flow_run_id,
            func.min(TaskRate.id),
            func.max(TaskRate.ended_at),
        )
        .where(TaskRate.flow_run_id.is_not(None))
        .group_by(TaskRate.flow_run_id)
        .order_by(func.min(TaskRate.id).desc())
        .limit(limit)
    ).all()
    starts: list[tuple[datetime, datetime]] = []
    for _, first_id, last_end in spans:
        first = session.get_one(TaskRate, first_id)
        start = _interval(first).ended_at - timedelta(seconds=first.seconds)
        end = last_end if last_end.tzinfo else last_end.replace(tzinfo=UTC)
        starts.append((start, end))
    starts.sort()
    return [
        gap
        for (_, previous_end), (start, _) in pairwise(starts)
        if 0 <= (gap := (start - previous_end).total_seconds()) <= 3600
    ]


def items_done(intervals: Sequence[Interval]) -> int:
    return intervals[-1].done if intervals else 0
