"""How accurate the ETAs are: replay recorded nights and compare every prediction with what
happened.

    .venv/bin/python perf/eta_accuracy.py            # --nights 12 --seed 1 (or --seeds 1 2 3)

The nights are generated, not run: a full Prefect night per data point would take hours on
this machine. Each night is a queue of attrgen and benchmark tasks on two models (one slot,
the manager's order), and every task's answers are counted through the same recording code as
the flows (`biasbench.rates.RateMeter` → `rates.record` into a real SQLite domain database),
with a simulated clock. What varies, as on the fake server: the server's latency per night and
model (±25 %), the failure rate per night (0-8 %, a failure costs two answers' time: retries),
per-interval noise (±10 %), a warm-up of 20-60 s at each task's start, a model swap of 45-75 s
when consecutive tasks use different models (published as the model host does, so the replay
prices a swap from the loads of the nights before, as `swap_from_hosts` does in the product),
an idle gap of 2-4 s between tasks, and in every night one task that slows down to 1.6x its
pace half-way.

Then the replay reads the nights back from the database and, using only what was recorded
before each moment (the task's own intervals so far, the runs of its kind before it):

- per task, at 10 %, 20 % … 90 % of its progress: the predicted end (P50) and its P10-P90 band
  (biasbench.estimate.remaining) against the actual end. Error = |predicted - actual end| /
  the task's actual duration. Beside it the naive estimate: elapsed / progress.
- per night, at its start and again at 10 %, 20 % … 90 % of each running task: each queued
  task's expected start (biasbench.queue.eta.simulate, durations from
  biasbench.estimate.duration), for tasks whose kind has >= 3 past runs and that have a task
  ahead of them. Error = |predicted - actual start| / (actual start - moment of the plan).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Engine, select

from biasbench import rates
from biasbench.db.engine import ready_engine, session_scope
from biasbench.db.models import TaskRate
from biasbench.estimate import Prior, duration, prior_of, remaining, speed_factor
from biasbench.llm.base import Usage
from biasbench.queue.eta import SwapCost, simulate, swap_from_hosts
from biasbench.queue.model import QueueRun, TaskType

T0 = datetime(2026, 11, 1, 23, 0, tzinfo=UTC)
FLUSH_SECONDS = 10.0  # simulated seconds between flushes (PROGRESS_INTERVAL)
SWAP_SECONDS = 60.0  # QUEUE_MODEL_SWAP_SECONDS: a swap's cost before any load was measured
Load = dict[str, Any]  # one model load as a host publishes it (deployments/model_host.py)
# (task type, model, batch size) → seconds per item on a nominal night
PACE = {
    ("attrgen", "llama-8b", 2): 0.6,
    ("benchmark", "llama-8b", 8): 0.05,
    ("attrgen", "qwen-14b", 2): 1.0,
    ("benchmark", "qwen-14b", 8): 0.09,
}


@dataclass
class Task:
    run_id: str
    kind: tuple[str, str, int]
    items: int
    upstream: str | None
    created: datetime
    start: float = 0.0  # seconds after the night's start
    end: float = 0.0


def night_tasks(night: int, rng: random.Random) -> list[Task]:
    """attrgen → benchmark on llama, then the same on qwen (the model swap), one extra
    benchmark on llama at high priority is left out: one slot, submission order."""
    tasks: list[Task] = []
    created = T0 + timedelta(days=night)
    for model in ("llama-8b", "qwen-14b"):
        personas = rng.randint(400, 1500)
        attr = Task(f"n{night}-{model}-attr", ("attrgen", model, 2), personas, None, created)
        bench = Task(
            f"n{night}-{model}-bench", ("benchmark", model, 8), personas * 15, attr.run_id, created
        )
        tasks += [attr, bench]
    return tasks


@dataclass
class Night:
    """What varies from night to night, as on the fake server."""

    rng: random.Random
    latency: dict[str, float]  # per model: a factor on its pace
    failure_rate: float
    slow_task: int  # the task that slows down half-way


def record_night(
    engine: Engine, night: int, rng: random.Random, latency_spread: float, loads: list[Load]
) -> list[Task]:
    """The night's tasks, their rates in the database; its model loads appended to `loads`,
    as the GPU's model host publishes them."""
    tasks = night_tasks(night, rng)
    conditions = Night(
        rng,
        {m: math.exp(rng.gauss(0, latency_spread)) for m in ("llama-8b", "qwen-14b")},
        rng.uniform(0.0, 0.08),
        rng.randrange(len(tasks)),
    )
    clock = 0.0
    loaded = "llama-8b"
    night_start = T0 + timedelta(days=night)
    for index, task in enumerate(tasks):
        model = task.kind[1]
        swap = rng.uniform(45, 75) if model != loaded else 0.0
        clock += rng.uniform(2, 4) + swap
        if swap:
            at = (night_start + timedelta(seconds=clock)).timestamp()
            loads.append({"model": model, "how": "cold start", "seconds": swap, "at": at})
        loaded = model
        task.start = clock
        rows = _run_task(task, conditions, slows=index == conditions.slow_task)
        task.end = clock = rows[-1][1]
        with session_scope(engine) as session:
            for row, at in rows:
                rates.record(session, row, ended_at=night_start + timedelta(seconds=at))
    return tasks


def _run_task(task: Task, night: Night, *, slows: bool) -> list[tuple[dict[str, Any], float]]:
    """The task's answers counted through the flows' RateMeter, on a simulated clock."""
    rng = night.rng
    pace = PACE[task.kind] * night.latency[task.kind[1]]
    usage = Usage()
    now = [task.start]
    rows: list[tuple[dict[str, Any], float]] = []
    meter = rates.RateMeter(
        rates.RateKind(*task.kind),
        server="http://127.0.0.1:8000",
        flow_run_id=task.run_id,
        total=task.items,
        usage=usage,
        store=lambda row: rows.append((row, now[0])),
        clock=lambda: now[0],
    )
    asked = answered = 0
    warm_up = rng.uniform(20, 60)
    while asked < task.items:
        slow = 1.6 if slows and asked >= task.items / 2 else 1.0
        per_item = pace * slow * math.exp(rng.gauss(0, 0.1))
        settled = max(1, min(task.items - asked, round(FLUSH_SECONDS / per_item)))
        failed = sum(rng.random() < night.failure_rate for _ in range(settled))
        for n in range(settled):
            meter.note(answered=n >= failed)
        usage.add(settled * 180, (settled - failed) * 40)
        # A failure costs about two answers' time: the client's retries.
        now[0] += (settled + failed) * per_item + (warm_up if asked == 0 else 0.0)
        asked += settled
        answered += settled - failed
        meter.flush(answered)
    return rows


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nights", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--latency-spread",
        type=float,
        default=0.25,
        help="σ of the server's log latency from night to night (0.25: ±25 %%)",
    )
    parser.add_argument(
        "--seeds", type=int, nargs="*", help="several seeds, one row each (instead of --seed)"
    )
    args = parser.parse_args()
    seeds: list[int | str] = list(args.seeds or [args.seed])
    figures = [measure(args.nights, int(seed), args.latency_spread) for seed in seeds]
    for seed, (rows, _, _) in zip(seeds, figures, strict=True):
        print(
            f"seed {seed}: {args.nights} nights, {rows} rate rows, "
            f"latency spread {args.latency_spread}"
        )
    if len(figures) > 1:  # every seed's points together
        seeds.append("all")
        figures.append(
            (
                sum(f[0] for f in figures),
                {k: [p for f in figures for p in f[1][k]] for k in figures[0][1]},
                {k: [e for f in figures for e in f[2][k]] for k in figures[0][2]},
            )
        )
    print()
    print(
        "| running tasks, from 10 % of progress | seed | median end-time error: ours | naive "
        "(elapsed / progress) | inside our P10-P90 | n |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for what in ("every flush", "at 10 %"):
        for seed, (_, ends, _) in zip(seeds, figures, strict=True):
            points = ends[what]
            ours = 100 * statistics.median(p[0] for p in points)
            naive = 100 * statistics.median(p[1] for p in points)
            inside = 100 * sum(p[2] for p in points) / len(points)
            print(
                f"| {what} | {seed} | {ours:.1f} % | {naive:.1f} % | {inside:.1f} % "
                f"| {len(points)} |"
            )
    print()
    print(
        "| queued tasks with >= 3 past runs of their kind | seed | median start-time error "
        "| P90 | n |"
    )
    print("|---|---:|---:|---:|---:|")
    for what in START_WHEN:
        for seed, (_, _, starts) in zip(seeds, figures, strict=True):
            if errors := starts[what]:
                print(
                    f"| {what} | {seed} | {100 * statistics.median(errors):.1f} % "
                    f"| {100 * percentile(errors, 0.9):.1f} % | {len(errors)} |"
                )
    print("goals: end-time error <= 10 %, inside the band >= 80 %, start-time error <= 15 %")


START_WHEN = (
    "planned at the night's start",
    "re-planned at 20 % of the running task",
    "re-planned at 10, 20 … 90 % of each running task",
)
Point = tuple[float, float, bool]  # our error, the naive one's, whether inside our band


def measure(
    n_nights: int, seed: int, latency_spread: float
) -> tuple[int, dict[str, list[Point]], dict[str, list[float]]]:
    """One seed's nights, recorded and replayed: rate rows, end-time points, start errors."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as home:
        engine = ready_engine(f"sqlite:///{home}/eta.db")
        loads: list[list[Load]] = [[] for _ in range(n_nights)]
        nights = [record_night(engine, n, rng, latency_spread, loads[n]) for n in range(n_nights)]
        with session_scope(engine) as session:
            recorded = session.scalar(select(TaskRate.id).order_by(TaskRate.id.desc()).limit(1))
            by_run = {t.run_id: rates.intervals_of(session, t.run_id) for n in nights for t in n}
        engine.dispose()

    history: dict[tuple[str, str, int], list[list[rates.Interval]]] = defaultdict(list)
    # "at 10 %": each task's first checkpoint past 10 %, where the prior still weighs most.
    ends: dict[str, list[Point]] = {"every flush": [], "at 10 %": []}
    starts: dict[str, list[float]] = {when: [] for when in START_WHEN}
    for night, tasks in enumerate(nights):
        priors: dict[tuple[str, str, int], Prior | None] = {
            kind: prior_of(history[kind]) for kind in PACE
        }
        # The host publishes its latest loads: the nights before this one.
        published = {"loads": [load for earlier in loads[:night] for load in earlier][-20:]}
        swap = swap_from_hosts([published], SWAP_SECONDS)
        for when, errors in _start_errors(night, tasks, priors, history, by_run, swap).items():
            starts[when] += errors
        for task in tasks:
            intervals = by_run[task.run_id]
            task_start = intervals[0].ended_at - timedelta(seconds=intervals[0].seconds)
            actual_end = intervals[-1].ended_at
            length = (actual_end - task_start).total_seconds()
            first = True
            for k in range(1, len(intervals)):
                seen = intervals[:k]
                share = seen[-1].done / seen[-1].total
                if share < 0.1:
                    continue
                checkpoint = seen[-1].ended_at
                left = remaining(seen, priors[task.kind])
                predicted = checkpoint + timedelta(seconds=left.p50)
                elapsed = (checkpoint - task_start).total_seconds()
                naive_end = task_start + timedelta(seconds=elapsed / share)
                actual_left = (actual_end - checkpoint).total_seconds()
                point = (
                    abs((predicted - actual_end).total_seconds()) / length,
                    abs((naive_end - actual_end).total_seconds()) / length,
                    left.p10 <= actual_left <= left.p90,
                )
                ends["every flush"].append(point)
                if first:
                    ends["at 10 %"].append(point)
                    first = False
            history[task.kind].append(intervals)
    return recorded or 0, ends, starts


def _queue_run(task: Task, index: int, state: str) -> QueueRun:
    return QueueRun(
        id=task.run_id,
        name=task.run_id,
        task_type=TaskType(task.kind[0]),
        state_type=state,
        state_name={"PAUSED": "Waiting" if task.upstream else "Queued"}.get(state, state.title()),
        created=task.created + timedelta(seconds=index),
        upstream=(task.upstream,) if task.upstream else (),
        parameters={"model_name": task.kind[1]},
    )


def _start_errors(
    night: int,
    tasks: list[Task],
    priors: dict[tuple[str, str, int], Prior | None],
    history: dict[tuple[str, str, int], list[list[rates.Interval]]],
    by_run: dict[str, list[rates.Interval]],
    swap: SwapCost,
) -> dict[str, list[float]]:
    """The night's plan made at its start, and again when each task reaches 10 %, 20 % … 90 %
    (its own pace tells tonight's speed of its model; the manager re-plans every minute),
    against when each queued task actually started."""
    night_start = T0 + timedelta(days=night)
    errors = {when: [] for when in START_WHEN}
    errors[START_WHEN[0]] = _errors(tasks, 0, night_start, 0.0, priors, history, None, swap)
    for index, task in enumerate(tasks[:-1]):
        intervals = by_run[task.run_id]
        for tenth in range(1, 10):
            seen = next(
                (
                    intervals[:k]
                    for k in range(1, len(intervals))
                    if intervals[k - 1].done >= tenth / 10 * task.items
                ),
                None,
            )
            if seen is None:
                continue
            offset = (seen[-1].ended_at - night_start).total_seconds()
            found = _errors(tasks, index, night_start, offset, priors, history, seen, swap)
            errors[START_WHEN[2]] += found
            if tenth == 2:
                errors[START_WHEN[1]] += found
    return errors


def _errors(
    tasks: list[Task],
    running: int,
    night_start: datetime,
    offset: float,
    priors: dict[tuple[str, str, int], Prior | None],
    history: dict[tuple[str, str, int], list[list[rates.Interval]]],
    seen: list[rates.Interval] | None,
    swap: SwapCost,
) -> list[float]:
    now = night_start + timedelta(seconds=offset)
    runs = {}
    durations = {}
    factor, model = 1.0, None
    for i, task in enumerate(tasks):
        if seen is not None and i < running:
            runs[task.run_id] = _queue_run(task, i, "COMPLETED")
        elif seen is not None and i == running:
            runs[task.run_id] = _queue_run(task, i, "RUNNING")
            durations[task.run_id] = remaining(seen, priors[task.kind])
            factor, model = speed_factor(seen, priors[task.kind]), task.kind[1]
        else:
            runs[task.run_id] = _queue_run(task, i, "PAUSED")
    for task in tasks[running + (seen is not None) :]:
        scale = factor if task.kind[1] == model else 1.0
        durations[task.run_id] = duration(task.items, priors[task.kind], factor=scale)
    plan = simulate(
        runs,
        slots=1,
        now=now,
        durations=durations,
        idle_gap=3.0,
        swap_seconds=swap,
        loaded=[model or "llama-8b"],
    )
    expected = [t.run_id for t in tasks[running:]]
    assert list(plan.tasks) == expected, "the night ran in the manager's order"
    errors = []
    for task in tasks[running + 1 :]:  # the first starts after the idle gap: nothing to predict
        if len(history[task.kind]) < 3:
            continue
        predicted = (plan.tasks[task.run_id].start - now).total_seconds()
        errors.append(abs(predicted - (task.start - offset)) / (task.start - offset))
    return errors


if __name__ == "__main__":
    main()
