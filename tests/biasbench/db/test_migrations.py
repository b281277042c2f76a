"""The schema comes from Alembic migrations on both supported databases."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect

from biasbench.db.engine import migrate

TABLES = {
    "countries",
    "personas",
    "datasets",
    "dataset_members",
    "traits",
    "models",
    "attrgen_runs",
    "persona_attributes",
    "benchmark_runs",
    "benchmark_results",
    "failures",
    "queue_task_ids",
    "alembic_version",
}


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrations_create_every_table_on_a_fresh_sqlite_file(db_url: str) -> None:
    migrate(db_url)
    migrate(db_url)  # idempotent: a second start of a flow changes nothing
    assert _tables(db_url) == TABLES


def test_migrations_create_every_table_on_a_fresh_postgresql_database(postgres_url: str) -> None:
    migrate(postgres_url)
    assert _tables(postgres_url) == TABLES


def test_results_are_unique_per_run_persona_trait_and_order(db_url: str) -> None:
    migrate(db_url)
    engine = create_engine(db_url)
    uniques = inspect(engine).get_unique_constraints("benchmark_results")
    engine.dispose()
    assert [sorted(u["column_names"]) for u in uniques] == [
        ["persona_id", "run_id", "scale_order", "trait_id"]
    ]
