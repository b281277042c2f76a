"""The machine's PostgreSQL and Redis for the tests that need them: a fresh database each, dropped
(or flushed) afterwards. Where a service does not answer, such a test skips on a laptop and fails
in CI (CI=true): CI has both, and a test that silently skipped there would prove nothing."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import pytest
from sqlalchemy import create_engine, text

POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
# Redis databases of the tests (0 is left to whoever else uses the machine's Redis).
REDIS_TEST_DBS = range(10, 16)


def unavailable(what: str, exc: BaseException) -> NoReturn:
    reason = f"{what}: {exc.__class__.__name__}: {exc}"
    if os.environ.get("CI", "").lower() in {"true", "1"}:
        pytest.fail(f"CI must have it: {reason}", pytrace=False)
    pytest.skip(reason)


@contextmanager
def postgres_database(driver: str = "psycopg") -> Iterator[str]:
    """The URL of a new, empty database (with the given SQLAlchemy driver), dropped afterwards."""
    name = f"biasbench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        unavailable(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}", exc)
    server = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("+psycopg", f"+{driver}")
    try:
        yield f"{server}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def redis_database() -> Iterator[str]:
    """The URL of an empty Redis database of the tests, flushed again afterwards. A database
    that holds keys is taken to be another test's, running now."""
    import redis

    for db in REDIS_TEST_DBS:
        client = redis.Redis.from_url(f"{REDIS_URL}/{db}")
        try:
            # Claim it: a key only this test sets, unless the database is in use.
            claimed = client.dbsize() == 0 and client.set("biasbench:test", "1", nx=True)
        except redis.RedisError as exc:
            client.close()
            unavailable(f"Redis not reachable at {REDIS_URL}", exc)
        if claimed:
            break
        client.close()
    else:
        raise RuntimeError(f"every Redis test database ({REDIS_TEST_DBS}) is in use")
    try:
        yield f"{REDIS_URL}/{db}"
    finally:
        client.flushdb()
        client.close()
