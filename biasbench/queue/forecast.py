"""The queue's plan from what is known now: the snapshot the caller read from Prefect, and the
rates, sizes and idle gaps in the domain database. Shared by the manager (its artifact and
messages) and the /queue shim (eta, expected_start, drain_eta), so both show the same times.

A queued task's size is known at submission: an attrgen asks once per persona of its dataset, a
benchmark personas × active traits × (1 + dual fraction). A dataset an upstream will make has
the size the upstream was asked for (`n`)."""

from __future__ import annotations

import statistics
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from biasbench import rates
from biasbench.data import load_traits
from biasbench.db.engine import session_scope
from biasbench.db.models import Dataset, Trait
from biasbench.estimate import Prior, Spread, duration, prior_of, remaining, speed_factor
from biasbench.queue.eta import QueuePlan, simulate, swap_from_hosts
from biasbench.queue.model import QueueRun, TaskType

# The flows' defaults for what a submission may leave out (flows/benchmark.py, attrgen.py).
DEFAULT_BATCH = {TaskType.BENCHMARK: 8, TaskType.ATTRGEN: 2}
_DEFAULT_N = {TaskType.POOL_GEN: 20_000, TaskType.BALANCED_GEN: 500}  # flows/*_gen.py
GENERATOR_SECONDS = 10.0  # pool_gen / balanced_gen: no LLM, seconds to a minute
DEFAULT_IDLE_GAP = 3.0  # seconds between two tasks before any was measured
# What a change of model on a GPU costs when no model host has measured a load of that model.
DEFAULT_SWAP_SECONDS = 60.0


def plan_now(
    engine: Engine,
    runs: Mapping[str, QueueRun],
    *,
    slots: int,
    swap_seconds: float,
    hosts: Mapping[str, Mapping[str, Any]],
) -> QueuePlan:
    """The plan as of now, in a session of its own (blocking: callers run it in a thread)."""
    with session_scope(engine) as session:
        return plan_queue(
            session,
            runs,
            slots=slots,
            now=datetime.now(UTC),
            swap_seconds=swap_seconds,
            hosts=hosts,
        )


def plan_queue(
    session: Session,
    runs: Mapping[str, QueueRun],
    *,
    slots: int,
    now: datetime,
    swap_seconds: float = DEFAULT_SWAP_SECONDS,
    hosts: Mapping[str, Mapping[str, Any]] | None = None,
) -> QueuePlan:
    """hosts: what each GPU's model host published (gateway.model_hosts), by name: the
    models loaded now and what loads took (swap_seconds: for a model without a measured load)."""
    hosts = hosts or {}
    priors = _Priors(session, [r.id for r in runs.values() if r.occupies_slot])
    factors = _speed_factors(session, runs, priors)
    durations = {
        run.id: _duration(session, run, runs, now, factors, priors)
        for run in runs.values()
        if run.is_held or run.occupies_slot
    }
    gaps = rates.idle_gaps(session)
    return simulate(
        runs,
        slots=slots,
        now=now,
        durations=durations,
        idle_gap=statistics.median(gaps) if gaps else DEFAULT_IDLE_GAP,
        swap_seconds=swap_from_hosts(hosts.values(), swap_seconds),
        loaded=[_loaded(hosts[name]) for name in sorted(hosts)],
    )


def _loaded(host: Mapping[str, Any]) -> str | None:
    model = host.get("model")
    return str(model) if model else None


def _speed_factors(
    session: Session, runs: Mapping[str, QueueRun], priors: _Priors
) -> dict[str, float]:
    """Tonight's speed of each model that a running task measures (estimate.speed_factor)."""
    factors: dict[str, float] = {}
    for run in runs.values():
        if run.is_running and run.task_type in DEFAULT_BATCH:
            intervals = rates.intervals_of(session, run.id)
            model = str(run.parameters.get("model_name", ""))
            factors[model] = speed_factor(intervals, priors.of(run))
    return factors


def _duration(
    session: Session,
    run: QueueRun,
    runs: Mapping[str, QueueRun],
    now: datetime,
    factors: Mapping[str, float],
    priors: _Priors,
) -> Spread:
    if run.task_type not in DEFAULT_BATCH:
        return Spread(GENERATOR_SECONDS, 0.3)
    prior = priors.of(run)
    if run.is_running:
        if intervals := rates.intervals_of(session, run.id):
            return remaining(intervals, prior, now=now)
        whole = duration(_items(session, run, runs, prior), prior)
        started = run.started_at or now
        return replace(whole, p50=max(whole.p50 - (now - started).total_seconds(), 0.0))
    factor = factors.get(str(run.parameters.get("model_name", "")), 1.0)
    return duration(_items(session, run, runs, prior), prior, factor=factor)


class _Priors:
    """The prior of each kind, read once per plan (tasks of one kind queue together), from
    finished runs only: a running task's own partial run is its recent pace, not its prior."""

    def __init__(self, session: Session, running: Collection[str]) -> None:
        self._session, self._running = session, running
        self._known: dict[rates.RateKind, Prior | None] = {}

    def of(self, run: QueueRun) -> Prior | None:
        kind = rates.RateKind(
            run.task_type,
            str(run.parameters.get("model_name", "")),
            int(run.parameters.get("batch_size") or DEFAULT_BATCH[run.task_type]),
        )
        if kind not in self._known:
            past = rates.past_runs(self._session, kind, excluding=self._running)
            self._known[kind] = prior_of(past)
        return self._known[kind]


def _items(
    session: Session, run: QueueRun, runs: Mapping[str, QueueRun], prior: Prior | None
) -> int:
    personas = _personas(session, run.parameters, runs, run.upstream)
    if personas is None:
        return prior.items if prior else 0
    if run.task_type == TaskType.ATTRGEN:
        return personas
    pairs = personas * _active_traits(session)
    return pairs + round(float(run.parameters.get("dual_fraction") or 0.0) * pairs)


def _personas(
    session: Session,
    parameters: Mapping[str, Any],
    runs: Mapping[str, QueueRun],
    upstream: Sequence[str],
) -> int | None:
    """The size of the dataset the task works on: stored, or what its upstream will make."""
    if (dataset_id := parameters.get("dataset_id")) is not None:
        return _dataset_size(session, int(dataset_id))
    for upstream_id in upstream:
        if (up := runs.get(upstream_id)) is None:
            continue
        if up.task_type in (TaskType.POOL_GEN, TaskType.BALANCED_GEN):
            n = up.parameters.get("n")
            return int(n) if n is not None else _DEFAULT_N[up.task_type]
        if (found := _personas(session, up.parameters, runs, up.upstream)) is not None:
            return found
    return None


# Read once per plan (its session), not once per queued task: a long line shares datasets.
def _active_traits(session: Session) -> int:
    cache = session.info.setdefault("forecast-traits", {})
    if "n" not in cache:
        count = session.scalar(select(func.count()).select_from(Trait).where(Trait.active))
        cache["n"] = count or len(load_traits())  # none yet: the first pool seeds them
    return int(cache["n"])


def _dataset_size(session: Session, dataset_id: int) -> int | None:
    cache: dict[int, int | None] = session.info.setdefault("forecast-datasets", {})
    if dataset_id not in cache:
        cache[dataset_id] = session.scalar(select(Dataset.size).where(Dataset.id == dataset_id))
    return cache[dataset_id]
