"""Rates recorded per flush, read back as the ETAs need them: a run's intervals, the runs of a
kind (summed in the database), the idle gaps between runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from biasbench import rates
from biasbench.db.engine import session_scope
from biasbench.estimate import prior_of
from biasbench.llm.base import Usage

T0 = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
KIND = rates.RateKind("benchmark", "m", 8)


def record_run(engine: Engine, run_id: str, *, start: float, paces: list[float]) -> float:
    """10 items per flush at the given seconds per item; returns when the run ended."""
    clock = [start]
    usage = Usage()
    rows: list[tuple[dict[str, object], float]] = []
    meter = rates.RateMeter(
        KIND,
        server="http://127.0.0.1:8000",
        flow_run_id=run_id,
        total=10 * len(paces),
        usage=usage,
        store=lambda row: rows.append((row, clock[0])),
        clock=lambda: clock[0],
    )
    for n, pace in enumerate(paces):
        for _ in range(9):
            meter.note(answered=True)
        meter.note(answered=False)
        usage.add(100, 20)
        clock[0] += 10 * pace
        meter.flush(9 * (n + 1))
    with session_scope(engine) as session:
        for row, at in rows:
            rates.record(session, row, ended_at=T0 + timedelta(seconds=at))
    return clock[0]


def test_runs_of_a_kind_read_back_summed_give_the_same_prior_and_gaps_are_measured(
    engine: Engine,
) -> None:
    end_a = record_run(engine, "a", start=0.0, paces=[5.0, 1.0, 1.0, 1.0])
    end_b = record_run(engine, "b", start=end_a + 4.0, paces=[6.0, 2.0, 2.0])
    record_run(engine, "c", start=end_b + 2.0, paces=[1.0, 1.0])

    with session_scope(engine) as session:
        full = [rates.intervals_of(session, r) for r in ("a", "b")]
        summed = rates.past_runs(session, KIND, excluding=["c"])
        gaps = rates.idle_gaps(session)
    first = full[0][0]
    assert (first.requests, first.failures, first.done, first.total) == (9, 1, 9, 40)
    assert first.seconds == 50.0 and first.ended_at == T0 + timedelta(seconds=50)
    assert [len(run) for run in summed] == [2, 2]  # oldest first: the warm-up, then the rest
    assert prior_of(summed) == prior_of(full)
    assert sorted(gaps) == [2.0, 4.0]
