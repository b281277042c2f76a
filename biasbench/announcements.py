"""Which task ends the queue manager has announced: the domain database remembers them, so a
manager that starts after another one died announces what was missed, and nothing twice."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from biasbench.db.models import QueueAnnouncement
from biasbench.db.upsert import insert_ignoring_duplicates

# Ends are looked for this far back from the newest one announced: clocks of the Prefect
# server and of the hosts differ a little, and a manager may die between two ends.
LOOK_BACK = timedelta(minutes=30)


def record_announced(session: Session, flow_run_id: str, ended_at: datetime) -> None:
    table = QueueAnnouncement.__table__
    insert_ignoring_duplicates(session, table, [{"flow_run_id": flow_run_id, "ended_at": ended_at}])  # type: ignore[arg-type]


def already_announced(session: Session, flow_run_ids: Iterable[str]) -> set[str]:
    ids = list(flow_run_ids)
    if not ids:
        return set()
    found = session.scalars(
        select(QueueAnnouncement.flow_run_id).where(QueueAnnouncement.flow_run_id.in_(ids))
    )
    return set(found)


def missed_since(session: Session) -> datetime | None:
    """From when on ends may have been missed; None when nothing was ever announced (a new
    installation: its history is not news)."""
    newest = session.scalar(select(func.max(QueueAnnouncement.ended_at)))
    if newest is None:
        return None
    if newest.tzinfo is None:  # SQLite keeps no time zone; every time stored here is UTC
        newest = newest.replace(tzinfo=UTC)
    return newest - LOOK_BACK
