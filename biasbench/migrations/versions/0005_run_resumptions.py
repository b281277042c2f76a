"""run resumptions

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 13:40:00

Before, a task naming `resume_run_id` re-pointed the run's `prefect_flow_run_id` to itself, so
the task that created the run lost its result and a retry of it started a new run. The creator
now stays; each later task that resumed the run gets a row here.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "run_resumptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_type", sa.String(length=16), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("flow_run_id", sa.String(length=36), nullable=False),
        sa.CheckConstraint(
            "run_type IN ('attrgen', 'benchmark')", name=op.f("ck_run_resumptions_run_type")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_resumptions")),
        sa.UniqueConstraint(
            "run_type",
            "run_id",
            "flow_run_id",
            name=op.f("uq_run_resumptions_run_type_run_id_flow_run_id"),
        ),
    )
    with op.batch_alter_table("run_resumptions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_run_resumptions_flow_run_id"), ["flow_run_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("run_resumptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_run_resumptions_flow_run_id"))
    op.drop_table("run_resumptions")
