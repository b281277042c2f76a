"""Model grouping: among ready tasks of equal priority, prefer one for a model a GPU has loaded
(A B C A B C runs as A A B B C C), so the GPU swaps models less often — within bounds.

Pure, like decide(): a function of the snapshot. The bounds make it fair:
- no task is overtaken by more than `max_overtake` later tasks (of its priority or lower);
- no task waits more than `max_wait` longer than FIFO would have made it: counted from the first
  time a later task started in its place.
Overtakes are counted from the runs that started after the task became ready (submitted, and
its upstreams finished), so the manager keeps no count of its own and a restarted manager
knows them too; `started` gives it the runs that finished meanwhile (the snapshot holds only
unfinished ones). Dependencies hold because only ready tasks are ever reordered.

Why not llama-swap's reordering: it regroups requests with no bound, so a model whose requests
keep coming starves the others."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from biasbench.queue.model import QueueRun

LLM_TASK_TYPES = ("attrgen", "benchmark")


@dataclass(frozen=True)
class ModelGrouping:
    """What grouping needs besides the queue: the loaded models and the bounds."""

    loaded: frozenset[str]  # the models the GPUs have loaded now (from the model hosts)
    max_overtake: int = 8
    max_wait: timedelta = timedelta(hours=2)
    started: Sequence[QueueRun] = field(default_factory=tuple)  # runs that started lately


def model_of(run: QueueRun) -> str | None:
    """The model a task needs from its GPU's model host; None when it needs none (no LLM, the
    fake backend, or a server of its own)."""
    parameters = run.parameters
    if run.task_type not in LLM_TASK_TYPES or parameters.get("vllm_base_url"):
        return None
    if parameters.get("llm", "vllm") != "vllm":
        return None
    model = parameters.get("model_name")
    return model if isinstance(model, str) else None


def grouped(
    ready: Sequence[QueueRun],
    runs: Mapping[str, QueueRun],
    grouping: ModelGrouping,
    *,
    picks: int,
    now: datetime,
) -> list[QueueRun]:
    """`ready` (in FIFO order) reordered so that its first `picks` runs are the ones to
    release: the FIFO head, unless it needs a model no GPU has and a later ready task of the
    same priority uses a loaded one, and the tasks it passes may still be overtaken."""
    started = {r.id: r for r in grouping.started if r.started_at is not None}
    started |= {r.id: r for r in runs.values() if r.started_at is not None}
    remaining = list(ready)
    chosen: list[QueueRun] = []
    extra: dict[str, int] = {}  # overtakes this call adds
    while remaining and len(chosen) < picks:
        head = remaining[0]
        pick = head
        needed = model_of(head)
        if needed is not None and needed not in grouping.loaded:
            for index, candidate in enumerate(remaining[1:], start=1):
                if candidate.priority != head.priority:
                    break
                if model_of(candidate) in grouping.loaded and all(
                    _may_be_overtaken(t, runs, list(started.values()), grouping, extra, now)
                    for t in remaining[:index]
                ):
                    pick = candidate
                    break
        for passed in remaining[: remaining.index(pick)]:
            extra[passed.id] = extra.get(passed.id, 0) + 1
        remaining.remove(pick)
        chosen.append(pick)
    return chosen + remaining


def _may_be_overtaken(
    run: QueueRun,
    runs: Mapping[str, QueueRun],
    started: Iterable[QueueRun],
    grouping: ModelGrouping,
    extra: Mapping[str, int],
    now: datetime,
) -> bool:
    since = _ready_since(run, runs)
    overtakers = [
        s.started_at
        for s in started
        if s.started_at is not None and s.started_at >= since and s.order > run.order
    ]
    if len(overtakers) + extra.get(run.id, 0) >= grouping.max_overtake:
        return False
    return not overtakers or now - min(overtakers) < grouping.max_wait


def _ready_since(run: QueueRun, runs: Mapping[str, QueueRun]) -> datetime:
    """When FIFO would have let it run at the earliest: submitted, and its upstreams ended."""
    ends = [runs[u].ended_at for u in run.upstream if u in runs]
    return max([run.created, *[end for end in ends if end is not None]])
