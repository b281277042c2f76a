"""pool_gen and balanced_gen as users run them: real flow runs, rows in a real database."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort
from sqlalchemy import Engine, select

from biasbench import runs
from biasbench.datasets import balancing_rows
from biasbench.db.engine import session_scope
from biasbench.db.models import Dataset, Persona
from biasbench.errors import InvalidConfig, NotFound
from biasbench.population.profiles import load_profile
from flows.balanced_gen import balanced_gen
from flows.pool_gen import pool_gen
from tests.support.rows import count

ATTRIBUTES = (
    "age",
    "gender",
    "education",
    "occupation",
    "marriage_status",
    "migration_status",
    "origin",
    "religion",
    "sexuality",
)


def personas_of(engine: Engine, dataset_id: int) -> list[tuple[object, ...]]:
    with session_scope(engine) as session:
        return [tuple(row[a] for a in ATTRIBUTES) for row in balancing_rows(session, dataset_id)]


def dataset_artifact(dataset_id: int) -> str:
    """The markdown a user sees for the dataset in the Prefect UI."""
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"dataset-{dataset_id}"])),
            sort=ArtifactSort.CREATED_DESC,  # ids restart in each test's database; keys repeat
        )
    assert artifacts, f"no artifact for dataset {dataset_id}"
    return str(artifacts[0].data)


def test_the_same_seed_gives_an_identical_pool(engine: Engine) -> None:
    first = asyncio.run(pool_gen(n=500, seed=11))
    again = asyncio.run(pool_gen(n=500, seed=11))
    other = asyncio.run(pool_gen(n=500, seed=12))

    assert first.run_type == "dataset" and first.dataset_id != again.dataset_id
    assert personas_of(engine, first.dataset_id) == personas_of(engine, again.dataset_id)
    assert personas_of(engine, first.dataset_id) != personas_of(engine, other.dataset_id)
    assert count(engine, Persona) == 1500
    assert "500 personas" in dataset_artifact(first.dataset_id)


def test_age_limits_hold_for_every_persona(engine: Engine) -> None:
    pool = asyncio.run(pool_gen(n=300, age_from=30, age_to=40, seed=3))
    ages = [p[0] for p in personas_of(engine, pool.dataset_id)]
    assert len(ages) == 300 and min(ages) >= 30 and max(ages) <= 40


def test_bad_pool_input_names_the_field_and_creates_nothing(engine: Engine) -> None:
    with pytest.raises(Exception, match=r"\bn\b") as error:
        asyncio.run(pool_gen(n=0))
    assert "greater than or equal to 1" in str(error.value)
    with pytest.raises(Exception, match="temperature"):
        asyncio.run(pool_gen(n=10, temperature=11))
    assert count(engine, Dataset) == 0


def test_balanced_marginals_are_even_within_one_where_the_pool_allows(engine: Engine) -> None:
    pool = asyncio.run(pool_gen(n=3000, seed=21, temperature=0.5))
    result = asyncio.run(
        balanced_gen(
            dataset_id=pool.dataset_id, n=120, seed=42, axes=["gender", "age_bin", "religion"]
        )
    )

    with session_scope(engine) as session:
        dataset = session.get_one(Dataset, result.dataset_id)
        assert (dataset.kind, dataset.size, dataset.source_dataset_id) == (
            "balanced",
            120,
            pool.dataset_id,
        )
        rows = balancing_rows(session, result.dataset_id)
        pool_rows = balancing_rows(session, pool.dataset_id)
    assert len(rows) == 120
    for axis in ("gender", "age_bin", "religion"):
        counts = Counter(str(r[axis]) for r in rows)
        available = Counter(str(r[axis]) for r in pool_rows)
        plentiful = [v for v in available if available[v] >= 120 / len(available) + 1]
        even = 120 / len(available)
        # Scarce values are taken whole; the plentiful ones share the rest evenly.
        for value in available:
            if available[value] < even:
                assert counts[value] == available[value], (axis, value)
        shares = [counts[v] for v in plentiful]
        assert max(shares) - min(shares) <= 1, (axis, counts)
        assert dataset.report["marginals"][axis] == dict(counts)
    assert "religion" in dataset_artifact(result.dataset_id)


def test_balanced_draw_is_deterministic_by_seed(engine: Engine) -> None:
    pool = asyncio.run(pool_gen(n=1000, seed=2))
    a = asyncio.run(balanced_gen(dataset_id=pool.dataset_id, n=50, seed=9))
    b = asyncio.run(balanced_gen(dataset_id=pool.dataset_id, n=50, seed=9))
    assert personas_of(engine, a.dataset_id) == personas_of(engine, b.dataset_id)


def test_balanced_gen_refuses_an_unknown_pool(engine: Engine) -> None:
    with pytest.raises(NotFound, match="dataset_id: dataset 999 does not exist"):
        asyncio.run(balanced_gen(dataset_id=999, n=5))
    assert count(engine, Dataset) == 0


def test_a_pool_persona_row_has_every_attribute(engine: Engine) -> None:
    pool = asyncio.run(pool_gen(n=20, seed=1))
    with session_scope(engine) as session:
        personas = session.scalars(select(Persona)).all()
    assert len(personas) == 20 and pool.dataset_id
    assert all(getattr(p, a) not in (None, "") for p in personas for a in ATTRIBUTES)


def test_a_pool_balanced_draw_and_runs_record_where_their_personas_come_from(
    engine: Engine,
) -> None:
    pool = asyncio.run(pool_gen(n=2000, seed=5))
    balanced = asyncio.run(balanced_gen(dataset_id=pool.dataset_id, n=60, seed=1))
    profile = load_profile("de")

    with session_scope(engine) as session:
        stored_pool = session.get_one(Dataset, pool.dataset_id)
        drawn = session.get_one(Dataset, balanced.dataset_id)
        attrgen = runs.open_attrgen_run(
            session,
            dataset_id=balanced.dataset_id,
            model_name="m",
            llm="fake",
            config={},
            flow_run_id=None,
            resume_run_id=None,
        )
        run_pool = attrgen.pool_dataset_id
    for dataset in (stored_pool, drawn):
        assert (dataset.population, dataset.population_version) == ("de", profile.version)
        assert dataset.population_files == dict(profile.files)
        assert dataset.pool_dataset_id == pool.dataset_id
    assert run_pool == pool.dataset_id
    # Every shipped table and source file is named with its hash.
    assert "profiles/de/source/countries_religion_foreigner.csv" in drawn.population_files

    pool_page = dataset_artifact(pool.dataset_id)
    assert "Population profile **de**" in pool_page and profile.files["profiles/de/religion.csv"]
    assert "| Muslims |" in pool_page and "total variation distance" in pool_page
    assert "**Assumed**" in pool_page and "sexuality.csv" in pool_page
    balanced_page = dataset_artifact(balanced.dataset_id)
    assert "| value | count | share | target | population |" in balanced_page
    assert "Population profile **de**" in balanced_page


def test_the_world_profile_stays_available_and_says_it_is_assumed(engine: Engine) -> None:
    pool = asyncio.run(pool_gen(n=300, seed=3, population="world"))
    with session_scope(engine) as session:
        dataset = session.get_one(Dataset, pool.dataset_id)
    assert dataset.population == "world"
    assert max(p[0] for p in personas_of(engine, pool.dataset_id)) <= 90
    assert "**Assumed**" in dataset_artifact(pool.dataset_id)


def test_an_unknown_population_is_refused_naming_the_field(engine: Engine) -> None:
    with pytest.raises(InvalidConfig, match="population: unknown population 'mars'"):
        asyncio.run(pool_gen(n=10, population="mars"))
    assert count(engine, Dataset) == 0
