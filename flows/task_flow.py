"""The skeleton of every task flow: one decorator for what Prefect and the queue need, one
context for what the body needs, so a flow file holds only its own data flow.

`@task_flow("attrgen")` makes the body a Prefect flow of that name which first waits for the
queue manager's release (flows/queue_turn.py) and ends a critical failure in a Failed state
named after its kind (flows/failures.py). Results are not persisted by Prefect: a task returns
what `biasbench.results` reads back from the domain database, the one source every process
shares. The body reaches settings, the database, its flow-run id and the run logger through
`task_context()`, the way arq's `worker.func` gathers a job's options in one place.

Each body still declares `upstream: Upstream = None, priority: Priority = 0` itself: Prefect
builds the deployment's parameter schema, which submissions are validated against, from the
body's own signature (`prefect deploy` reads it), so the decorator checks they are there rather
than adding them."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from prefect import Flow, flow, get_run_logger
from prefect.logging.loggers import LoggingAdapter
from prefect.states import State
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from biasbench import rates
from biasbench.db.engine import session_scope
from biasbench.errors import InvalidConfig
from biasbench.llm.base import ChatClient
from biasbench.llm.key_scope import shown
from biasbench.queue.model import QUEUE_PARAMETERS
from biasbench.results import TaskResult
from biasbench.settings import Settings
from biasbench.task_checks import check_task
from flows.failures import critical_failure
from flows.queue_turn import Priority, Upstream, wait_for_turn
from flows.runtime import current_flow_run_id, database

P = ParamSpec("P")
Batch = TypeVar("Batch", bound=Sequence[Any])

# How every task flow declares the queue's own parameters: (annotation, default) of each.
_DECLARED = dict(zip(QUEUE_PARAMETERS, [(Upstream, None), (Priority, 0)], strict=True))


def task_flow(
    name: str,
) -> Callable[[Callable[P, Awaitable[TaskResult]]], Flow[P, Awaitable[TaskResult | State[Any]]]]:
    def decorate(
        body: Callable[P, Awaitable[TaskResult]],
    ) -> Flow[P, Awaitable[TaskResult | State[Any]]]:
        # Resolved here: Prefect would resolve string annotations in this module's globals.
        signature = inspect.signature(body, eval_str=True)
        _check_queue_parameters(name, signature)

        @functools.wraps(body)
        async def run(*args: P.args, **kwargs: P.kwargs) -> TaskResult | State[Any]:
            try:
                await wait_for_turn()
                return await body(*args, **kwargs)
            except Exception as exc:
                if (failed := critical_failure(exc)) is None:
                    raise
                return failed

        run.__signature__ = signature  # type: ignore[attr-defined]
        return flow(name=name)(run)

    return decorate


def _check_queue_parameters(name: str, signature: inspect.Signature) -> None:
    for parameter, (annotation, default) in _DECLARED.items():
        declared = signature.parameters.get(parameter)
        if declared is None or (declared.annotation, declared.default) != (annotation, default):
            raise TypeError(
                f"task flow {name!r} must declare `{parameter}: "
                f"{parameter.capitalize()} = {default!r}` (the queue's parameter schema)"
            )


@dataclass(frozen=True)
class TaskContext:
    """What a task body needs from its surroundings, read at the flow's entry."""

    settings: Settings
    engine: Engine
    flow_run_id: str | None
    logger: logging.Logger | LoggingAdapter

    def session(self) -> AbstractContextManager[Session]:
        """One transaction in the domain database."""
        return session_scope(self.engine)

    def check(self, task_type: str, parameters: Mapping[str, Any]) -> None:
        """Refuse what the submission refused (biasbench.task_checks), now that upstream
        results are filled in and the database may have changed."""
        with self.session() as session:
            check_task(task_type, parameters, session=session, catalogue=self.settings.catalogue)

    def saving(
        self, save: Callable[[Session, int, Batch], None], run_id: int
    ) -> Callable[[Batch], None]:
        """`save` for one run, a transaction per batch: what `answer_all` calls as answers
        arrive, so a killed process keeps every batch saved before."""

        def save_batch(batch: Batch) -> None:
            with self.session() as session:
                save(session, run_id, batch)

        return save_batch

    def rate_meter(
        self,
        task_type: str,
        client: ChatClient,
        *,
        llm: str,
        base_url: str | None,
        total: int,
        batch_size: int,
    ) -> rates.RateMeter:
        """Records this run's rate per flush (biasbench.rates): what ETAs are computed from."""

        def store(row: dict[str, Any]) -> None:
            with self.session() as session:
                rates.record(session, row)

        server = "fake" if llm == "fake" else shown(base_url or self.settings.vllm_base_url)
        return rates.RateMeter(
            rates.RateKind(task_type, client.model_name, batch_size),
            server=server,
            flow_run_id=self.flow_run_id,
            total=total,
            usage=client.usage,
            store=store,
        )


def task_context() -> TaskContext:
    settings = Settings()
    return TaskContext(
        settings=settings,
        engine=database(settings),
        flow_run_id=current_flow_run_id(),
        logger=get_run_logger(),
    )


def given_dataset(dataset_id: int | None, what: str) -> int:
    """The dataset a task works on. Its parameter may be empty because an upstream task fills
    it in when the queue wires results; by the time the body runs it must be there."""
    if dataset_id is None:
        raise InvalidConfig("dataset_id", f"required: {what}")
    return dataset_id
