"""The queue's plan, simulated as the manager runs it: checked against times worked out by hand."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from biasbench.estimate import Spread
from biasbench.queue.eta import constant_swap, simulate, swap_from_hosts
from biasbench.queue.model import QueueRun

NOW = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)


def task(rid: str, model: str, *, minute: int, priority: int = 0, upstream: str = "") -> QueueRun:
    return QueueRun(
        id=rid,
        name=rid,
        task_type="benchmark",  # type: ignore[arg-type]
        state_type="PAUSED",
        state_name="Waiting" if upstream else "Queued",
        created=NOW - timedelta(hours=1) + timedelta(minutes=minute),
        priority=priority,
        upstream=(upstream,) if upstream else (),
        parameters={"model_name": model},
    )


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def test_order_and_start_times_follow_priorities_dependencies_two_slots_and_a_model_swap() -> None:
    # Both slots hold m1; 2 s pass between tasks on a slot, 10 s more when the model changes.
    runs = {
        "A": task("A", "m1", minute=1),
        "B": task("B", "m2", minute=2),
        "C": task("C", "m1", minute=3, priority=5),  # first, despite being submitted later
        "D": task("D", "m2", minute=4, upstream="C"),  # after C, and before E (older)
        "E": task("E", "m1", minute=5),
    }
    durations = {
        k: Spread(s, 0.0) for k, s in {"A": 100, "B": 50, "C": 30, "D": 20, "E": 10}.items()
    }
    plan = simulate(
        runs,
        slots=2,
        now=NOW,
        durations=durations,
        idle_gap=2.0,
        swap_seconds=constant_swap(10.0),
        loaded=["m1", "m1"],
    )
    # By hand: t=0 C (slot 0) and A (slot 1) start at 2 (no swap: m1 is loaded).
    # t=32 C ends: B is next in line (D is younger than B); slot 0 swaps m1→m2: 32+2+10 = 44.
    # t=94 B ends: D (m2, already loaded) starts at 96. t=102 A ends: E starts at 104 on slot 1.
    starts = {rid: p.start for rid, p in plan.tasks.items()}
    assert list(plan.tasks) == ["C", "A", "B", "D", "E"]
    assert starts == {"C": at(2), "A": at(2), "B": at(44), "D": at(96), "E": at(104)}
    assert {rid: p.end for rid, p in plan.tasks.items()} == {
        "C": at(32),
        "A": at(102),
        "B": at(94),
        "D": at(116),
        "E": at(114),
    }
    assert (plan.tasks["B"].slot, plan.tasks["D"].slot, plan.tasks["E"].slot) == (0, 0, 1)
    assert plan.drain == at(116)
    assert plan.drain_p90 == at(116)  # no spread given: P90 = P50


def test_a_running_task_holds_its_slot_and_spreads_add_up_along_a_slot() -> None:
    running = QueueRun(
        id="R",
        name="R",
        task_type="benchmark",  # type: ignore[arg-type]
        state_type="RUNNING",
        state_name="Running",
        created=NOW - timedelta(hours=2),
        parameters={"model_name": "m1"},
    )
    runs = {"R": running, "Q": task("Q", "m1", minute=0)}
    spread = Spread(100.0, 0.3)  # P90 - P50 = 46.9 s
    plan = simulate(runs, slots=1, now=NOW, durations={"R": spread, "Q": spread}, idle_gap=5.0)
    assert plan.tasks["R"].start == NOW and plan.tasks["R"].end == at(100)
    assert plan.tasks["Q"].start == at(105) and plan.tasks["Q"].end == at(205)
    chained = (2 * (spread.p90 - spread.p50) ** 2) ** 0.5  # independent: not 2 × 46.9 s
    assert plan.drain_p90 == at(205 + chained)
    assert plan.drain_p90 is not None and plan.drain_p90 < at(205 + 2 * (spread.p90 - 100))


def test_a_task_behind_a_failed_upstream_is_not_planned_and_an_idle_queue_has_no_drain() -> None:
    failed = QueueRun(
        id="F",
        name="F",
        task_type="benchmark",  # type: ignore[arg-type]
        state_type="FAILED",
        state_name="Failed",
        created=NOW - timedelta(hours=2),
    )
    plan = simulate(
        {"F": failed, "W": task("W", "m1", minute=0, upstream="F")},
        slots=1,
        now=NOW,
        durations={"W": Spread(10, 0)},
    )
    assert plan.tasks == {} and plan.drain is None


def test_past_the_limit_the_rest_of_the_line_still_counts_towards_the_drain() -> None:
    runs = {f"T{i}": task(f"T{i}", "m1", minute=i) for i in range(5)}
    durations = {rid: Spread(10.0, 0.0) for rid in runs}
    plan = simulate(runs, slots=1, now=NOW, durations=durations, idle_gap=2.0, limit=2)
    assert list(plan.tasks) == ["T0", "T1"]
    assert plan.tasks["T1"].start == at(14)  # 2 + 10 + 2
    assert plan.drain == at(24 + 3 * 12)  # T1 ends at 24, then three more of 2 + 10 s


def test_a_run_scheduled_for_later_is_not_planned_but_one_due_now_is() -> None:
    def scheduled(rid: str, minutes: int) -> QueueRun:
        return QueueRun(
            id=rid,
            name=rid,
            task_type="benchmark",  # type: ignore[arg-type]
            state_type="SCHEDULED",
            state_name="Scheduled",
            created=NOW + timedelta(minutes=minutes),
            parameters={"model_name": "m1"},
        )

    runs = {"later": scheduled("later", 600), "due": scheduled("due", -1)}
    plan = simulate(
        runs, slots=1, now=NOW, durations={"due": Spread(10, 0), "later": Spread(10, 0)}
    )
    assert list(plan.tasks) == ["due"] and plan.drain == at(10)


def test_a_swap_costs_what_the_model_hosts_measured_for_that_model() -> None:
    hosts = [
        {
            "model": "m1",
            "servers": {"m1": "ready", "m3": "asleep (level 1)"},
            "loads": [
                {"model": "m2", "how": "cold start", "seconds": s, "at": at}
                for at, s in enumerate([90.0, 30.0, 34.0, 32.0])
            ]
            + [
                {"model": "m2", "how": "reused", "seconds": 0.0, "at": 9},  # loads nothing
                {"model": "m3", "how": "cold start", "seconds": 40.0, "at": 10},
                {"model": "m3", "how": "woken", "seconds": 2.0, "at": 11},  # asleep now: a wake
            ],
        }
    ]
    swap = swap_from_hosts(hosts, fallback=60.0)
    assert swap("m1", "m1") == 0.0 and swap("m1", None) == 0.0
    assert swap("m1", "m2") == 33.0  # the median of its latest cold starts
    assert swap("m1", "m3") == 2.0
    assert swap("m1", "m4") == 60.0  # never loaded: the setting
    runs = {r: task(r, m, minute=i) for i, (r, m) in enumerate([("A", "m2"), ("B", "m4")])}
    plan = simulate(
        runs,
        slots=1,
        now=NOW,
        durations={"A": Spread(100, 0.0), "B": Spread(100, 0.0)},
        idle_gap=2.0,
        swap_seconds=swap,
        loaded=["m1"],
    )
    assert plan.tasks["A"].start == at(2 + 33) and plan.tasks["B"].start == at(135 + 2 + 60)


def test_a_task_without_a_model_loads_none_and_leaves_the_loaded_one() -> None:
    pool = replace(task("P", "", minute=1), task_type="pool_gen", parameters={"n": 10})
    runs = {"P": pool, "A": task("A", "m1", minute=2)}
    plan = simulate(
        runs,
        slots=1,
        now=NOW,
        durations={"P": Spread(10, 0.0), "A": Spread(100, 0.0)},
        idle_gap=2.0,
        swap_seconds=constant_swap(60.0),
        loaded=["m1"],
    )
    # P: 2 s gap, no load; A: m1 is still loaded after P, so no swap either.
    assert plan.tasks["P"].start == at(2) and plan.tasks["A"].start == at(12 + 2)
