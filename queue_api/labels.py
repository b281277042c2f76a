"""Labels in the original queue's format, for tasks submitted without one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def default_label(task_type: str, config: Mapping[str, Any]) -> str:
    dataset = f" - DS#{config['dataset_id']}" if config.get("dataset_id") is not None else ""
    model = config.get("model_name", "?")
    match task_type:
        case "benchmark":
            rationale = " + Rationale" if config.get("include_rationale") else ""
            return f"Benchmark: {model}{dataset}{rationale}"
        case "attrgen":
            return f"AttrGen: {model}{dataset}"
        case "pool_gen":
            return f"Pool Generation: {config.get('n', 20000)} personas"
        case _:
            return f"Balanced Gen: {config.get('n', 500)} personas{dataset}"
