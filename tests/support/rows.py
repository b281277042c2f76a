"""Read stored rows back the way a user would check them."""

from __future__ import annotations

from sqlalchemy import Engine, func, select

from biasbench.db.engine import session_scope
from biasbench.db.models import BenchmarkResult


def count(engine: Engine, model: type, **where: object) -> int:
    with session_scope(engine) as session:
        stmt = select(func.count()).select_from(model)
        for column, value in where.items():
            stmt = stmt.where(getattr(model, column) == value)
        return session.scalar(stmt) or 0


def result_keys(engine: Engine, run_id: int) -> list[tuple[int, int, str]]:
    with session_scope(engine) as session:
        rows = session.execute(
            select(
                BenchmarkResult.persona_id, BenchmarkResult.trait_id, BenchmarkResult.scale_order
            ).where(BenchmarkResult.run_id == run_id)
        )
        return [(p, t, o) for p, t, o in rows]
