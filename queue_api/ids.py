"""The contract's integer task ids: a mapping to Prefect flow-run ids, kept in the domain
database so that ids survive restarts. A run first seen here (created with the CLI, the UI or a
schedule) gets the next id. Nothing else about a task is stored (design.md §3.1)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Engine, select

from biasbench.db.engine import session_scope
from biasbench.db.models import QueueTaskId
from biasbench.db.upsert import insert_ignoring_duplicates
from biasbench.errors import NotFound


class TaskIds:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._by_run: dict[str, int] = {}  # ids never change: cache them

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

    def flow_run_of(self, task_id: int) -> str:
        if (flow_run_id := self.flow_run_for(task_id)) is None:
            raise NotFound(None, f"task {task_id} does not exist")
        return flow_run_id

    def flow_runs_for(self, task_ids: Iterable[int]) -> dict[int, str]:
        """task id -> flow-run id of those that exist, in one query."""
        wanted = list(task_ids)
        if not wanted:
            return {}
        with session_scope(self.engine) as session:
            rows = session.execute(
                select(QueueTaskId.id, QueueTaskId.flow_run_id).where(QueueTaskId.id.in_(wanted))
            )
            return {task_id: flow_run_id for task_id, flow_run_id in rows}

    def flow_run_for(self, task_id: int) -> str | None:
        with session_scope(self.engine) as session:
            return session.scalar(select(QueueTaskId.flow_run_id).where(QueueTaskId.id == task_id))
