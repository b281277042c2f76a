"""The schema comes from Alembic migrations on both supported databases."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError

from biasbench.db.engine import alembic_config, migrate, session_scope
from biasbench.db.models import (
    AttrgenRun,
    BenchmarkResult,
    BenchmarkRun,
    Country,
    Dataset,
    Failure,
    Model,
    Persona,
    PersonaAttribute,
    Trait,
)

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
    "queue_outbox",
    "queue_announcements",
    "run_resumptions",
    "task_rates",
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


def _failure(run_type: str, persona: int, trait: int | None, snippet: str) -> Failure:
    order = None if trait is None else "in"
    return Failure(
        run_type=run_type,
        run_id=1,
        persona_id=persona,
        trait_id=trait,
        scale_order=order,
        kind="llm_error",
        snippet=snippet,
        attempt=1,
    )


def _stored_before_0004(url: str) -> None:
    """Failure rows as passes appended them before 0004: repeated, and of answered items."""
    command.upgrade(alembic_config(url), "0003")
    engine = create_engine(url)
    with session_scope(engine) as session:
        session.add(Country(code="FRA", name="France", region="Europe", subregion="Western"))
        session.add_all(
            Persona(
                id=pid,
                age=40,
                gender="woman",
                education="x",
                occupation="x",
                marriage_status="x",
                migration_status="x",
                origin="FRA",
                religion="x",
                sexuality="x",
            )
            for pid in (1, 2)
        )
        session.add_all(
            [Trait(id=1, adjective="kind", category="x", valence=1), Model(id=1, name="m")]
        )
        # Core inserts name only the columns of that time (the models have grown since).
        session.execute(insert(Dataset).values(id=1, kind="pool", name="d"))
        session.execute(insert(AttrgenRun).values(id=1, dataset_id=1, model_id=1, llm="vllm"))
        session.execute(
            insert(BenchmarkRun).values(
                id=1,
                dataset_id=1,
                model_id=1,
                llm="vllm",
                include_rationale=False,
                batch_size=1,
                max_new_tokens=16,
                max_attempts=1,
                scale_mode="in",
                dual_fraction=0,
                run_seed=1,
            )
        )
        session.flush()
        session.add_all(
            [
                _failure("benchmark", 1, 1, "first pass"),
                _failure("benchmark", 1, 1, "second pass"),
                _failure("benchmark", 2, 1, "answered later"),
                _failure("attrgen", 1, None, "first pass"),
                _failure("attrgen", 1, None, "second pass"),
                _failure("attrgen", 2, None, "answered later"),
            ]
        )
        session.flush()
        session.add(
            BenchmarkResult(
                run_id=1, persona_id=2, trait_id=1, scale_order="in", rating=3, raw_answer="3"
            )
        )
        session.add_all(
            PersonaAttribute(attrgen_run_id=1, persona_id=2, key=key, value="v")
            for key in ("name", "appearance", "biography")
        )
    engine.dispose()


def _one_failure_per_item_after_0004(url: str) -> None:
    _stored_before_0004(url)
    migrate(url)
    engine = create_engine(url)
    try:
        with session_scope(engine) as session:
            kept = session.execute(
                select(Failure.run_type, Failure.persona_id, Failure.snippet).order_by(Failure.id)
            ).all()
        assert [tuple(row) for row in kept] == [
            ("benchmark", 1, "second pass"),
            ("attrgen", 1, "second pass"),
        ]
        for run_type, trait in (("benchmark", 1), ("attrgen", None)):
            with pytest.raises(IntegrityError), session_scope(engine) as session:
                session.add(_failure(run_type, 1, trait, "a third row for the same item"))
    finally:
        engine.dispose()


def test_0004_keeps_the_newest_failure_per_item_and_drops_answered_ones_on_sqlite(
    db_url: str,
) -> None:
    _one_failure_per_item_after_0004(db_url)


@pytest.mark.postgres
def test_0004_keeps_the_newest_failure_per_item_and_drops_answered_ones_on_postgresql(
    postgres_url: str,
) -> None:
    _one_failure_per_item_after_0004(postgres_url)


def _provenance_after_0006(url: str) -> None:
    """Datasets and runs made before 0006 get the pool they were drawn in; pools are world's."""
    command.upgrade(alembic_config(url), "0005")
    engine = create_engine(url)
    try:
        with session_scope(engine) as session:
            session.execute(insert(Model).values(id=1, name="m"))
            session.execute(insert(Dataset).values(id=1, kind="pool", name="pool"))
            session.execute(
                insert(Dataset).values(id=2, kind="balanced", name="b", source_dataset_id=1)
            )
            session.execute(
                insert(Dataset).values(id=3, kind="balanced", name="bb", source_dataset_id=2)
            )
            session.execute(insert(AttrgenRun).values(id=1, dataset_id=3, model_id=1, llm="x"))
        migrate(url)
        with session_scope(engine) as session:
            datasets = session.execute(
                select(Dataset.id, Dataset.pool_dataset_id, Dataset.population).order_by(Dataset.id)
            ).all()
            run_pool = session.scalar(select(AttrgenRun.pool_dataset_id))
        assert [tuple(row) for row in datasets] == [
            (1, 1, "world"),
            (2, 1, "world"),
            (3, 1, "world"),
        ]
        assert run_pool == 1
    finally:
        engine.dispose()


def test_0006_records_the_pool_of_every_older_dataset_and_run_on_sqlite(db_url: str) -> None:
    _provenance_after_0006(db_url)


@pytest.mark.postgres
def test_0006_records_the_pool_of_every_older_dataset_and_run_on_postgresql(
    postgres_url: str,
) -> None:
    _provenance_after_0006(postgres_url)


def _down_to_0005_and_up_again(url: str) -> None:
    migrate(url)
    command.downgrade(alembic_config(url), "0005")
    engine = create_engine(url)
    try:
        assert "population" not in {c["name"] for c in inspect(engine).get_columns("datasets")}
    finally:
        engine.dispose()
    migrate(url)
    _provenance_columns_are_there(url)


def _provenance_columns_are_there(url: str) -> None:
    engine = create_engine(url)
    try:
        columns = {c["name"] for c in inspect(engine).get_columns("datasets")}
        assert {
            "population",
            "population_version",
            "population_files",
            "pool_dataset_id",
        } <= columns
        foreign = inspect(engine).get_foreign_keys("benchmark_runs")
        assert any(fk["constrained_columns"] == ["pool_dataset_id"] for fk in foreign)
    finally:
        engine.dispose()


def test_0006_goes_down_and_up_again_on_sqlite(db_url: str) -> None:
    _down_to_0005_and_up_again(db_url)


@pytest.mark.postgres
def test_0006_goes_down_and_up_again_on_postgresql(postgres_url: str) -> None:
    _down_to_0005_and_up_again(postgres_url)


# Every process migrates at start (each flow process, the manager, the /queue API): on a fresh
# database they all start at once. Each child imports first, then waits for the word to go.
_MIGRATE_ON_GO = """
import sys, time
from pathlib import Path
from biasbench.db.engine import migrate
url, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
ready.touch()
while not go.exists():
    time.sleep(0.001)
migrate(url)
"""
PROCESSES = 4
REPO = Path(__file__).resolve().parents[3]


def _migrate_at_once(url: str, tmp_path: Path) -> list[tuple[int, str]]:
    """Return code and output of each of PROCESSES processes migrating `url` at the same time."""
    go = tmp_path / "go"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _MIGRATE_ON_GO, url, str(tmp_path / f"ready-{i}"), str(go)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(PROCESSES)
    ]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < PROCESSES:
        assert time.monotonic() < deadline, "the migrating processes did not start"
        assert all(c.poll() is None for c in children), [c.communicate() for c in children]
        time.sleep(0.01)
    go.touch()
    return [(c.wait(120), c.communicate()[0].decode()) for c in children]


def _versions(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
    finally:
        engine.dispose()


def _head(url: str) -> str:
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert head is not None
    return head


def test_processes_starting_together_on_a_fresh_sqlite_file_all_migrate_it(
    db_url: str, tmp_path: Path
) -> None:
    results = _migrate_at_once(db_url, tmp_path)
    assert [code for code, _ in results] == [0] * PROCESSES, results
    assert _versions(db_url) == [_head(db_url)]
    assert _tables(db_url) == TABLES


@pytest.mark.postgres
def test_processes_starting_together_on_a_fresh_postgresql_database_all_migrate_it(
    postgres_url: str, tmp_path: Path
) -> None:
    results = _migrate_at_once(postgres_url, tmp_path)
    assert [code for code, _ in results] == [0] * PROCESSES, results
    assert _versions(postgres_url) == [_head(postgres_url)]
    assert _tables(postgres_url) == TABLES
