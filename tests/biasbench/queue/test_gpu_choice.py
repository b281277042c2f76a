"""Which GPU a released task goes to (biasbench.queue.gpus through decide): the one with its
model loaded first, else a free one; a run released to a GPU whose worker died goes back to
Queued; never two tasks on one GPU."""

from __future__ import annotations

from dataclasses import replace

from biasbench.queue.decide import Release, Requeue, decide
from biasbench.queue.gpus import Gpu, assign, gpu_of, gpu_tag, parse_worker_name, retagged
from biasbench.queue.model import QueueRun
from tests.biasbench.queue.test_decide import run, snapshot

G0, G1 = "gpu-0@box", "gpu-1@box"


def llm(rid: str, model: str, minute: int = 0, **more: object) -> QueueRun:
    return run(rid, minute=minute, llm="vllm", model_name=model, **more)  # type: ignore[arg-type]


def releases(actions: list) -> dict[str, str | None]:  # type: ignore[type-arg]
    return {a.run_id: a.gpu for a in actions if isinstance(a, Release)}


def on(gpu: str, held: QueueRun, state: str = "RUNNING") -> QueueRun:
    """The run as it is once released to (or running on) `gpu`."""
    name = "Released" if state == "SCHEDULED" else "Running"
    return replace(held, state_type=state, state_name=name, tags=(gpu_tag(gpu),))


def test_a_task_goes_to_the_gpu_that_has_its_model_loaded() -> None:
    gpus = [Gpu(G0, model="model-a"), Gpu(G1, model="model-b")]
    actions = decide(
        snapshot(llm("b", "model-b", minute=1), llm("a", "model-a", minute=2)),
        slots=2,
        accepting=True,
        results={},
        gpus=gpus,
    )
    assert releases(actions) == {"b": G1, "a": G0}


def test_without_its_model_anywhere_a_task_goes_to_an_empty_gpu_before_a_loaded_one() -> None:
    gpus = [Gpu(G0, model="model-b"), Gpu(G1)]
    actions = decide(snapshot(llm("c", "model-c")), slots=2, accepting=True, results={}, gpus=gpus)
    assert releases(actions) == {"c": G1}
    assert assign(["model-c", "model-b"], gpus) == [gpus[1], gpus[0]]


def test_a_busy_gpu_gets_nothing_more_and_the_free_one_gets_the_next_task() -> None:
    gpus = [Gpu(G0, model="model-a"), Gpu(G1)]
    busy = on(G0, llm("running", "model-a"))
    actions = decide(
        snapshot(busy, llm("next", "model-a", minute=1), llm("later", "model-a", minute=2)),
        slots=2,
        accepting=True,
        results={},
        gpus=gpus,
    )
    assert releases(actions) == {"next": G1}  # not G0, although it has the model


def test_never_two_tasks_on_one_gpu_over_a_whole_queue() -> None:
    """Replayed look by look: each release runs at once, and one task ends per look."""
    gpus = [Gpu(G0), Gpu(G1)]
    runs = snapshot(*(llm(f"t{i}", f"model-{i % 3}", minute=i) for i in range(7)))
    order: list[str] = []
    while any(r.is_held or r.state_type == "RUNNING" for r in runs.values()):
        for rid, gpu in releases(
            decide(runs, slots=2, accepting=True, results={}, gpus=gpus)
        ).items():
            assert gpu is not None
            runs[rid] = on(gpu, runs[rid])
            order.append(rid)
        on_gpu = [gpu_of(r.tags) for r in runs.values() if r.state_type == "RUNNING"]
        assert len(on_gpu) == len(set(on_gpu)) <= 2
        first = min((r for r in runs.values() if r.state_type == "RUNNING"), key=lambda r: r.order)
        runs[first.id] = replace(first, state_type="COMPLETED", state_name="Completed")
    assert order == [f"t{i}" for i in range(7)]  # FIFO kept


def test_a_run_released_to_a_dead_gpu_goes_back_to_queued_and_then_to_a_live_one() -> None:
    stranded = on(G1, llm("x", "model-a"), state="SCHEDULED")
    later = llm("y", "model-a", minute=5)
    gpus = [Gpu(G0), Gpu(G1, alive=False)]
    actions = decide(snapshot(stranded, later), slots=2, accepting=True, results={}, gpus=gpus)
    assert [type(a) for a in actions] == [Requeue]
    # Its state was just written: released again next look, and nothing jumps it meanwhile.
    assert releases(actions) == {}

    back = replace(stranded, state_type="PAUSED", state_name="Queued")
    again = decide(snapshot(back), slots=2, accepting=True, results={}, gpus=gpus)
    assert releases(again) == {"x": G0}


def test_a_running_task_on_a_dead_gpu_is_left_to_the_crash_handling() -> None:
    running = on(G1, llm("x", "model-a"))
    actions = decide(
        snapshot(running), slots=2, accepting=True, results={}, gpus=[Gpu(G0), Gpu(G1, alive=False)]
    )
    assert actions == []


def test_without_per_gpu_workers_releases_name_no_gpu() -> None:
    actions = decide(snapshot(llm("a", "model-a")), slots=1, accepting=True, results={})
    assert releases(actions) == {"a": None}


def test_worker_names_and_tags() -> None:
    assert parse_worker_name("gpu-3@node-7.lab") == (3, "node-7.lab")
    assert parse_worker_name("gpu@node-7") is None  # the plain worker
    assert retagged(["llm-queue", gpu_tag(G0)], G1) == ["llm-queue", gpu_tag(G1)]
    assert retagged(["llm-queue", gpu_tag(G0)], None) == ["llm-queue"]
