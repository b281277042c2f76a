"""Critical failures end a task run in a Failed state named after their kind.

The exception is only at hand inside the flow's process; the state is what everyone else sees
(the queue manager's notifications, the /queue API, the run's badge in the Prefect UI). So a flow
that dies of an unreachable LLM server, a full GPU or a lost database finishes as
Failed("LLM unreachable") rather than plain Failed, with the same message and exception Prefect
would have recorded."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from prefect import get_run_logger
from prefect.states import Failed, State

from biasbench.errors import critical_kind

P = ParamSpec("P")
R = TypeVar("R")


def named_critical_failures(
    body: Callable[P, Awaitable[R]],
) -> Callable[P, Awaitable[R | State[Any]]]:
    """Wraps a flow body, under `@flow`."""

    @functools.wraps(body)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R | State[Any]:
        try:
            return await body(*args, **kwargs)
        except Exception as exc:
            kind = critical_kind(exc)
            if kind is None:
                raise
            get_run_logger().error("Critical failure (%s): %s", kind.name, kind.hint, exc_info=exc)
            return Failed(
                name=kind.name,
                message=f"Flow run encountered an exception: {type(exc).__name__}: {exc}",
                data=exc,
            )

    # Prefect builds the parameter model from the signature, resolving string annotations in
    # the function's globals: those of this module for the wrapper. Resolve them here instead.
    run.__signature__ = inspect.signature(body, eval_str=True)  # type: ignore[attr-defined]
    return run
