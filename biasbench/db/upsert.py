"""Insert-or-ignore and insert-or-update across SQLite and PostgreSQL: the primitives that make
resuming idempotent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def _insert(session: Session, table: Table) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"unsupported database dialect {dialect!r}")  # pragma: no cover


def insert_ignoring_duplicates(
    session: Session, table: Table, rows: Sequence[dict[str, Any]]
) -> None:
    """Insert rows; rows that collide with a unique key already stored are skipped silently."""
    if rows:
        session.execute(_insert(session, table).on_conflict_do_nothing(), list(rows))


def upsert(
    session: Session,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    key: Sequence[str],
    key_where: str | None = None,
) -> None:
    """Insert rows; a row whose `key` is stored already overwrites that row's other columns.

    `key` names the columns of a unique index, `key_where` the WHERE of a partial one (SQL text,
    as the index declares it: both databases match the conflict target against the index)."""
    if not rows:
        return
    stmt = _insert(session, table)
    columns = [c for c in rows[0] if c not in key]
    stmt = stmt.on_conflict_do_update(
        index_elements=list(key),
        index_where=text(key_where) if key_where else None,
        set_={c: stmt.excluded[c] for c in columns},
    )
    session.execute(stmt, list(rows))
