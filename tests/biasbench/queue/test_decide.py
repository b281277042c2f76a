"""The queue manager's rules, decided from a snapshot: order, slots, wiring, cascades."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

from biasbench.queue.decide import Cancel, Relabel, Release, Skip, decide
from biasbench.queue.grouping import ModelGrouping
from biasbench.queue.model import QueueRun, QueueStatus, queue_status
from biasbench.results import TaskResult

T0 = datetime(2026, 11, 28, tzinfo=UTC)


def run(
    rid: str,
    task_type: str = "benchmark",
    *,
    state: str = "PAUSED",
    name: str | None = "Queued",
    minute: int = 0,
    priority: int = 0,
    upstream: tuple[str, ...] = (),
    **parameters: object,
) -> QueueRun:
    return QueueRun(
        id=rid,
        name=f"task {rid}",
        task_type=task_type,
        state_type=state,  # type: ignore[arg-type]
        state_name=name,
        created=T0 + timedelta(minutes=minute),
        priority=priority,
        upstream=upstream,
        parameters=dict(parameters),
    )


def snapshot(*runs: QueueRun) -> dict[str, QueueRun]:
    return {r.id: r for r in runs}


def released(actions: list) -> list[str]:  # type: ignore[type-arg]
    return [a.run_id for a in actions if isinstance(a, Release)]


def test_one_slot_releases_the_oldest_held_run_only() -> None:
    actions = decide(
        snapshot(run("b", minute=2), run("a", minute=1), run("c", minute=3)),
        slots=1,
        accepting=True,
        results={},
    )
    assert released(actions) == ["a"]


def test_priority_goes_before_submission_order() -> None:
    actions = decide(
        snapshot(run("a", minute=1), run("b", minute=2, priority=5)),
        slots=1,
        accepting=True,
        results={},
    )
    assert released(actions) == ["b"]


def test_nothing_is_released_while_a_slot_is_taken_or_the_queue_does_not_accept() -> None:
    runs = snapshot(run("busy", state="RUNNING", name="Running"), run("a", minute=1))
    assert released(decide(runs, slots=1, accepting=True, results={})) == []
    assert released(decide(runs, slots=2, accepting=True, results={})) == ["a"]
    assert released(decide(snapshot(run("a")), slots=1, accepting=False, results={})) == []


def test_a_released_run_still_occupies_its_slot_until_it_ends() -> None:
    runs = snapshot(run("r", state="SCHEDULED", name="Released"), run("a", minute=1))
    assert released(decide(runs, slots=1, accepting=True, results={})) == []


def test_a_crashed_run_not_yet_judged_keeps_its_slot() -> None:
    """Its process died (worker killed): the manager puts it back in its place within seconds;
    the next task must not start in its slot meanwhile (it did, and ran first)."""
    crashed = run("a", state="CRASHED", name="Crashed", minute=1)
    actions = decide(snapshot(crashed, run("b", minute=2)), slots=1, accepting=True, results={})
    assert released(actions) == []


def test_a_dependent_waits_then_gets_the_upstream_result_injected() -> None:
    attrgen = run("up", "attrgen", state="RUNNING", name="Running")
    bench = run("down", upstream=("up",), minute=1, model_name="m", scale_mode="rev")
    later = run("later", minute=2)
    waiting = decide(snapshot(attrgen, bench, later), slots=2, accepting=True, results={})
    assert Relabel("down", "Waiting") in waiting and released(waiting) == ["later"]

    done = run("up", "attrgen", state="COMPLETED", name="Completed")
    result = TaskResult(run_type="attrgen", run_id=77, dataset_id=5)
    actions = decide(snapshot(done, bench, later), slots=1, accepting=True, results={"up": result})
    injected = {"model_name": "m", "scale_mode": "rev", "attrgen_run_id": 77, "dataset_id": 5}
    assert actions[0] == Release("down", injected)
    assert released(actions) == ["down"]  # ahead of the task submitted after it


def test_a_chain_wires_dataset_ids_through_every_level() -> None:
    pool = run("p", "pool_gen", state="COMPLETED", name="Completed")
    balanced = run("b", "balanced_gen", upstream=("p",), n=10)
    result = TaskResult(run_type="dataset", run_id=3, dataset_id=3)
    assert decide(snapshot(pool, balanced), slots=1, accepting=True, results={"p": result}) == [
        Release("b", {"n": 10, "dataset_id": 3})
    ]


def test_a_given_value_that_the_upstream_confirms_is_kept_and_one_it_contradicts_skips() -> None:
    attrgen = run("a", "attrgen", state="COMPLETED", name="Completed")
    result = {"a": TaskResult(run_type="attrgen", run_id=77, dataset_id=5)}
    agrees = run("b", upstream=("a",), dataset_id=5)  # as the original's docs submit it
    assert released(decide(snapshot(attrgen, agrees), slots=1, accepting=True, results=result))

    contradicts = run("b", upstream=("a",), dataset_id=6)
    below = run("c", "benchmark", upstream=("b",), minute=1)
    actions = decide(snapshot(attrgen, contradicts, below), slots=1, accepting=True, results=result)
    skips = {a.run_id: a.reason for a in actions if isinstance(a, Skip)}
    assert skips["b"] == (
        "contradicts its upstream tasks: dataset_id=6 was given, but upstream "
        "attrgen 'task a' (a) gives dataset_id=5"
    )
    assert "was skipped" in skips["c"] and not released(actions)


def test_two_upstreams_that_fill_one_parameter_differently_skip_instead_of_the_last_winning() -> (
    None
):
    balanced = run("d", "balanced_gen", state="COMPLETED", name="Completed")
    attrgen = run("a", "attrgen", state="COMPLETED", name="Completed")
    results = {
        "d": TaskResult(run_type="dataset", run_id=3, dataset_id=3),
        "a": TaskResult(run_type="attrgen", run_id=77, dataset_id=5),
    }
    bench = run("b", upstream=("d", "a"))
    (skip,) = decide(snapshot(balanced, attrgen, bench), slots=1, accepting=True, results=results)
    assert isinstance(skip, Skip) and "gives dataset_id=3" in skip.reason
    assert "gives dataset_id=5" in skip.reason

    results["d"] = TaskResult(run_type="dataset", run_id=5, dataset_id=5)  # the same dataset
    (release,) = decide(
        snapshot(balanced, attrgen, bench), slots=1, accepting=True, results=results
    )
    assert release == Release("b", {"dataset_id": 5, "attrgen_run_id": 77})


def test_failed_upstream_skips_the_whole_chain_below_in_one_decision() -> None:
    failed = run("a", "attrgen", state="FAILED", name="Failed")
    bench = run("b", upstream=("a",), minute=1)
    below = run("c", upstream=("b",), minute=2)
    unrelated = run("u", minute=3)
    actions = decide(snapshot(failed, bench, below, unrelated), slots=1, accepting=True, results={})
    skips = {a.run_id: a.reason for a in actions if isinstance(a, Skip)}
    assert set(skips) == {"b", "c"}
    assert "attrgen 'task a' (a) failed" in skips["b"] and "was skipped" in skips["c"]
    assert released(actions) == ["u"]


def test_cancelled_upstream_cancels_dependents_and_a_judged_crash_counts_as_failed() -> None:
    cancelled = run("a", "attrgen", state="CANCELLED", name="Cancelled")
    crashed = run("x", "attrgen", state="FAILED", name="Crashed")  # the manager's verdict
    actions = decide(
        snapshot(cancelled, crashed, run("b", upstream=("a",)), run("c", upstream=("x",))),
        slots=1,
        accepting=True,
        results={},
    )
    assert any(isinstance(a, Cancel) and a.run_id == "b" for a in actions)
    assert any(isinstance(a, Skip) and a.run_id == "c" for a in actions)


def test_dependents_of_a_crash_not_yet_judged_keep_waiting() -> None:
    crashed = run("x", "attrgen", state="CRASHED", name="Crashed")  # it may be requeued
    actions = decide(
        snapshot(crashed, run("c", upstream=("x",))), slots=1, accepting=True, results={}
    )
    assert not any(isinstance(a, Skip | Cancel) for a in actions)
    assert Relabel("c", "Waiting") in actions


def test_unknown_upstreams_and_cycles_never_wait_forever() -> None:
    actions = decide(
        snapshot(
            run("a", upstream=("ghost",)), run("b", upstream=("c",)), run("c", upstream=("b",))
        ),
        slots=1,
        accepting=True,
        results={},
    )
    assert {a.run_id for a in actions if isinstance(a, Skip)} == {"a", "b", "c"}


def test_prefect_states_map_to_queue_statuses() -> None:
    assert queue_status("PAUSED", "Waiting") is QueueStatus.WAITING
    assert queue_status("PAUSED", "Suspended") is QueueStatus.QUEUED
    assert queue_status("SCHEDULED", "Late") is QueueStatus.QUEUED
    assert queue_status("CANCELLING", None) is QueueStatus.RUNNING
    assert queue_status("CRASHED", "Crashed") is QueueStatus.FAILED
    assert queue_status("FAILED", "TimedOut") is QueueStatus.FAILED
    assert queue_status("CANCELLED", "Skipped") is QueueStatus.SKIPPED
    assert queue_status("CANCELLED", "Cancelled") is QueueStatus.CANCELLED


def test_a_due_run_from_a_schedule_keeps_its_place_until_it_has_parked() -> None:
    cron = run("cron", state="SCHEDULED", name="Scheduled", minute=5)
    later = run("later", minute=6)
    runs = snapshot(run("earlier", minute=1, state="COMPLETED", name="Completed"), cron, later)

    # Due: the worker starts it on its own, so nothing that comes after it is released.
    at_six = T0 + timedelta(minutes=6)
    assert released(decide(runs, slots=1, accepting=True, results={}, now=at_six)) == []
    # Not due yet: it is not in line yet either.
    at_four = T0 + timedelta(minutes=4)
    assert released(decide(runs, slots=1, accepting=True, results={}, now=at_four)) == ["later"]
    # Parked (held) at its scheduled time: it goes first.
    parked = snapshot(run("cron", minute=5), later)
    assert released(decide(parked, slots=1, accepting=True, results={}, now=at_six)) == ["cron"]


# --- model grouping ---------------------------------------------------------------------------


def on(model: str, rid: str, minute: int, **kwargs: object) -> QueueRun:
    return run(rid, minute=minute, model_name=model, **kwargs)  # type: ignore[arg-type]


def started(rid: str, model: str, minute: int, at: int, state: str = "COMPLETED") -> QueueRun:
    """A task that started at minute `at` (finished, unless state says otherwise)."""
    return replace(
        on(model, rid, minute, state=state, name=None),
        started_at=T0 + timedelta(minutes=at),
        ended_at=T0 + timedelta(minutes=at + 1),
    )


def grouping(loaded: str, *history: QueueRun, overtake: int = 8, wait_minutes: int = 120) -> Any:
    return ModelGrouping(
        loaded=frozenset({loaded}),
        max_overtake=overtake,
        max_wait=timedelta(minutes=wait_minutes),
        started=history,
    )


NOW = T0 + timedelta(minutes=30)


def test_a_task_for_the_loaded_model_goes_before_one_that_would_swap() -> None:
    queue = snapshot(on("B", "b1", 1), on("C", "c1", 2), on("A", "a2", 3), on("B", "b2", 4))
    grouped_run = decide(
        queue, slots=1, accepting=True, results={}, now=NOW, grouping=grouping("A")
    )
    fifo = decide(queue, slots=1, accepting=True, results={}, now=NOW)
    assert released(grouped_run) == ["a2"]
    assert released(fifo) == ["b1"]


def test_grouping_never_passes_a_higher_priority_or_a_task_without_a_model() -> None:
    higher = snapshot(on("B", "b1", 1, priority=5), on("A", "a1", 2))
    assert released(
        decide(higher, slots=1, accepting=True, results={}, now=NOW, grouping=grouping("A"))
    ) == ["b1"]
    no_model = snapshot(run("p", "pool_gen", minute=1), on("A", "a1", 2))
    assert released(
        decide(no_model, slots=1, accepting=True, results={}, now=NOW, grouping=grouping("A"))
    ) == ["p"]


def test_grouping_keeps_dependencies() -> None:
    queue = snapshot(
        on("B", "b1", 1),
        on("A", "a1", 2, upstream=("u",)),
        run("u", "attrgen", state="RUNNING", name="Running", minute=0),
    )
    actions = decide(queue, slots=1, accepting=True, results={}, now=NOW, grouping=grouping("A"))
    assert released(actions) == []  # the slot is taken by u; a1 waits for it anyway
    queue["u"] = replace(queue["u"], state_type="COMPLETED", state_name="Completed")
    actions = decide(
        queue,
        slots=1,
        accepting=True,
        results={"u": TaskResult(run_type="attrgen", run_id=1, dataset_id=2)},
        now=NOW,
        grouping=grouping("A"),
    )
    assert released(actions) == ["a1"]


def test_no_task_is_overtaken_more_than_the_bound() -> None:
    # b1 has already been passed by two A tasks that started after it was submitted.
    history = (started("a1", "A", 2, at=3), started("a2", "A", 4, at=5))
    queue = snapshot(on("B", "b1", 1), on("A", "a3", 6))
    at_bound = grouping("A", *history, overtake=2)
    below = grouping("A", *history, overtake=3)
    assert released(
        decide(queue, slots=1, accepting=True, results={}, now=NOW, grouping=at_bound)
    ) == ["b1"]
    assert released(
        decide(queue, slots=1, accepting=True, results={}, now=NOW, grouping=below)
    ) == ["a3"]


def test_no_task_waits_longer_than_the_bound_beyond_its_fifo_turn() -> None:
    history = (started("a1", "A", 2, at=3),)  # took b1's turn at minute 3
    queue = snapshot(on("B", "b1", 1), on("A", "a2", 6))
    late = grouping("A", *history, wait_minutes=20)  # now is minute 30: 27 minutes late
    patient = grouping("A", *history, wait_minutes=60)
    assert released(decide(queue, slots=1, accepting=True, results={}, now=NOW, grouping=late)) == [
        "b1"
    ]
    assert released(
        decide(queue, slots=1, accepting=True, results={}, now=NOW, grouping=patient)
    ) == ["a2"]


def test_a_night_of_interleaved_models_runs_grouped_within_the_bound() -> None:
    """A B C A B C ... submitted at once, one slot, replayed release by release."""
    models = "ABC" * 4
    queue = {f"t{i}": on(m, f"t{i}", i) for i, m in enumerate(models)}
    order: list[str] = []
    loaded = "A"
    history: list[QueueRun] = []
    for step in range(len(models)):
        g = grouping(loaded, *history, overtake=3)
        (chosen,) = released(
            decide(queue, slots=1, accepting=True, results={}, now=NOW, grouping=g)
        )
        order.append(queue[chosen].parameters["model_name"])
        loaded = order[-1]
        history.append(replace(queue.pop(chosen), started_at=T0 + timedelta(minutes=20 + step)))
    assert sorted(order) == sorted(models)
    swaps = sum(1 for x, y in pairwise(order) if x != y)
    fifo_swaps = len(models) - 1
    assert swaps < fifo_swaps
    # The bound: no task was passed by more than 3 later tasks.
    for i, model in enumerate(models):
        position = [h.id for h in history].index(f"t{i}")
        passed_by = sum(1 for h in history[:position] if int(h.id[1:]) > i)
        assert passed_by <= 3, (model, i, passed_by)
