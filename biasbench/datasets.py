"""Persona datasets in the database: reference data, pools, balanced draws, reading them back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from biasbench.data import load_traits
from biasbench.db.models import Country, Dataset, DatasetMember, Persona, PersonaAttribute, Trait
from biasbench.db.persona_rows import insert_members
from biasbench.db.upsert import insert_ignoring_duplicates
from biasbench.errors import InvalidConfig, NotFound
from biasbench.personas.ages import age_bin
from biasbench.personas.balancing import BalancedSelection
from biasbench.personas.sampling import PersonaDraft
from biasbench.population.countries import reference_countries
from biasbench.population.profiles import Profile, load_profile
from biasbench.population.report import DatasetPopulation
from biasbench.prompts import PersonaProfile


def ensure_reference_data(session: Session) -> None:
    """Countries are kept in step with the shipped data; the starter traits are seeded only into
    an empty table, so that traits a user deactivated or added stay as they are.

    Every profile's countries go in (biasbench.population.countries says which labels win)."""
    insert_ignoring_duplicates(
        session,
        Country.__table__,  # type: ignore[arg-type]
        [c._asdict() for c in reference_countries().values()],
    )
    if session.scalar(select(func.count()).select_from(Trait)) == 0:
        session.execute(
            insert(Trait),
            [
                {"adjective": t.adjective, "category": t.category, "valence": t.valence}
                for t in load_traits()
            ],
        )


def dataset_made_by(session: Session, flow_run_id: str | None) -> Dataset | None:
    """The dataset a (re-run) flow run already produced: generators are idempotent per run."""
    if flow_run_id is None:
        return None
    return session.scalar(select(Dataset).where(Dataset.prefect_flow_run_id == flow_run_id))


def store_pool(
    session: Session,
    drafts: Sequence[PersonaDraft],
    *,
    seed: int,
    config: Mapping[str, Any],
    flow_run_id: str | None,
    population: Profile,
    report: Mapping[str, Any] | None = None,
) -> Dataset:
    """Write a pool in one transaction: either the whole pool exists or nothing does. It records
    the profile it was drawn from (name, version, file hashes) and is its own pool."""
    dataset = Dataset(
        kind="pool",
        name=f"Pool: {len(drafts)} personas (seed {seed})",
        seed=seed,
        config=dict(config),
        report=dict(report or {}),
        size=len(drafts),
        prefect_flow_run_id=flow_run_id,
        population=population.name,
        population_version=population.version,
        population_files=dict(population.files),
    )
    session.add(dataset)
    session.flush()
    dataset.pool_dataset_id = dataset.id
    insert_members(session, dataset.id, drafts)
    return dataset


def require_dataset(session: Session, dataset_id: int, *, field: str = "dataset_id") -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise NotFound(field, f"dataset {dataset_id} does not exist")
    if dataset.size == 0:
        raise InvalidConfig(field, f"dataset {dataset_id} has no personas")
    return dataset


# Every attribute `balancing_rows` gives a persona, which a balanced draw may balance.
BALANCING_AXES: Final = (
    "age",
    "age_bin",
    "gender",
    "education",
    "occupation",
    "marriage_status",
    "migration_status",
    "origin",
    "region",
    "subregion",
    "religion",
    "sexuality",
)


def balancing_rows(session: Session, dataset_id: int) -> list[dict[str, object]]:
    """One row per persona of a dataset, with every attribute an axis can name."""
    rows = session.execute(
        select(Persona, Country.region, Country.subregion)
        .join(DatasetMember, DatasetMember.persona_id == Persona.id)
        .join(Country, Country.code == Persona.origin)
        .where(DatasetMember.dataset_id == dataset_id)
        .order_by(Persona.id)
    ).all()
    return [
        {
            "id": p.id,
            "age": p.age,
            "age_bin": age_bin(p.age),
            "gender": p.gender,
            "education": p.education,
            "occupation": p.occupation,
            "marriage_status": p.marriage_status,
            "migration_status": p.migration_status,
            "origin": p.origin,
            "region": region,
            "subregion": subregion,
            "religion": p.religion,
            "sexuality": p.sexuality,
        }
        for p, region, subregion in rows
    ]


def store_balanced(
    session: Session,
    source: Dataset,
    selection: BalancedSelection,
    *,
    seed: int,
    config: Mapping[str, Any],
    flow_run_id: str | None,
) -> Dataset:
    dataset = Dataset(
        kind="balanced",
        name=f"Balanced: {len(selection.ids)} personas from DS#{source.id} (seed {seed})",
        seed=seed,
        config=dict(config),
        report={"marginals": selection.marginals, "max_deviation": selection.max_deviation},
        source_dataset_id=source.id,
        pool_dataset_id=source.pool_dataset_id or source.id,
        population=source.population,
        population_version=source.population_version,
        population_files=source.population_files,
        size=len(selection.ids),
        prefect_flow_run_id=flow_run_id,
    )
    session.add(dataset)
    session.flush()
    session.execute(
        insert(DatasetMember),
        [{"dataset_id": dataset.id, "persona_id": pid} for pid in selection.ids],
    )
    return dataset


def persona_profiles(
    session: Session, dataset_id: int, *, attrgen_run_id: int | None = None
) -> dict[int, PersonaProfile]:
    """Everything a prompt needs about each persona of a dataset, by persona id."""
    attributes: dict[int, dict[str, str]] = {}
    if attrgen_run_id is not None:
        for persona_id, key, value in session.execute(
            select(PersonaAttribute.persona_id, PersonaAttribute.key, PersonaAttribute.value).where(
                PersonaAttribute.attrgen_run_id == attrgen_run_id
            )
        ):
            attributes.setdefault(persona_id, {})[key] = value
    rows = session.execute(
        select(Persona, Country)
        .join(DatasetMember, DatasetMember.persona_id == Persona.id)
        .join(Country, Country.code == Persona.origin)
        .where(DatasetMember.dataset_id == dataset_id)
        .order_by(Persona.id)
    ).all()
    return {
        p.id: PersonaProfile(
            age=p.age,
            gender=p.gender,
            origin=c.name,
            region=c.region,
            subregion=c.subregion,
            education=p.education,
            occupation=p.occupation,
            marriage_status=p.marriage_status,
            migration_status=p.migration_status,
            religion=p.religion,
            sexuality=p.sexuality,
            attributes=attributes.get(p.id),
        )
        for p, c in rows
    }


def population_of(session: Session, dataset: Dataset) -> DatasetPopulation:
    """What the dataset records about its population, with the population's shares by axis from
    its pool's report (pools made before provenance was kept have none)."""
    pool = session.get(Dataset, dataset.pool_dataset_id) if dataset.pool_dataset_id else None
    marginals = (pool.report or {}).get("marginals", {}) if pool is not None else {}
    assumed: list[str] = []
    if dataset.population is not None and dataset.population_files:
        assumed = list(load_profile(dataset.population).assumed)
    return DatasetPopulation(
        pool_dataset_id=dataset.pool_dataset_id,
        population=dataset.population,
        version=dataset.population_version,
        files=dataset.population_files,
        assumed=assumed,
        population_shares={
            axis: {value: pair[1] for value, pair in row.items()} for axis, row in marginals.items()
        },
    )
