"""The /queue API's outbox (queue_api/outbox.py), read from its domain database: adds it has
answered but not yet created in Prefect."""

from __future__ import annotations

import time

from sqlalchemy import create_engine, select

from biasbench.db.models import QueueOutbox


def in_outbox(db_url: str) -> set[int]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            return set(connection.scalars(select(QueueOutbox.task_id)))
    finally:
        engine.dispose()


def wait_drained(db_url: str, timeout: float = 120) -> None:
    """Until every answered add exists in Prefect."""
    deadline = time.monotonic() + timeout
    while waiting := in_outbox(db_url):
        assert time.monotonic() < deadline, f"still in the outbox after {timeout} s: {waiting}"
        time.sleep(0.2)
