"""The queue's plan: when each task is expected to start and end, simulated as the manager will
run it. Pure: a function of the queue's snapshot, the durations (biasbench.estimate) and the
costs between tasks, so it is tested by hand and replayed offline (perf/eta_accuracy.py).

Why a simulation that calls `decide` itself: order, priorities, dependencies and slots are the
manager's rules, and a second copy of them would drift. The simulation feeds `decide` a
snapshot, starts what it releases, lets the earliest task finish, and asks again.

Between two tasks on a slot a measured idle gap passes (worker pick-up, process start), plus a
model swap when the next task's model differs from the slot's (`swap_seconds(old, new)`: what
the model hosts measured, `swap_from_hosts`; None is an empty slot, or a task that needs no
model: it loads nothing and leaves the slot's model loaded). A released task goes to a free
slot that has its model loaded, if any. P90s add the tasks' spreads along each chain as
independent variances: the sum of P90s would be far too pessimistic for a night of many tasks."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from biasbench.estimate import Spread
from biasbench.queue.decide import Cancel, Release, Skip, decide
from biasbench.queue.model import RELEASED, QueueRun, QueueStatus
from biasbench.results import TaskResult

SwapCost = Callable[[str | None, str | None], float]
PLAN_LIMIT = 200  # tasks planned one by one; a longer line is a night's work many times over
WINDOW = 16  # held runs in line that each simulated decision looks at (more when they all wait)


LOADS_LOOKED_AT = 5  # a model's latest loads of one kind whose median is its cost


def constant_swap(seconds: float) -> SwapCost:
    """Every change of model (or a first load) costs the same. A task without a model
    (pool_gen, balanced_gen) loads nothing."""
    return lambda old, new: 0.0 if new is None or old == new else seconds


def swap_from_hosts(hosts: Iterable[Mapping[str, Any]], fallback: float) -> SwapCost:
    """What a change to a model costs, as the model hosts measured it (their published state,
    deployments/model_host.py: `loads` with model, how, seconds, at; `servers` by state): the
    median of the model's latest wakes when a host has it asleep now, else of its latest cold
    starts; `fallback` (QUEUE_MODEL_SWAP_SECONDS) for a model no host has loaded that way
    lately. Tonight's swaps are priced by the hosts' state now: a model the plan swaps out and
    back later is priced as it sleeps or not now, which is what the host's sleep policy did
    the last time."""
    measured: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    asleep: set[str] = set()
    for host in hosts:
        servers = host.get("servers")
        if isinstance(servers, Mapping):
            asleep |= {str(m) for m, state in servers.items() if str(state).startswith("asleep")}
        for load in host.get("loads") or ():
            if not isinstance(load, Mapping) or load.get("how") not in ("woken", "cold start"):
                continue
            try:
                at, seconds = float(load.get("at") or 0.0), float(load["seconds"])
            except (KeyError, TypeError, ValueError):
                continue
            measured[(str(load.get("model")), str(load["how"]))].append((at, seconds))
    costs: dict[tuple[str, str], float] = {
        key: statistics.median(s for _, s in sorted(loads)[-LOADS_LOOKED_AT:])
        for key, loads in measured.items()
    }

    def cost(old: str | None, new: str | None) -> float:
        if new is None or old == new:
            return 0.0
        ways = ("woken", "cold start") if new in asleep else ("cold start",)
        return next((costs[(new, w)] for w in ways if (new, w) in costs), fallback)

    return cost


@dataclass(frozen=True)
class Planned:
    """One task's expected start and end (P50 and P90)."""

    run_id: str
    model: str | None
    slot: int
    start: datetime
    start_p90: datetime
    end: datetime
    end_p90: datetime


@dataclass(frozen=True)
class QueuePlan:
    tasks: dict[str, Planned]  # in expected start order
    drain: datetime | None  # when the last task ends (P50); None for an idle queue
    drain_p90: datetime | None


@dataclass
class _Slot:
    model: str | None
    free_at: float = 0.0  # seconds from now
    variance: float = 0.0  # of free_at, in seconds²


def model_of(run: QueueRun) -> str | None:
    model = run.parameters.get("model_name")
    return str(model) if model else None


def simulate(
    runs: Mapping[str, QueueRun],
    *,
    slots: int,
    now: datetime,
    durations: Mapping[str, Spread],
    idle_gap: float = 0.0,
    swap_seconds: SwapCost | None = None,
    loaded: Sequence[str | None] = (),
    limit: int = PLAN_LIMIT,
) -> QueuePlan:
    """runs: the snapshot (held, released, running runs and their upstreams); durations: per
    run id, a running task's time left or a queued task's whole duration (missing: 0);
    loaded: the model each slot holds now (a running task's model wins); swap_seconds: what a
    change of model on a slot costs (default: nothing); limit: tasks planned one by one, the
    rest of a longer line only counts towards the drain time."""
    swap_seconds = swap_seconds or constant_swap(0.0)
    # A run a schedule made for a time still to come is not queue work yet.
    view = {
        i: _as_released(r) for i, r in runs.items() if not (r.is_unreleased and r.created > now)
    }
    results = {i: _done() for i, r in view.items() if r.status is QueueStatus.DONE}
    pool = [_Slot(loaded[i] if i < len(loaded) else None) for i in range(max(slots, 1))]
    plan: dict[str, Planned] = {}
    ends: dict[str, tuple[float, float]] = {}  # run id → (end, variance), for running ones
    for run in sorted((r for r in view.values() if r.occupies_slot), key=lambda r: r.order):
        slot = min(range(len(pool)), key=lambda s: (pool[s].free_at, s))
        spread = durations.get(run.id, Spread(0.0, 0.0))
        start, start_var = pool[slot].free_at, pool[slot].variance  # more runs than slots:
        if run.is_released:  # one being cancelled still holds its slot; released ones wait
            start += idle_gap + swap_seconds(pool[slot].model, model_of(run))
        _occupy(pool[slot], model_of(run), start, spread, start_var)
        ends[run.id] = (pool[slot].free_at, pool[slot].variance)
        plan[run.id] = _planned(run, slot, now, start, start_var, pool[slot])
        view[run.id] = replace(run, state_type="RUNNING", state_name="Running")

    pending = [r.id for r in sorted(view.values(), key=lambda r: r.order) if r.is_held]
    running = {i for i, r in view.items() if r.state_type == "RUNNING"}
    clock, window = 0.0, WINDOW
    while len(plan) < limit:
        in_line = set(pending[:window])
        actions = decide(
            _window(view, in_line, running), slots=len(pool), accepting=True, results=results
        )
        ended = {a.run_id for a in actions if isinstance(a, Skip | Cancel) and a.run_id in in_line}
        for run_id in ended:  # never runs: not in the plan
            view[run_id] = replace(view[run_id], state_type="CANCELLED")
        releases = [a for a in actions if isinstance(a, Release) and a.run_id in in_line]
        for release in releases:
            run = view[release.run_id]
            model = model_of(run)
            free = [s for s in range(len(pool)) if pool[s].free_at <= clock]
            if not free:  # a slot still held by a run that ended earlier in simulated time
                free = [min(range(len(pool)), key=lambda s: pool[s].free_at)]
            slot = next((s for s in free if pool[s].model == model), free[0])
            after = max(
                [pool[slot].free_at, clock, *(ends[u][0] for u in run.upstream if u in ends)]
            )
            upstream_var = max([0.0, *(ends[u][1] for u in run.upstream if u in ends)])
            start = after + idle_gap + swap_seconds(pool[slot].model, model)
            start_var = max(pool[slot].variance, upstream_var)
            _occupy(pool[slot], model, start, durations.get(run.id, Spread(0.0, 0.0)), start_var)
            ends[run.id] = (pool[slot].free_at, pool[slot].variance)
            plan[run.id] = _planned(run, slot, now, start, start_var, pool[slot])
            view[run.id] = replace(run, state_type="RUNNING", state_name="Running")
            running.add(run.id)
        if ended or releases:
            done = ended | {r.run_id for r in releases}
            head = [i for i in pending[:window] if i not in done]  # all of them are in there
            pending = head + pending[window:]
            continue  # decide again before time moves: it may release more
        if len(running) < len(pool) and window < len(pending):
            window *= 2  # a free slot, and the runs in view all wait: look further down the line
            continue
        if not running:
            break
        first = min(running, key=lambda i: (ends[i][0], view[i].order))
        clock = max(clock, ends[first][0])
        view[first] = replace(view[first], state_type="COMPLETED", state_name="Completed")
        results[first] = _done()
        running.discard(first)
        window = WINDOW

    ordered = dict(sorted(plan.items(), key=lambda item: (item[1].start, item[1].slot)))
    if not ordered:
        return QueuePlan({}, None, None)
    drain = max(p.end for p in ordered.values())
    drain_p90 = max(p.end_p90 for p in ordered.values())
    rest = [durations.get(i, Spread(0.0, 0.0)) for i in pending if i not in plan]
    if rest:  # past the limit: the rest of the line shares the slots, no longer in order
        busy = sum(d.p50 + idle_gap for d in rest) / len(pool)
        wider = math.sqrt(sum((d.p90 - d.p50) ** 2 for d in rest)) / len(pool)
        drain += timedelta(seconds=busy)
        drain_p90 += timedelta(seconds=busy + wider)
    return QueuePlan(ordered, drain, drain_p90)


def _window(
    view: Mapping[str, QueueRun], in_line: set[str], running: set[str]
) -> dict[str, QueueRun]:
    """What `decide` needs to choose among the first runs in line: them, their upstreams and
    the running runs (their slots). Deciding over the whole queue at every simulated step
    would cost the square of its length (a minute for 1,000 tasks); `decide` takes held runs
    in order, so the first ones in line are enough, and a release of a run outside them (an
    upstream further down) is not taken."""
    ids = in_line | running | {u for i in in_line for u in view[i].upstream if u in view}
    return {i: view[i] for i in ids}


def _as_released(run: QueueRun) -> QueueRun:
    """A run the CLI or a schedule made starts on its own: it takes a slot like a released one."""
    return replace(run, state_name=RELEASED) if run.is_unreleased else run


def _done() -> TaskResult:
    """A stand-in result: dependents only need one to be released."""
    return TaskResult(run_type="dataset", run_id=0, dataset_id=0, summary={})


def _occupy(slot: _Slot, model: str | None, start: float, spread: Spread, start_var: float) -> None:
    if model is not None:  # a task without a model leaves the host's loaded one in place
        slot.model = model
    slot.free_at = start + spread.p50
    slot.variance = start_var + (spread.p90 - spread.p50) ** 2


def _planned(
    run: QueueRun, slot: int, now: datetime, start: float, start_var: float, after: _Slot
) -> Planned:
    def at(seconds: float) -> datetime:
        return now + timedelta(seconds=seconds)

    return Planned(
        run_id=run.id,
        model=model_of(run),
        slot=slot,
        start=at(start),
        start_p90=at(start + math.sqrt(start_var)),
        end=at(after.free_at),
        end_p90=at(after.free_at + math.sqrt(after.variance)),
    )
