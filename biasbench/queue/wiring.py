"""Which result of an upstream task fills which parameter of its dependent (design.md §3.5),
and when the two cannot agree.

A dependent may name a value its upstream will produce (the original's docs send `dataset_id`
along with an attrgen upstream): that is fine while they agree. A value that differs, or two
upstreams that would fill one parameter with different values, is a contradiction. It is
refused at submission when the upstream results are known then, else the dependent is skipped
with the reason when they are, instead of one value silently winning."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from biasbench.queue.model import TaskType
from biasbench.results import TaskResult

RESULT_WIRING: Final[Mapping[tuple[TaskType, TaskType], Mapping[str, str]]] = {
    (TaskType.POOL_GEN, TaskType.BALANCED_GEN): {"dataset_id": "dataset_id"},
    (TaskType.BALANCED_GEN, TaskType.ATTRGEN): {"dataset_id": "dataset_id"},
    (TaskType.BALANCED_GEN, TaskType.BENCHMARK): {"dataset_id": "dataset_id"},
    (TaskType.POOL_GEN, TaskType.ATTRGEN): {"dataset_id": "dataset_id"},
    (TaskType.POOL_GEN, TaskType.BENCHMARK): {"dataset_id": "dataset_id"},
    (TaskType.ATTRGEN, TaskType.BENCHMARK): {
        "attrgen_run_id": "run_id",
        "dataset_id": "dataset_id",
    },
}


def filled_parameters(upstream: TaskType, dependent: TaskType) -> Mapping[str, str]:
    """Parameter of the dependent → field of the upstream's result that fills it."""
    return RESULT_WIRING.get((upstream, dependent), {})


@dataclass(frozen=True)
class Upstream:
    """A completed upstream as wiring sees it."""

    name: str  # for people: the task id the user knows, or the run's description
    task_type: TaskType
    result: TaskResult


@dataclass(frozen=True)
class Contradiction:
    parameter: str
    reason: str


def wire(
    task_type: TaskType, parameters: Mapping[str, Any], upstreams: Sequence[Upstream]
) -> dict[str, Any] | Contradiction:
    """The parameters with every upstream's result filled in, or why they cannot be."""
    filled = dict(parameters)
    source: dict[str, Upstream] = {}
    for upstream in upstreams:
        result = upstream.result.model_dump()
        for parameter, result_field in filled_parameters(upstream.task_type, task_type).items():
            value = result[result_field]
            if parameter in source and filled[parameter] != value:
                return Contradiction(
                    parameter,
                    f"upstream {source[parameter].name} gives {parameter}={filled[parameter]}, "
                    f"upstream {upstream.name} gives {parameter}={value}",
                )
            given = parameters.get(parameter)
            if parameter not in source and given is not None and given != value:
                return Contradiction(
                    parameter,
                    f"{parameter}={given} was given, but upstream {upstream.name} "
                    f"gives {parameter}={value}",
                )
            filled[parameter] = value
            source[parameter] = upstream
    return filled
