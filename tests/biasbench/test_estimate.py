"""A running task's time left, from its recorded intervals and the runs of its kind before it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from biasbench.estimate import duration, prior_of, remaining, speed_factor
from biasbench.rates import Interval

T0 = datetime(2026, 11, 30, tzinfo=UTC)


def run(
    paces: list[float], *, total: int, per_interval: int = 10, warm_up: float = 30.0
) -> list[Interval]:
    """Intervals of `per_interval` items each at the given seconds per item; the first one
    also pays a warm-up."""
    out, done, clock = [], 0, 0.0
    for n, pace in enumerate(paces):
        seconds = per_interval * pace + (warm_up if n == 0 else 0.0)
        done += per_interval
        clock += seconds
        out.append(Interval(seconds, per_interval, 0, done, total, T0 + timedelta(seconds=clock)))
    return out


def test_the_warm_up_of_a_fresh_server_does_not_inflate_the_estimate() -> None:
    intervals = run([1.0] * 5, total=1000, warm_up=120.0)
    left = remaining(intervals, None)
    assert 900 < left.p50 < 1050  # 950 items at 1 s, not at the first interval's 13 s


def test_a_task_that_slows_down_is_followed_by_its_recent_pace() -> None:
    intervals = run([1.0] * 50 + [2.0] * 20, total=2000)
    left = remaining(intervals, None)
    assert left.p50 > 1.7 * 1300  # 1300 items left, at nearly the new 2 s each


def test_past_runs_of_the_kind_set_the_estimate_until_the_task_has_its_own_pace() -> None:
    past = [run([2.0] * 20, total=200) for _ in range(5)]
    prior = prior_of(past)
    assert prior is not None and prior.runs == 5 and abs(prior.pace - 2.0) < 1e-9
    assert abs(prior.start_up - 30.0) < 1e-9
    queued = duration(500, prior)
    assert queued.p50 == 500 * 2.0 + 30.0 and queued.p10 <= queued.p50 <= queued.p90
    # Two intervals in, at 1 s per item: still mostly the prior's 2 s.
    early = remaining(run([1.0, 1.0], total=2000), prior)
    assert early.p50 > 1.5 * 1980
    # Far in, its own 1 s per item has taken over, and the band is narrower.
    late = remaining(run([1.0] * 100, total=2000), prior)
    assert late.p50 < 1.1 * 1000 and late.p90 / late.p50 < early.p90 / early.p50


def test_a_server_slower_tonight_than_its_scattered_past_is_followed_within_minutes() -> None:
    # Past runs at 0.8-1.25 s per item: tonight's speed is anybody's guess.
    past = [run([pace] * 20, total=200) for pace in (0.8, 0.9, 1.0, 1.1, 1.25)]
    prior = prior_of(past)
    assert prior is not None and prior.sigma > 0.1
    # Ten steady intervals in at 1.5 s per item: its own pace, not halfway to the prior's 1 s.
    left = remaining(run([1.5] * 10, total=2000), prior)
    assert 1.4 * 1900 < left.p50 < 1.55 * 1900
    assert left.p10 < 1.5 * 1900 < left.p90
    # The queued tasks behind it on the same server are scaled by as much.
    assert 1.4 < speed_factor(run([1.5] * 10, total=2000), prior) < 1.55


def test_a_task_that_slows_down_is_not_pulled_back_to_the_pace_its_kind_agrees_on() -> None:
    prior = prior_of([run([1.0] * 20, total=200) for _ in range(5)])  # all at 1 s per item
    assert prior is not None
    slowed = run([1.0] * 50 + [1.6] * 30, total=2000)  # the server slowed down half-way
    left = remaining(slowed, prior)
    assert left.p50 > 1.5 * 1200  # 1200 items left at its new 1.6 s, not at the usual 1 s
    assert left.p10 < 1.6 * 1200 < left.p90
