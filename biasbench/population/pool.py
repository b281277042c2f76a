"""One entry point for drawing a pool from a named population profile, and for refusing a request
before anything is drawn (the submission and the flow run the same check).

Why a dispatcher: pool_gen and task_checks name a profile, not a sampler. `de` has the original
study's per-step temperatures and exclusions; `world` has one temperature for every step and no
exclusions, so asking it for either is refused rather than silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from biasbench.errors import InvalidConfig
from biasbench.personas.sampling import (
    PersonaDraft,
    check_pool_arguments,
    check_pool_values,
    sample_pool,
)
from biasbench.population.de_sampler import check_de_arguments, sample_de
from biasbench.population.profiles import check_population


def check_pool_request(
    population: object,
    n: int,
    temperature: float,
    age_from: int | None,
    age_to: int | None,
    seed: int | None,
    temperatures: Mapping[str, float] | None = None,
    exclude: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """InvalidConfig naming the field for anything `draw_pool` would refuse."""
    name = check_population(population)
    check_pool_values(n, temperature, age_from, age_to, seed)
    for field, value in (("temperatures", temperatures), ("exclude", exclude)):
        if value is not None and not isinstance(value, dict):
            raise InvalidConfig(field, "must be an object keyed by step, e.g. {'origin': ...}")
    if name == "de":
        check_de_arguments(temperature, age_from, age_to, temperatures, exclude)
        return
    check_pool_arguments(n, temperature, age_from, age_to, seed)
    for field, value in (("temperatures", temperatures), ("exclude", exclude)):
        if value:
            raise InvalidConfig(field, f"the {name} profile has none; use population 'de'")


def draw_pool(
    population: str,
    n: int,
    *,
    temperature: float,
    age_from: int | None,
    age_to: int | None,
    seed: int,
    temperatures: Mapping[str, float] | None = None,
    exclude: Mapping[str, Sequence[str]] | None = None,
) -> list[PersonaDraft]:
    """`n` personas from the named profile; the same arguments and seed give the same list."""
    check_pool_request(population, n, temperature, age_from, age_to, seed, temperatures, exclude)
    if population == "de":
        return sample_de(
            n,
            temperature=temperature,
            age_from=age_from,
            age_to=age_to,
            seed=seed,
            temperatures=temperatures,
            exclude=exclude,
        )
    return sample_pool(n, temperature=temperature, age_from=age_from, age_to=age_to, seed=seed)
