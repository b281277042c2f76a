"""queue outbox: adds the /queue API has answered but not yet created in Prefect

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 06:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "queue_outbox",
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("task_type", sa.String(length=32), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("label", sa.Text(), nullable=True),
        sa.Column("held_as", sa.String(length=32), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("depends_on", sa.JSON(), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["queue_task_ids.id"],
            name=op.f("fk_queue_outbox_task_id_queue_task_ids"),
        ),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_queue_outbox")),
    )


def downgrade() -> None:
    op.drop_table("queue_outbox")
