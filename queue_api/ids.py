"""The contract's integer task ids: a mapping to Prefect flow-run ids, kept in the domain
database so that ids survive restarts. A run first seen here (created with the CLI, the UI or a
schedule) gets the next id. Nothing else about a task is stored (design.md §3.1).

`POST /queue/add` has one outcome, whatever fails in between: it reserves the id (its row holds
a unique marker until the run exists) together with the add (queue_api/outbox.py), which creates
the run tagged with the marker's key and then binds the id. A run seen before its binding is
written (a listing read it first, or the binding failed) is bound by that key (`adopt`,
`flow_run_of`), so the client's answer stays true. The key, not the id, because ids are only
unique within one domain database, and a Prefect server may have seen runs of another."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping

from prefect.client.orchestration import PrefectClient
from sqlalchemy import Engine, delete, select, update

from biasbench.db.engine import session_scope
from biasbench.db.models import QueueOutbox, QueueTaskId
from biasbench.db.upsert import insert_ignoring_duplicates
from biasbench.errors import NotFound
from biasbench.queue import gateway

TASK_ID_TAG = "task-id:"  # + the id: on every run the API creates, for people to read
ADD_KEY_TAG = "add:"  # + the add's key: which reserved id the run is for
_RESERVED = "reserved:"  # + the add's key (random hex): an id whose run is being created


def task_id_tag(task_id: int) -> str:
    return f"{TASK_ID_TAG}{task_id}"


def reserved_marker() -> str:
    """What an id's row holds until its run exists (unique, like a flow-run id)."""
    return _RESERVED + uuid.uuid4().hex[:27]


def add_key_tag(marker: str) -> str:
    """The tag that names the reserved id `marker` on its run."""
    return ADD_KEY_TAG + marker.removeprefix(_RESERVED)


class TaskIds:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._by_run: dict[str, int] = {}  # ids never change: cache them

    def remember(self, task_id: int, flow_run_id: str) -> None:
        """A binding written elsewhere (the outbox)."""
        self._by_run[flow_run_id] = task_id

    def bind_reserved(self, marker: str, flow_run_id: str) -> bool:
        """The id reserved under `marker` now names its run (a no-op if that happened already).
        False if its add was withdrawn (removed while being created): the run is being deleted,
        it is not the task."""
        with session_scope(self.engine) as session:
            withdrawn = session.scalar(
                select(QueueOutbox.withdrawn)
                .join(QueueTaskId, QueueTaskId.id == QueueOutbox.task_id)
                .where(QueueTaskId.flow_run_id == marker)
            )
            if withdrawn:
                return False
            session.execute(
                update(QueueTaskId)
                .where(QueueTaskId.flow_run_id == marker)
                .values(flow_run_id=flow_run_id)
            )
            task_id = session.scalar(
                select(QueueTaskId.id).where(QueueTaskId.flow_run_id == flow_run_id)
            )
            # Its add is done: a row left in the outbox would make the run again once a user
            # deleted this one (the key is free then).
            session.execute(delete(QueueOutbox).where(QueueOutbox.task_id == task_id))
        if task_id is not None:
            self._by_run[flow_run_id] = task_id
        return True

    def adopt(self, tags_by_run: Mapping[str, Iterable[str]]) -> None:
        """Bind the reserved ids that runs name in their tags but the table does not know yet:
        before ids are handed out to runs never seen (`ids_for`), which would give it a second."""
        for run_id, tags in tags_by_run.items():
            if run_id in self._by_run:
                continue
            for tag in tags:
                if tag.startswith(ADD_KEY_TAG):
                    self.bind_reserved(_RESERVED + tag.removeprefix(ADD_KEY_TAG), run_id)

    def ids_for(self, flow_run_ids: Iterable[str]) -> dict[str, int]:
        """flow-run id -> task id, allocating ids for runs not seen before (in the given order)."""
        wanted = list(dict.fromkeys(flow_run_ids))
        missing = [r for r in wanted if r not in self._by_run]
        if missing:
            with session_scope(self.engine) as session:
                table = QueueTaskId.__table__
                insert_ignoring_duplicates(session, table, [{"flow_run_id": r} for r in missing])  # type: ignore[arg-type]
                rows = session.execute(
                    select(QueueTaskId.flow_run_id, QueueTaskId.id).where(
                        QueueTaskId.flow_run_id.in_(missing)
                    )
                )
                self._by_run.update({run: task_id for run, task_id in rows})
        return {r: self._by_run[r] for r in wanted}

    def id_for(self, flow_run_id: str) -> int:
        return self.ids_for([flow_run_id])[flow_run_id]

    async def flow_run_of(self, client: PrefectClient, task_id: int) -> str:
        """The task's flow run; for an id whose binding is not written, found by its tag."""
        flow_run_id = self.flow_run_for(task_id)
        if flow_run_id is not None and flow_run_id.startswith(_RESERVED):
            marker = flow_run_id
            tagged = await gateway.run_ids_tagged(client, add_key_tag(marker))
            flow_run_id = tagged[0] if tagged else None
            if flow_run_id is not None and not self.bind_reserved(marker, flow_run_id):
                flow_run_id = None
        if flow_run_id is None:
            raise NotFound(None, f"task {task_id} does not exist")
        return flow_run_id

    def flow_runs_for(self, task_ids: Iterable[int]) -> dict[int, str]:
        """task id -> flow-run id of those that exist, in one query."""
        wanted = list(task_ids)
        if not wanted:
            return {}
        with session_scope(self.engine) as session:
            rows = session.execute(
                select(QueueTaskId.id, QueueTaskId.flow_run_id).where(
                    QueueTaskId.id.in_(wanted), QueueTaskId.flow_run_id.not_like(_RESERVED + "%")
                )
            )
            return {task_id: flow_run_id for task_id, flow_run_id in rows}

    def flow_run_for(self, task_id: int) -> str | None:
        with session_scope(self.engine) as session:
            return session.scalar(select(QueueTaskId.flow_run_id).where(QueueTaskId.id == task_id))
