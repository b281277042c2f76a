"""Insert-or-ignore across SQLite and PostgreSQL: the primitive that makes resuming idempotent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_ignoring_duplicates(
    session: Session, table: Table, rows: Sequence[dict[str, Any]]
) -> None:
    """Insert rows; rows that collide with a unique key already stored are skipped silently."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(table).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).on_conflict_do_nothing()
    else:  # pragma: no cover - only the two supported backends are tested
        raise NotImplementedError(f"unsupported database dialect {dialect!r}")
    session.execute(stmt, list(rows))
