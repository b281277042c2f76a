"""task ends the queue manager has announced

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 07:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "queue_announcements",
        sa.Column("flow_run_id", sa.String(length=36), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("flow_run_id", name=op.f("pk_queue_announcements")),
    )
    op.create_index(
        op.f("ix_queue_announcements_ended_at"), "queue_announcements", ["ended_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_queue_announcements_ended_at"), table_name="queue_announcements")
    op.drop_table("queue_announcements")
