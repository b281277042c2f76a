"""Critical failures end a task run in a Failed state named after their kind.

The exception is only at hand inside the flow's process; the state is what everyone else sees
(the queue manager's notifications, the /queue API, the run's badge in the Prefect UI). So a flow
that dies of an unreachable LLM server, a full GPU or a lost database finishes as
Failed("LLM unreachable") rather than plain Failed, with the same message and exception Prefect
would have recorded."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger
from prefect.states import Failed, State

from biasbench.errors import critical_kind


def critical_failure(exc: Exception) -> State[Any] | None:
    """The state a task flow returns instead of raising; None when `exc` is not critical (it
    propagates, and Prefect records a plain Failed)."""
    kind = critical_kind(exc)
    if kind is None:
        return None
    get_run_logger().error("Critical failure (%s): %s", kind.name, kind.hint, exc_info=exc)
    return Failed(
        name=kind.name,
        message=f"Flow run encountered an exception: {type(exc).__name__}: {exc}",
        data=exc,
    )
