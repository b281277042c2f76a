"""Adds that arrive together are created together: one Prefect bulk call per task type.

Why: the Prefect server on SQLite carries out about 8 single creates a second, one after another
(perf/README.md), so 50 clients adding at once waited about 6 s each, however the writes were
ordered. Its bulk route (`/deployments/{id}/create_flow_run/bulk`, up to 100 runs in one
transaction) makes a burst cost about one create. Nothing waits for a batch to fill: an add that
finds nobody creating goes at once, alone; adds that arrive while a call is in flight go together
in the next call (group commit), so a lone client sees no extra latency.

Each add carries a `CreateTicket` shared with the API's middleware, which may answer 503 while an
add still works in the background (the Prefect server went silent): an add given up before its
create was sent is never created behind its client's back, and once sent, the middleware waits
for the outcome instead, since a 503 would make the client add it a second time."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from prefect.client.orchestration import PrefectClient

from biasbench.queue import gateway
from biasbench.queue.submit import Submission


@dataclass
class CreateTicket:
    """Whether an add's create has gone to Prefect, or its client was told it has not and never
    will; both are set on the event loop without an await between check and set."""

    sent: bool = False
    given_up: bool = False


class GivenUp(Exception):
    """The client was already answered that the task was not created."""

    def __str__(self) -> str:
        return "the Prefect server did not answer; the task was not created, try again"


@dataclass
class _Pending:
    submission: Submission
    tags: Sequence[str]
    ticket: CreateTicket
    created: asyncio.Future[str] = field(default_factory=asyncio.Future)


class BatchCreator:
    """Creates checked submissions, batching those that arrive while a create is under way."""

    def __init__(self) -> None:
        self._pending: list[_Pending] = []
        self._turn = asyncio.Lock()

    async def create(
        self,
        client: PrefectClient,
        submission: Submission,
        *,
        tags: Sequence[str] = (),
        ticket: CreateTicket | None = None,
    ) -> str:
        """The new run's flow-run id, as `biasbench.queue.submit.create` returns it."""
        mine = _Pending(submission, tags, ticket or CreateTicket())
        if mine.ticket.given_up:
            raise GivenUp
        self._pending.append(mine)
        async with self._turn:
            if not mine.created.done():  # nobody took it along: create all that wait now
                batch, self._pending = _sent(self._pending), []
                # Shielded: if this request is cancelled, the others' creates still finish.
                await asyncio.shield(_create_all(client, batch))
        return await mine.created


def _sent(pending: list[_Pending]) -> list[_Pending]:
    """The adds to create now, marked sent; those given up leave."""
    for given_up in (p for p in pending if p.ticket.given_up):
        given_up.created.set_exception(GivenUp())
    batch = [p for p in pending if not p.ticket.given_up]
    for p in batch:
        p.ticket.sent = True
    return batch


async def _create_all(client: PrefectClient, batch: list[_Pending]) -> None:
    """Every future of the batch ends resolved: with its run's id, or the error of its call."""
    try:
        by_deployment = itertools.groupby(
            sorted(batch, key=lambda p: str(p.submission.deployment.id)),
            key=lambda p: p.submission.deployment,
        )
        for deployment, same in by_deployment:
            items = list(same)
            for start in range(0, len(items), gateway.BULK_CREATE_LIMIT):
                chunk = items[start : start + gateway.BULK_CREATE_LIMIT]
                outcomes = await gateway.create_held_runs(
                    client,
                    deployment,
                    [
                        gateway.HeldRun(
                            p.submission.parameters,
                            p.submission.label,
                            p.submission.held_as,
                            p.tags,
                        )
                        for p in chunk
                    ],
                )
                for pending, outcome in zip(chunk, outcomes, strict=True):
                    if isinstance(outcome, Exception):
                        pending.created.set_exception(outcome)
                    else:
                        pending.created.set_result(outcome)
    except Exception as exc:
        for pending in batch:
            if not pending.created.done():
                pending.created.set_exception(exc)
