"""How long a task takes, from measured rates (biasbench.rates): pure functions.

A running task's remaining time is its remaining items × its recent pace (seconds per item, an
exponentially weighted average over time, so a server that slows down half-way is followed
within minutes), blended with the pace of past runs of the same kind, each weighted by how sure
it is: past runs that disagree with each other (the server's speed varies from night to night)
give way to a few minutes of the task's own pace, runs that agree hold until the task's own
intervals are as steady. The first interval of a run is left out of its pace: a fresh server
warms up (CUDA graphs, caches), and those seconds are paid once per run, which the start-up
cost of a queued task accounts for instead.

Durations are log-normal: P50 × exp(±1.28 σ) gives P90 and P10. σ comes from the spread of
past runs of the kind (or a wide default without history) and shrinks as the task's own
progress takes over, but never below a floor for the drift no history can foresee."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from biasbench.rates import Interval

Z90 = 1.2816  # the 90th percentile of a standard normal
SIGMA_FLOOR = 0.04  # drift of a task's pace that no measurement foresees
SIGMA_UNKNOWN = 0.5  # a kind never run before: P90 is about twice P50
# How far a running task's pace may still wander over what is left: down (slower) more than up.
SIGMA_DRIFT_UP = 0.25
SIGMA_DRIFT_DOWN = 0.08
DEFAULT_PACE = 1.0  # seconds per item with no history at all
OWN_SIGMA_ONE = 0.3  # how far one interval's pace may be off the task's, before scatter is seen
# The recent pace's time constant: this share of the run's time so far, within the bounds.
TAU_SHARE, TAU_MIN, TAU_MAX = 0.15, 30.0, 900.0


@dataclass(frozen=True)
class Spread:
    """A duration in seconds: its median and log-normal spread, wider above than below when
    `sigma_up` says so (a pace drops more often than it rises)."""

    p50: float
    sigma: float
    sigma_up: float | None = None

    @property
    def p90(self) -> float:
        return self.p50 * math.exp(Z90 * (self.sigma if self.sigma_up is None else self.sigma_up))

    @property
    def p10(self) -> float:
        return self.p50 * math.exp(-Z90 * self.sigma)

    def plus(self, seconds: float) -> Spread:
        """A fixed cost added (the spread stays that of the variable part)."""
        total = self.p50 + seconds
        scale = self.p50 / total if total > 0 else 0.0
        up = None if self.sigma_up is None else self.sigma_up * scale
        return Spread(total, self.sigma * scale, up)


@dataclass(frozen=True)
class Prior:
    """What past runs of a kind say: pace (seconds per item), its spread, the start-up cost."""

    pace: float
    sigma: float
    start_up: float
    runs: int
    items: int  # the newest run's planned items: a guess when a queued task's size is unknown


def pace_of(intervals: Sequence[Interval]) -> float | None:
    """A finished run's seconds per item, without its (slow) first interval."""
    body = intervals[1:] if len(intervals) > 1 else intervals
    items = sum(i.items for i in body)
    return sum(i.seconds for i in body) / items if items else None


def prior_of(past: Sequence[Sequence[Interval]]) -> Prior | None:
    runs = [(run, pace) for run in past if run and (pace := pace_of(run)) is not None]
    if not runs:
        return None
    logs = [math.log(pace) for _, pace in runs]
    centre = statistics.median(logs)
    if len(logs) >= 3:
        spread = statistics.median(abs(x - centre) for x in logs) * 1.4826  # robust σ
        sigma = max(spread, SIGMA_FLOOR)
    else:
        sigma = SIGMA_UNKNOWN / len(logs)
    pace = math.exp(centre)
    start_up = statistics.median(max(run[0].seconds - run[0].items * p, 0.0) for run, p in runs)
    return Prior(pace, sigma, start_up, len(runs), runs[-1][0][-1].total)


def recent_pace(intervals: Sequence[Interval], *, tau: float | None = None) -> float | None:
    """Seconds per item, weighted towards the last `tau` seconds (default: 15 % of the run's
    time so far, within 30 s – 15 min), without the first interval."""
    body = intervals[1:]
    if not body:
        return None
    tau = tau or _tau(body)
    seconds = items = 0.0
    for interval in body:
        decay = math.exp(-interval.seconds / tau)
        seconds = seconds * decay + interval.seconds
        items = items * decay + interval.items
    return seconds / items if items > 0 else None


def _tau(body: Sequence[Interval]) -> float:
    return min(max(TAU_SHARE * sum(i.seconds for i in body), TAU_MIN), TAU_MAX)


def remaining(
    intervals: Sequence[Interval], prior: Prior | None, *, now: datetime | None = None
) -> Spread:
    """A running task's time left, from `now` (default: its last interval's end)."""
    if not intervals:
        return duration(0, prior)
    last = intervals[-1]
    # What failed in this run is not asked again before it ends (a retry resumes it).
    left = max(last.total - last.done - sum(i.failures for i in intervals), 0)
    own = recent_pace(intervals)
    if own is None:  # only the warm-up interval so far
        base = prior or Prior(DEFAULT_PACE, SIGMA_UNKNOWN, 0.0, 0, last.total)
        spread = Spread(left * base.pace, base.sigma)
    else:
        pace, sigma = _blend(intervals, own, prior)
        share_left = math.sqrt(left / last.total if last.total else 0.0)
        noise = _noise(intervals[1:], left * pace)
        base_sigma = math.hypot(sigma, noise)
        spread = Spread(
            left * pace,
            max(math.hypot(base_sigma, SIGMA_DRIFT_DOWN * share_left), SIGMA_FLOOR),
            max(math.hypot(base_sigma, SIGMA_DRIFT_UP * share_left), SIGMA_FLOOR),
        )
    if now is not None:
        since = max((now - last.ended_at).total_seconds(), 0.0)
        return replace(spread, p50=max(spread.p50 - since, 0.0))
    return spread


def _noise(body: Sequence[Interval], left_seconds: float) -> float:
    """The spread of what is left from the intervals' own scatter: it averages out over many
    intervals, not over the last few."""
    paces = [math.log(i.seconds / i.items) for i in body if i.items and i.seconds > 0]
    if len(paces) < 3:
        return 0.0
    scatter = statistics.pstdev(paces)
    typical = statistics.median(i.seconds for i in body)
    return scatter / math.sqrt(max(left_seconds / typical, 1.0)) if typical > 0 else 0.0


def speed_factor(intervals: Sequence[Interval], prior: Prior | None) -> float:
    """How much slower (> 1) or faster than its kind's past runs a running task goes tonight.
    The same server and model run the tasks queued behind it, so their durations are scaled
    by it too; trusted as the task's own progress grows, and kept within 0.5-2."""
    own = recent_pace(intervals)
    if own is None or prior is None:
        return 1.0
    pace, _ = _blend(intervals, own, prior)
    return min(max(pace / prior.pace, 0.5), 2.0)


def _blend(intervals: Sequence[Interval], own: float, prior: Prior | None) -> tuple[float, float]:
    """The task's pace from its own recent pace and its kind's prior, each weighted by how
    sure it is (inverse variances of the log paces): the prior is as sure as past runs agree
    with each other, the task's own pace as its intervals agree and as many as the average
    holds. Tonight's server may be 25 % off its usual speed: then a few minutes of the task's
    own pace outweigh twenty past runs. Returns the pace and the σ of its log."""
    own_sigma = _own_sigma(intervals[1:])
    if prior is None:
        return own, own_sigma
    # A prior is no surer than its distance from a steady own pace: a task that changed pace
    # (the server slowed down) is not pulled back to its kind's usual one. Within 3 σ of the
    # own pace's own noise, the distance may be that noise.
    distance = math.log(own / prior.pace)
    prior_var = max(prior.sigma**2, distance**2 - (3 * own_sigma) ** 2)
    weight = prior_var / (prior_var + own_sigma**2)
    pace = math.exp(weight * math.log(own) + (1 - weight) * math.log(prior.pace))
    return pace, math.sqrt(weight) * own_sigma


def _own_sigma(body: Sequence[Interval]) -> float:
    """How unsure the recent pace is (σ of its log): the intervals' scatter over the number
    the weighted average holds (OWN_SIGMA_ONE per interval until three show their scatter)."""
    paces = [math.log(i.seconds / i.items) for i in body if i.items and i.seconds > 0]
    scatter = statistics.pstdev(paces) if len(paces) >= 3 else OWN_SIGMA_ONE
    return max(scatter, SIGMA_FLOOR / 2) / math.sqrt(_effective(body))


def _effective(body: Sequence[Interval]) -> float:
    """How many intervals the exponentially weighted pace averages over: (1+d)/(1-d) for
    a decay d per typical interval, at most the number there are."""
    if not body:
        return 1.0
    typical = statistics.median(i.seconds for i in body)
    tau = _tau(body)
    decay = math.exp(-typical / tau) if tau > 0 else 0.0
    return max(min(len(body), (1 + decay) / (1 - decay) if decay < 1 else len(body)), 1.0)


def duration(items: int, prior: Prior | None, *, factor: float = 1.0) -> Spread:
    """A queued task's whole duration: its start-up, then `items` at the kind's pace (times
    tonight's `speed_factor` of its model, when one is known)."""
    if prior is None:
        return Spread(items * DEFAULT_PACE * factor, SIGMA_UNKNOWN)
    return Spread(items * prior.pace * factor, prior.sigma).plus(prior.start_up)
