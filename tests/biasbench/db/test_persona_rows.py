"""A pool's personas are stored in the order drawn and are exactly its members, on both
databases (SQLite takes the fast path without RETURNING, PostgreSQL keeps RETURNING)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from biasbench.datasets import ensure_reference_data, store_pool
from biasbench.db.engine import ready_engine, session_scope
from biasbench.db.models import DatasetMember, Persona
from biasbench.personas.sampling import PERSONA_ATTRIBUTES
from biasbench.population.de_sampler import sample_de
from biasbench.population.profiles import load_profile


def _pools_read_back_in_order(url: str) -> None:
    engine = ready_engine(url)
    profile = load_profile("de")
    first, second = sample_de(700, seed=1), sample_de(500, seed=2)
    try:
        ids = []
        for drafts in (first, second):
            with session_scope(engine) as session:
                ensure_reference_data(session)
                ids.append(
                    store_pool(
                        session, drafts, seed=1, config={}, flow_run_id=None, population=profile
                    ).id
                )
        for dataset_id, drafts in zip(ids, (first, second), strict=True):
            with session_scope(engine) as session:
                rows = session.execute(
                    select(Persona)
                    .join(DatasetMember, DatasetMember.persona_id == Persona.id)
                    .where(DatasetMember.dataset_id == dataset_id)
                    .order_by(Persona.id)
                ).scalars()
                stored = [tuple(getattr(p, c) for c in PERSONA_ATTRIBUTES) for p in rows]
            assert stored == [tuple(d) for d in drafts]
    finally:
        engine.dispose()


def test_pools_are_stored_in_order_and_only_their_personas_are_members_on_sqlite(
    db_url: str,
) -> None:
    _pools_read_back_in_order(db_url)


@pytest.mark.postgres
def test_pools_are_stored_in_order_and_only_their_personas_are_members_on_postgresql(
    postgres_url: str,
) -> None:
    _pools_read_back_in_order(postgres_url)
