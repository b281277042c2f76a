"""The schema comes from Alembic migrations on both supported databases."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from biasbench.db.engine import alembic_config, migrate

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
