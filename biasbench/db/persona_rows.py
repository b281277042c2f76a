"""Writing a pool's personas and its membership rows fast, in the caller's transaction.

Why not the ORM's bulk insert: it builds a dict per persona and asks for every new id back
(RETURNING), which took ~25 s for a million personas on SQLite, the bulk of a big pool_gen. On
SQLite the whole database has one writer: once the transaction has written (the dataset row is
flushed first), no other connection can insert, and a row without an explicit id gets the largest
id + 1. So the new personas get the ids right after the largest one before the insert, in order;
the insert goes through the driver's executemany with plain tuples, the membership rows through
one INSERT ... SELECT, and a count checks the id range. PostgreSQL's sequences may interleave
with another writer's, so there the ids come back from RETURNING as before.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, insert, select, text
from sqlalchemy.orm import Session

from biasbench.db.models import DatasetMember, Persona
from biasbench.personas.sampling import PERSONA_ATTRIBUTES


def insert_members(session: Session, dataset_id: int, rows: Sequence[Sequence[object]]) -> None:
    """Insert one persona per row (tuples in PERSONA_ATTRIBUTES order) and make them the dataset's
    members, in the order given."""
    if not rows:
        return
    if session.get_bind().dialect.name == "sqlite":
        _insert_sqlite(session, dataset_id, rows)
        return
    persona_ids = session.scalars(
        insert(Persona).returning(Persona.id, sort_by_parameter_order=True),
        [dict(zip(PERSONA_ATTRIBUTES, row, strict=True)) for row in rows],
    ).all()
    session.execute(
        insert(DatasetMember),
        [{"dataset_id": dataset_id, "persona_id": pid} for pid in persona_ids],
    )


def _insert_sqlite(session: Session, dataset_id: int, rows: Sequence[Sequence[object]]) -> None:
    connection = session.connection()
    before = connection.scalar(select(func.coalesce(func.max(Persona.id), 0)))
    assert before is not None
    columns = ", ".join(PERSONA_ATTRIBUTES)
    marks = ", ".join("?" for _ in PERSONA_ATTRIBUTES)
    connection.exec_driver_sql(
        f"INSERT INTO personas ({columns}) VALUES ({marks})",
        list(rows),
    )
    first, last = before + 1, before + len(rows)
    stored = connection.scalar(
        select(func.count()).select_from(Persona).where(Persona.id.between(first, last))
    )
    if stored != len(rows):  # pragma: no cover - would mean another writer got in
        raise RuntimeError(f"expected personas {first}..{last}, found {stored} in that range")
    connection.execute(
        text(
            "INSERT INTO dataset_members (dataset_id, persona_id) "
            "SELECT :dataset_id, id FROM personas WHERE id BETWEEN :first AND :last ORDER BY id"
        ),
        {"dataset_id": dataset_id, "first": first, "last": last},
    )
