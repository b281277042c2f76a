"""population provenance on datasets and runs

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 14:00:00

A published figure must be traceable to the tables its personas came from. A dataset records the
population profile (name, version, sha256 of every file) and the pool its personas were drawn in;
attrgen and benchmark runs record that pool too. Datasets made before this revision were all drawn
from the world profile, whose file hashes were not recorded then: they get the name only.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POOLS = "UPDATE datasets SET pool_dataset_id = id, population = 'world' WHERE kind = 'pool'"
# One level of source per pass; a chain of balanced draws is never deeper than its length.
DRAWN_FROM = """
UPDATE datasets SET
    pool_dataset_id = (SELECT s.pool_dataset_id FROM datasets s
                       WHERE s.id = datasets.source_dataset_id),
    population = (SELECT s.population FROM datasets s WHERE s.id = datasets.source_dataset_id)
WHERE pool_dataset_id IS NULL AND source_dataset_id IS NOT NULL AND EXISTS (
    SELECT 1 FROM datasets s
    WHERE s.id = datasets.source_dataset_id AND s.pool_dataset_id IS NOT NULL
)"""
RUN_POOL = """
UPDATE {table} SET pool_dataset_id = (
    SELECT d.pool_dataset_id FROM datasets d WHERE d.id = {table}.dataset_id
)"""


def _add_pool_column(table: str) -> None:
    name = f"fk_{table}_pool_dataset_id_datasets"
    if op.get_bind().dialect.name == "sqlite":
        # ADD COLUMN with an inline reference: SQLite cannot add a constraint to a table, and
        # rebuilding the table (batch mode) would drop `datasets`, which other tables reference.
        op.execute(
            f"ALTER TABLE {table} ADD COLUMN pool_dataset_id INTEGER "
            f"CONSTRAINT {name} REFERENCES datasets (id)"
        )
        return
    op.add_column(table, sa.Column("pool_dataset_id", sa.Integer(), nullable=True))
    op.create_foreign_key(name, table, "datasets", ["pool_dataset_id"], ["id"])


def upgrade() -> None:
    op.add_column("datasets", sa.Column("population", sa.String(32), nullable=True))
    op.add_column("datasets", sa.Column("population_version", sa.String(32), nullable=True))
    op.add_column("datasets", sa.Column("population_files", sa.JSON(), nullable=True))
    for table in ("datasets", "attrgen_runs", "benchmark_runs"):
        _add_pool_column(table)
    op.execute(POOLS)
    connection = op.get_bind()
    while connection.execute(sa.text(DRAWN_FROM)).rowcount:
        pass
    for table in ("attrgen_runs", "benchmark_runs"):
        op.execute(RUN_POOL.format(table=table))


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table in ("attrgen_runs", "benchmark_runs", "datasets"):
        # SQLite rebuilds the table without the column, and its reference goes with it (the
        # rebuild needs foreign-key enforcement off while other rows point at `datasets`).
        with op.batch_alter_table(table) as batch:
            if not sqlite:
                batch.drop_constraint(f"fk_{table}_pool_dataset_id_datasets", type_="foreignkey")
            batch.drop_column("pool_dataset_id")
    with op.batch_alter_table("datasets") as batch:
        for column in ("population_files", "population_version", "population"):
            batch.drop_column(column)
