"""The adds the /queue API has answered but Prefect has not created yet: a durable outbox.

Why: the Prefect server on SQLite creates about 20-30 runs a second at best, even through its
bulk route (perf/README.md), so 50 clients adding at once each waited 2-4 s for their runs. An
add is now answered once it is checked and written here, in one transaction with its task id;
one sender creates what waits, in Prefect's bulk calls (up to 100 runs each, in task-id order,
which is the order of submission), then binds each id to its run and drops the row, again in
one transaction per call.

- Nothing is lost: a row stays until its run exists. An API started again sends what it finds.
- Nothing is doubled: every create carries its add's key (queue_api/ids.py) as Prefect's
  idempotency key, so a create sent again (the API stopped, a call failed without an answer,
  two API processes send the same row) returns the run the first one made.
- Reads see their writes: the views list waiting adds as queued tasks (`waiting`); what needs
  the run itself (cancel, retry, `depends_on`) waits for it.
- A delete does not wait (`withdraw`): an add not being sent yet is dropped; one whose run is
  being created is marked withdrawn, and the sender deletes the run once it exists, in one call
  with other deletes, before its id is bound (the views hide it meanwhile). The mark is kept
  until the run is gone, so a crash in between deletes it on the next round. If the manager
  started the run in that moment, it is cancelled as by its user instead.
- Any number of API processes may share a domain database: each sends what it finds, and the
  key keeps every add one run (the stack starts one)."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime

from prefect.client.orchestration import PrefectClient
from prefect.exceptions import PrefectHTTPStatusError
from sqlalchemy import Engine, delete, select, update

from biasbench.db.engine import session_scope
from biasbench.db.models import QueueOutbox, QueueTaskId
from biasbench.errors import NotFound, QueueBusy
from biasbench.queue import gateway, removals
from biasbench.queue.attempt import USER_CANCEL
from biasbench.queue.model import QueueRun
from biasbench.queue.submit import Submission
from queue_api.ids import ADD_KEY_TAG, TaskIds, add_key_tag, reserved_marker, task_id_tag

log = logging.getLogger(__name__)

SEND_AT_MOST = 500  # rows per round: a long backlog still lets the round's binds land soon
IDLE_LOOK_SECONDS = 5.0  # an empty outbox is looked at again this often (and on every add)
MAX_BACKOFF_SECONDS = 30.0  # while Prefect does not answer, sends are tried this often at least
CREATED_WAIT_SECONDS = 60.0  # how long a request that needs a waiting add's run waits for it


@dataclass
class CreateTicket:
    """Whether an add was written to the outbox, or its client was told it was not and never
    will be (the API's middleware answered 503 while the add waited for Prefect); both are set
    on the event loop without an await between check and set."""

    sent: bool = False
    given_up: bool = False


class GivenUp(Exception):
    """The client was already answered that the task was not created."""

    def __str__(self) -> str:
        return "the Prefect server did not answer; the task was not created, try again"


@dataclass(frozen=True)
class Waiting:
    """An add in the outbox, as the views show it."""

    task_id: int
    task_type: str
    parameters: dict[str, object]
    label: str | None
    held_as: str  # Queued, or Waiting (for an upstream)
    depends_on: list[int]
    submitted_at: datetime
    error: str | None  # Prefect refused it for good

    def as_held_run(self) -> QueueRun:
        """As the held run it will be, for its place in line."""
        return QueueRun(
            id=f"outbox-{self.task_id}",
            name=self.label or "",
            task_type=self.task_type,  # type: ignore[arg-type]
            state_type="PAUSED",
            state_name=self.held_as,
            created=self.submitted_at,
            priority=int(self.parameters.get("priority") or 0),  # type: ignore[call-overload]
            upstream=tuple(str(u) for u in self.parameters.get("upstream") or ()),  # type: ignore[attr-defined]
            parameters=self.parameters,
        )


class Outbox:
    def __init__(self, engine: Engine, ids: TaskIds) -> None:
        self.engine, self.ids = engine, ids
        self._wake = asyncio.Event()
        self._created: dict[int, asyncio.Future[str]] = {}
        # Read for this round's sending, or sent without an answer: too late to withdraw.
        self._in_flight: set[int] = set()

    # --- what the routes ask -----------------------------------------------------------------

    def put(
        self, submission: Submission, *, depends_on: Sequence[int], ticket: CreateTicket
    ) -> int:
        """Reserve the task id and keep the add, in one transaction; returns the id."""
        if ticket.given_up:
            raise GivenUp
        with session_scope(self.engine) as session:
            marker = reserved_marker()
            reserved = QueueTaskId(flow_run_id=marker)
            session.add(reserved)
            session.flush()
            session.add(
                QueueOutbox(
                    task_id=reserved.id,
                    task_type=submission.task_type,
                    parameters=submission.parameters,
                    label=submission.label,
                    held_as=submission.held_as,
                    tags=[task_id_tag(reserved.id), add_key_tag(marker)],
                    depends_on=list(depends_on),
                    submitted_at=datetime.now(UTC),
                )
            )
            task_id = reserved.id
        ticket.sent = True
        self._wake.set()
        return task_id

    def waiting(self, task_ids: Iterable[int] | None = None) -> list[Waiting]:
        """The adds not created yet (those of `task_ids` only, if given), in submission order."""
        query = (
            select(QueueOutbox)
            .where(QueueOutbox.withdrawn.is_(False))
            .order_by(QueueOutbox.task_id)
        )
        if task_ids is not None:
            query = query.where(QueueOutbox.task_id.in_(list(task_ids)))
        with session_scope(self.engine) as session:
            return [
                Waiting(
                    r.task_id,
                    r.task_type,
                    dict(r.parameters),
                    r.label,
                    r.held_as,
                    list(r.depends_on),
                    r.submitted_at.replace(tzinfo=r.submitted_at.tzinfo or UTC),
                    r.error,
                )
                for r in session.scalars(query)
            ]

    async def flow_runs_for(self, task_ids: Iterable[int]) -> dict[int, str]:
        """task id -> flow-run id of those that exist, waiting for those still in the outbox
        (QueueBusy if they are not created within CREATED_WAIT_SECONDS)."""
        wanted = list(dict.fromkeys(task_ids))
        loop = asyncio.get_running_loop()
        # All futures before the first await: the sender binds on this loop, never in between.
        futures = {
            w.task_id: self._created.setdefault(w.task_id, loop.create_future())
            for w in self.waiting(wanted)
            if w.error is None
        }
        for task_id, future in futures.items():
            try:
                await asyncio.wait_for(asyncio.shield(future), CREATED_WAIT_SECONDS)
            except TimeoutError:
                raise QueueBusy(
                    f"task {task_id} is still being created in Prefect; try again shortly"
                ) from None
            except Exception:  # refused for good: it has no run
                pass
        return self.ids.flow_runs_for(wanted)

    def dependents_of(self, task_id: int) -> int:
        """Adds not created yet that depend on the task."""
        return sum(task_id in w.depends_on for w in self.waiting() if w.error is None)

    def withdrawn_keys(self) -> set[str]:
        """The add-key tags of withdrawn adds: runs carrying one are being deleted."""
        query = select(QueueOutbox.tags).where(QueueOutbox.withdrawn.is_(True))
        with session_scope(self.engine) as session:
            tags = session.scalars(query)
            return {tag for row in tags for tag in row if tag.startswith(ADD_KEY_TAG)}

    def withdraw(self, task_id: int) -> bool:
        """Remove an add not created yet: its row goes, or, if its run is being created, it is
        marked, and the sender deletes the run. False when the add is not in the outbox."""
        with session_scope(self.engine) as session:
            row = session.get(QueueOutbox, task_id)
            if row is None:
                return False
            if row.withdrawn:
                raise NotFound(None, f"task {task_id} does not exist")
            if task_id in self._in_flight:
                row.withdrawn = True
            else:
                session.delete(row)
        self._settle(task_id, error=NotFound(None, f"task {task_id} was removed"))
        return True

    # --- the sender --------------------------------------------------------------------------

    async def send_forever(self, client: PrefectClient) -> None:
        failures = 0
        while True:
            self._wake.clear()  # before the read: an add after it wakes the next round
            rows = self._unsent()
            self._in_flight = {r.task_id for r in rows}
            if not rows:
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_LOOK_SECONDS)
                continue
            try:
                await self._send(client, rows)
                failures = 0
            except Exception as exc:  # Prefect down or busy: the rows wait, nothing is lost
                failures += 1
                if failures == 1:
                    log.warning("Outbox: %d add(s) wait for Prefect: %r", len(rows), exc)
                # They stay in flight: some may exist, and only the next round's send says which.
                await asyncio.sleep(min(2 ** (failures - 1), MAX_BACKOFF_SECONDS))
                continue
            self._in_flight = set()

    def _unsent(self) -> list[QueueOutbox]:
        with session_scope(self.engine) as session:
            query = (
                select(QueueOutbox)
                .where(QueueOutbox.error.is_(None))
                .order_by(QueueOutbox.task_id)
                .limit(SEND_AT_MOST)
            )
            rows = list(session.scalars(query))
            session.expunge_all()
            return rows

    async def _send(self, client: PrefectClient, rows: list[QueueOutbox]) -> None:
        # Consecutive rows of one task type go in one call, so runs are created in id order.
        for task_type, group in itertools.groupby(rows, key=lambda r: r.task_type):
            same = list(group)
            deployment = await gateway.task_deployment(client, task_type)
            for start in range(0, len(same), gateway.BULK_CREATE_LIMIT):
                chunk = same[start : start + gateway.BULK_CREATE_LIMIT]
                try:
                    outcomes = await gateway.create_held_runs(
                        client,
                        deployment,
                        [_held_run(r) for r in chunk],
                    )
                except PrefectHTTPStatusError as exc:
                    if not _refused_for_good(exc):
                        raise
                    self._refuse({r.task_id: _why(exc) for r in chunk})
                    continue
                made = {
                    r.task_id: outcome
                    for r, outcome in zip(chunk, outcomes, strict=True)
                    if isinstance(outcome, str)
                }
                await self._delete_withdrawn(client, self._bind(made))
                if len(made) < len(chunk):
                    raise QueueBusy(f"{len(chunk) - len(made)} run(s) not created yet")

    def _bind(self, runs: dict[int, str], *, even_withdrawn: bool = False) -> dict[int, str]:
        """Bind the ids to their runs and drop their rows, in one transaction; returns the runs
        of adds withdrawn meanwhile, which are not bound (unless `even_withdrawn`)."""
        if not runs:
            return {}
        with session_scope(self.engine) as session:
            withdrawn: set[int] = set()
            if not even_withdrawn:
                query = select(QueueOutbox.task_id).where(
                    QueueOutbox.task_id.in_(list(runs)), QueueOutbox.withdrawn.is_(True)
                )
                withdrawn = set(session.scalars(query))
            runs, withdrawn_runs = _split(runs, withdrawn)
            for task_id, flow_run_id in runs.items():
                session.execute(
                    update(QueueTaskId)
                    .where(QueueTaskId.id == task_id)
                    .values(flow_run_id=flow_run_id)
                )
            session.execute(delete(QueueOutbox).where(QueueOutbox.task_id.in_(list(runs))))
        for task_id, flow_run_id in runs.items():
            self.ids.remember(task_id, flow_run_id)
            self._settle(task_id, result=flow_run_id)
        return withdrawn_runs

    async def _delete_withdrawn(self, client: PrefectClient, runs: dict[int, str]) -> None:
        """Delete the runs of withdrawn adds, then their rows. One the manager started
        meanwhile is cancelled as by its user, and bound: it shows as the cancelled task."""
        if not runs:
            return
        removed = await asyncio.gather(*(removals.remove(client, r) for r in runs.values()))
        started, gone = _split(runs, {t for t, r in zip(runs, removed, strict=True) if r.removed})
        for run_id in started.values():
            with suppress(NotFound):
                run = await gateway.run_by_id(client, run_id)
                if not run.is_final:
                    await gateway.request_cancel(client, run, USER_CANCEL)
        with session_scope(self.engine) as session:
            session.execute(delete(QueueOutbox).where(QueueOutbox.task_id.in_(list(gone))))
        self._bind(started, even_withdrawn=True)

    def _refuse(self, why: dict[int, str]) -> None:
        with session_scope(self.engine) as session:
            for task_id, reason in why.items():
                session.execute(
                    update(QueueOutbox).where(QueueOutbox.task_id == task_id).values(error=reason)
                )
            # A withdrawn add Prefect refused has no run to delete: it is simply gone.
            session.execute(
                delete(QueueOutbox).where(
                    QueueOutbox.task_id.in_(list(why)), QueueOutbox.withdrawn.is_(True)
                )
            )
        for task_id, reason in why.items():
            log.warning("Outbox: Prefect refused task %d for good: %s", task_id, reason)
            self._settle(task_id, error=RuntimeError(reason))

    def _settle(
        self, task_id: int, *, result: str | None = None, error: Exception | None = None
    ) -> None:
        future = self._created.pop(task_id, None)
        if future is None or future.done():
            return
        if error is not None:
            future.set_exception(error)
            future.exception()  # retrieved: nobody may be waiting for it
        else:
            future.set_result(result or "")


def _split(runs: dict[int, str], these: set[int]) -> tuple[dict[int, str], dict[int, str]]:
    """(the runs of other task ids, the runs of `these`)."""
    return (
        {t: r for t, r in runs.items() if t not in these},
        {t: r for t, r in runs.items() if t in these},
    )


def _held_run(row: QueueOutbox) -> gateway.HeldRun:
    (key,) = (t for t in row.tags if t.startswith(ADD_KEY_TAG))
    return gateway.HeldRun(row.parameters, row.label, row.held_as, row.tags, idempotency_key=key)


def _refused_for_good(exc: PrefectHTTPStatusError) -> bool:
    """A 4xx other than a timeout or too-many-requests: sending it again changes nothing."""
    status = exc.response.status_code
    return 400 <= status < 500 and status not in (408, 429)


def _why(exc: PrefectHTTPStatusError) -> str:
    return (
        f"Prefect refused to create the run ({exc.response.status_code}): {exc.response.text[:300]}"
    )
