"""The schema comes from Alembic migrations on both supported databases."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, select, text
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
    "queue_announcements",
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
        session.add(Dataset(id=1, kind="pool", name="d"))
        session.flush()
        session.add(AttrgenRun(id=1, dataset_id=1, model_id=1, llm="vllm"))
        session.add(
            BenchmarkRun(
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
