"""What any submission's values must be before they can travel to Prefect as JSON: finite
numbers, 64-bit integers, valid text, and a size the server takes. Checked on a task's config
and label whatever route submits it; the /queue API runs the same checks while it parses."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final

from biasbench.errors import InvalidSubmission

# Prefect refuses a flow run whose parameters exceed 512 KB; leave room for the queue's own.
MAX_PARAMETER_BYTES: Final = 500_000
MAX_LABEL_LENGTH: Final = 200  # a label is a flow run's name: one line in the UI
_INT64: Final = range(-(2**63), 2**63)


def check_value(value: Any, field: str) -> None:
    """Raise InvalidSubmission naming the (nested) field that JSON or Prefect cannot carry."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidSubmission(field, "must be a finite number (not NaN or Infinity)")
    if isinstance(value, int) and value not in _INT64:
        raise InvalidSubmission(field, "must fit in a 64-bit integer")
    if isinstance(value, str):
        _check_text(value, field)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_text(str(key), field)
            check_value(item, f"{field}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_value(item, f"{field}[{index}]")


def _check_text(text: str, field: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidSubmission(field, "is not valid text (it holds a lone surrogate)") from None


def check_size(config: Mapping[str, Any], field: str = "config") -> None:
    """Refuse parameters Prefect would refuse for their size, naming the biggest one."""
    sizes = {key: len(json.dumps(value).encode()) for key, value in config.items()}
    total = sum(sizes.values()) + sum(len(str(k)) + 4 for k in sizes)
    if total > MAX_PARAMETER_BYTES:
        biggest = max(sizes, key=sizes.__getitem__)
        raise InvalidSubmission(
            f"{field}.{biggest}",
            f"{sizes[biggest]:,} bytes; a task's parameters may take at most "
            f"{MAX_PARAMETER_BYTES:,} bytes in all (Prefect's limit is 512 KB)",
        )
