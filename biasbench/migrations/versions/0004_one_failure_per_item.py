"""one failure row per item

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 09:50:00

Before, each pass appended a failure row per failed item, and rows stayed when a later pass
answered the item. Keep the newest row per item, drop those of answered items, then make the
item unique (two partial indexes: NULLs of attrgen rows never collide in a plain unique key).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ATTRGEN = "run_type = 'attrgen'"
BENCHMARK = "run_type = 'benchmark'"

# Plain SQL that SQLite and PostgreSQL both run (NULLs group together in GROUP BY).
NEWEST_PER_ITEM = """
DELETE FROM failures WHERE id NOT IN (
    SELECT MAX(id) FROM failures GROUP BY run_type, run_id, persona_id, trait_id, scale_order
)"""
ANSWERED_BENCHMARK_ITEMS = """
DELETE FROM failures WHERE run_type = 'benchmark' AND EXISTS (
    SELECT 1 FROM benchmark_results r
    WHERE r.run_id = failures.run_id AND r.persona_id = failures.persona_id
      AND r.trait_id = failures.trait_id AND r.scale_order = failures.scale_order
)"""
ANSWERED_ATTRGEN_ITEMS = """
DELETE FROM failures WHERE run_type = 'attrgen' AND (
    SELECT COUNT(*) FROM persona_attributes a
    WHERE a.attrgen_run_id = failures.run_id AND a.persona_id = failures.persona_id
) >= 3"""  # name, appearance, biography: biasbench.prompts.ATTRIBUTE_KEYS when this was written


def upgrade() -> None:
    for statement in (NEWEST_PER_ITEM, ANSWERED_BENCHMARK_ITEMS, ANSWERED_ATTRGEN_ITEMS):
        op.execute(statement)
    op.create_index(
        "uq_failures_attrgen_item",
        "failures",
        ["run_type", "run_id", "persona_id"],
        unique=True,
        sqlite_where=sa.text(ATTRGEN),
        postgresql_where=sa.text(ATTRGEN),
    )
    op.create_index(
        "uq_failures_benchmark_item",
        "failures",
        ["run_type", "run_id", "persona_id", "trait_id", "scale_order"],
        unique=True,
        sqlite_where=sa.text(BENCHMARK),
        postgresql_where=sa.text(BENCHMARK),
    )


def downgrade() -> None:
    op.drop_index("uq_failures_benchmark_item", table_name="failures")
    op.drop_index("uq_failures_attrgen_item", table_name="failures")
