"""integer ids of the /queue contract

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 19:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "queue_task_ids",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("flow_run_id", sa.String(length=36), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_task_ids")),
        sa.UniqueConstraint("flow_run_id", name=op.f("uq_queue_task_ids_flow_run_id")),
    )


def downgrade() -> None:
    op.drop_table("queue_task_ids")
