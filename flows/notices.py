"""What the queue tells its users: one event per finished task and per change of the queue.

The manager sees every task end (it reacts to them anyway) and knows what a message needs and a
Prefect state does not: how many dependents will be skipped, the result run, the quick analysis.
So it writes each message here and posts it as a Prefect event with the text in its payload;
server-side automations (deployments/notifications.py) send those events to Telegram and e-mail.
Every message is also logged, so with no channel configured it is still in the manager's log.

Messages wait in an outbox until the server has taken them (`send`, at every look): a server
that is down delays them, never loses them, and a task end counts as announced (the domain
database's ledger) only once its message is with the server.

No message for a cancellation or a skipped dependent: the user did the one, and the failure's
message counts the other."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Set
from datetime import UTC, datetime
from typing import Any

from prefect.client.orchestration import PrefectClient
from prefect.events import Event, Resource
from prefect.utilities.urls import url_for
from sqlalchemy import Engine

from biasbench.announcements import already_announced, missed_since, record_announced
from biasbench.db.engine import session_scope
from biasbench.errors import critical_of_state
from biasbench.queue import gateway
from biasbench.queue.grouping import model_of
from biasbench.queue.messages import (
    QUEUE_RESOURCE,
    Forecast,
    TaskSeen,
    completion_text,
    failure_text,
    queue_text,
    subject,
)
from biasbench.queue.model import QueueRun, QueueStatus, counting_stalls, held_dependents
from biasbench.results import result_of_flow_run


class Notices:
    def __init__(self, logger: logging.Logger | logging.LoggerAdapter[Any], engine: Engine) -> None:
        self._logger = logger
        self._engine = engine
        self._unfinished: dict[str, QueueRun] = {}  # task runs not yet finished at the last look
        self._tally: Counter[str] = Counter()  # outcomes since the queue last drained
        # Messages not yet taken by the server, each with the task end it announces (if any).
        self._outbox: list[tuple[Event, tuple[str, datetime] | None]] = []
        self._model_loads: dict[str, dict[str, Any]] = {}  # by flow run, as the hosts published

    def queue(self, what: str, *, waiting: int = 0, forecast: Forecast | None = None) -> None:
        """started, paused, resumed, drained or stopped; `forecast` the drain time expected
        (started) or that was expected (drained)."""
        text = queue_text(
            what, waiting=waiting, tally=self._tally, forecast=forecast, now=datetime.now(UTC)
        )
        if what == "drained":
            self._tally.clear()
        self._emit(f"biasbench.queue.{what}", QUEUE_RESOURCE, text)

    async def tasks(
        self, client: PrefectClient, runs: Mapping[str, QueueRun], stalled: Set[str]
    ) -> None:
        """Announce the task runs that finished since the last look. `runs` is this look's
        snapshot; `stalled` the runs the manager stopped for making no progress (failed)."""
        runs = counting_stalls(runs, stalled)
        ended = [
            run_id for run_id in self._unfinished if run_id not in runs or runs[run_id].is_settled
        ]
        # Read what the ended runs became before forgetting them: a read that fails (a busy or
        # restarting server) must leave them to the next look, not lose their message.
        seen = counting_stalls(await gateway.runs_by_id(client, ended), stalled) if ended else {}
        if any(run.status is QueueStatus.DONE and model_of(run) for run in seen.values()):
            self._model_loads.update(await gateway.model_loads(client))
        self._unfinished = {i: r for i, r in runs.items() if not r.is_settled}
        for run in seen.values():
            if not run.is_settled:
                self._unfinished[run.id] = run  # e.g. a stalled run still being stopped
                continue
            self._tally[run.status.value] += 1
            self._announce_once(run, runs)

    async def announce_missed(self, client: PrefectClient) -> None:
        """Announce the ends that happened while no manager was watching (it died, the stack
        was down), each once: the domain database remembers what was announced."""
        with session_scope(self._engine) as session:
            since = missed_since(session)
        if since is None:
            return
        ended = [r for r in await gateway.finished_since(client, since) if r.is_settled]
        with session_scope(self._engine) as session:
            done = already_announced(session, (r.id for r in ended))
        for run in sorted(ended, key=lambda r: r.ended_at or since):
            if run.id not in done:
                self._announce_once(run, {})

    def _announce_once(self, run: QueueRun, runs: Mapping[str, QueueRun]) -> None:
        try:
            self._announce(run, runs, ended=(run.id, run.ended_at or datetime.now(UTC)))
        except Exception:  # a message must never stop the queue
            self._logger.exception("No message for task %s: writing it failed", run.id)

    async def send(self, client: PrefectClient) -> None:
        """Hand the outbox to the server, then note the task ends it announced. Raises (the
        outbox kept) while the server does not take them."""
        if not self._outbox:
            return
        sending = list(self._outbox)
        await gateway.publish_events(client, [event for event, _ in sending])
        del self._outbox[: len(sending)]
        ended = [end for _, end in sending if end is not None]
        if ended:
            with session_scope(self._engine) as session:
                for run_id, ended_at in ended:
                    record_announced(session, run_id, ended_at)

    def _announce(
        self, run: QueueRun, runs: Mapping[str, QueueRun], *, ended: tuple[str, datetime]
    ) -> None:
        task = TaskSeen(run.task_type, run.name, url_for("flow-run", obj_id=run.id))
        resource = {
            "prefect.resource.id": f"prefect.flow-run.{run.id}",
            "prefect.resource.name": run.name,
        }
        if run.status is QueueStatus.DONE:
            with session_scope(self._engine) as session:
                result = result_of_flow_run(session, run.id)
            load = self._model_loads.pop(run.id, None)
            text = completion_text(task, duration=run.run_time, result=result, model_load=load)
            self._emit("biasbench.task.completed", resource, text, ended=ended)
        elif run.status is QueueStatus.FAILED:
            critical = critical_of_state(run.state_type, run.state_name)
            text = failure_text(
                task,
                error=run.state_message,
                critical=critical,
                dependents=len(held_dependents(run.id, runs)),
            )
            self._emit(
                "biasbench.task.failed",
                resource,
                text,
                critical=critical.name if critical else None,
                ended=ended,
            )

    def _emit(
        self,
        event: str,
        resource: dict[str, str],
        text: str,
        *,
        ended: tuple[str, datetime] | None = None,
        **facts: Any,
    ) -> None:
        level = logging.WARNING if event == "biasbench.task.failed" else logging.INFO
        self._logger.log(level, "Message: %s", text.replace("\n", " | "))
        payload = {"text": text, "subject": subject(text), **facts}
        message = Event(event=event, resource=Resource(resource), payload=payload)
        self._outbox.append((message, ended))
