"""Engines, sessions and schema migration for any supported database URL."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

# pg_advisory_lock key of the migration (any constant works: advisory locks are per database).
MIGRATION_LOCK_KEY = 0x62696173  # "bias"


def make_engine(db_url: str) -> Engine:
    """An engine tuned for the backend: SQLite gets WAL, FKs and a busy timeout so that the
    flow process, the queue API and an analyst's notebook can share one file."""
    url = make_url(db_url)
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if url.database and url.database != ":memory:":
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    # check_same_thread=False: results are saved from a worker thread (the pool hands one
    # connection to one thread at a time).
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def alembic_config(db_url: str) -> Config:
    script_location = files("biasbench") / "migrations"
    config = Config()
    config.set_main_option("script_location", str(script_location))
    # Alembic's ini interpolation treats % specially (e.g. in URL-encoded passwords).
    config.set_main_option("sqlalchemy.url", db_url.replace("%", "%%"))
    return config


def migrate(db_url: str) -> None:
    """Bring the schema to the newest revision (idempotent; safe on every flow start).

    Every process of the queue migrates when it starts, so on a fresh database several do at
    once; unguarded, all but one failed ("table already exists", a duplicate alembic_version
    type). One upgrades under the lock, the others then find the schema at head."""
    with _migration_lock(make_url(db_url)):
        command.upgrade(alembic_config(db_url), "head")


@contextmanager
def _migration_lock(url: URL) -> Iterator[None]:
    """Held by one process at a time per database, and released when that process dies."""
    backend = url.get_backend_name()
    if backend == "postgresql":
        # Session-level, on a connection of its own that stays outside any transaction.
        engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                try:
                    yield
                finally:
                    conn.execute(
                        text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY}
                    )
        finally:
            engine.dispose()
    elif backend == "sqlite" and url.database and url.database != ":memory:":
        database = Path(url.database).expanduser()
        database.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{database}.migrate.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released on close, also when the process dies
            yield
    else:  # an in-memory SQLite database belongs to one process
        yield


@cache
def _engine_for(db_url: str) -> Engine:
    return make_engine(db_url)


@cache
def ready_engine(db_url: str) -> Engine:
    """A migrated engine, once per process and URL."""
    migrate(db_url)
    return _engine_for(db_url)


@cache
def _sessions(engine: Engine) -> sessionmaker[Session]:
    # One factory per engine: making one per transaction (its event set-up) was about 8 % of
    # the /queue API's loop time under a burst of adds (perf/README.md run F).
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error."""
    with _sessions(engine)() as session, session.begin():
        yield session
