"""The `de` draw: the original study's conditional steps, column by column and seeded.

    age -> gender | age -> education | age, gender -> marriage status | age
    -> migration history | age, gender -> origin | migration history -> religion | origin
    -> sexuality -> occupation | age

Every step but occupation can be flattened by a temperature (p^(1-T), see
`biasbench.personas.sampling.flatten`; zero weights stay impossible) and every step but age can
exclude values (occupation: categories), as in the original. Excluded values leave the
distribution and the rest is renormalised; an exclusion that leaves a reachable condition with
nothing to draw is refused, naming `exclude`.

Why column by column: each step draws all n personas at once from one table per condition with a
list comprehension over `bisect`, so a million personas take seconds in plain Python (numpy is
not a dependency of this project). Reproducibility: one `random.Random(seed)` is consumed step
after step in this fixed order, so the same seed and tables give the same pool.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate
from typing import Final

from biasbench.data import RELIGIONS
from biasbench.errors import InvalidConfig
from biasbench.personas.ages import MIN_AGE
from biasbench.personas.sampling import PersonaDraft, flatten
from biasbench.population.de_tables import (
    GERMANY,
    MARITAL,
    MIGRATION,
    RETIRED,
    RETIREMENT_AGE,
    SEXES,
    UNEMPLOYED,
    DeTables,
    de_tables,
    table_sex,
)

TEMPERATURE_STEPS: Final = (
    "age",
    "gender",
    "education",
    "marriage_status",
    "migration_status",
    "origin",
    "religion",
    "sexuality",
)
"""The steps a temperature flattens (the original's occupation step had none)."""

EXCLUDE_STEPS: Final = (
    "gender",
    "education",
    "marriage_status",
    "migration_status",
    "origin",
    "religion",
    "sexuality",
    "occupation",
)
"""The steps that can exclude values (occupation: categories of the occupation list)."""

_Table = tuple[tuple[str, ...], tuple[float, ...]]
"""Values and their cumulative probabilities, the last exactly 1.0, for bisect."""

Frozen = tuple[tuple[str, tuple[str, ...]], ...]


def _table(weights: Mapping[str, float], temperature: float, excluded: frozenset[str]) -> _Table:
    """The flattened distribution over the values left; empty when nothing possible is left."""
    kept = {k: w for k, w in weights.items() if k not in excluded and w > 0}
    if not kept:
        return (), ()
    probs = flatten(list(kept.values()), temperature)
    cum = list(accumulate(probs))
    cum[-1] = 1.0
    return tuple(kept), tuple(cum)


@dataclass(frozen=True, slots=True)
class _Plan:
    """Every table of one draw configuration, keyed for the column draws."""

    ages: tuple[int, ...]
    age_cum: tuple[float, ...]
    sex: Mapping[int, _Table]
    education: Mapping[tuple[int, str], _Table]
    marital: Mapping[int, _Table]
    migration: Mapping[tuple[int, str], _Table]
    origin: _Table
    religion: Mapping[str, _Table]
    sexuality: _Table
    occupation: Mapping[int, tuple[str, ...]]


def known_values(tables: DeTables) -> dict[str, tuple[str, ...]]:
    """What each step's `exclude` may name."""
    return {
        "gender": SEXES,
        "education": tables.education_levels,
        "marriage_status": MARITAL,
        "migration_status": MIGRATION,
        "origin": tuple(c.code for c in tables.countries if c.foreigners > 0),
        "religion": RELIGIONS,
        "sexuality": tuple(tables.sexuality),
        "occupation": tuple(dict.fromkeys(o.category for o in tables.occupations)),
    }


def age_range(age_from: int | None, age_to: int | None, ages: Sequence[int]) -> tuple[int, int]:
    """The ages drawn: adults within the table and the limits, or InvalidConfig."""
    lo = max(MIN_AGE, ages[0] if age_from is None else age_from)
    hi = min(ages[-1], ages[-1] if age_to is None else age_to)
    if lo > hi:
        field = "age_to" if age_to is not None and age_to < MIN_AGE else "age_from"
        raise InvalidConfig(
            field, f"no persona can be {lo}..{hi} years old: adults {MIN_AGE}..{ages[-1]}"
        )
    return lo, hi


def _nonempty(table: _Table, step: str, condition: str) -> _Table:
    if not table[0]:
        raise InvalidConfig("exclude", f"leaves no {step} to draw for {condition}")
    return table


@lru_cache(maxsize=16)
def _plan(
    temperatures: tuple[tuple[str, float], ...],
    age_from: int | None,
    age_to: int | None,
    exclude: Frozen,
) -> _Plan:
    t = de_tables()
    temp = dict(temperatures)
    ex = {step: frozenset(values) for step, values in exclude}
    none: frozenset[str] = frozenset()
    lo, hi = age_range(age_from, age_to, t.ages)
    ages = tuple(a for a in t.ages if lo <= a <= hi)
    age_values, age_cum = _table({str(a): t.age_total[a] for a in ages}, temp["age"], none)
    # An age with no people at all cannot be drawn: keep the table's own order of ages.
    drawn_ages = tuple(int(a) for a in age_values)

    def cond(step: str, weights: Mapping[str, float], what: str) -> _Table:
        return _nonempty(_table(weights, temp[step], ex.get(step, none)), step, what)

    sex = {a: cond("gender", t.sex[a], f"age {a}") for a in drawn_ages}
    sexes_used = {s for a in drawn_ages for s in sex[a][0]}
    education = {
        (a, s): cond("education", t.education[a, table_sex(s)], f"age {a}, gender {s}")
        for a in drawn_ages
        for s in sexes_used
    }
    marital = {a: cond("marriage_status", t.marital[a], f"age {a}") for a in drawn_ages}
    migration = {
        (a, s): cond("migration_status", t.migration[a, table_sex(s)], f"age {a}, gender {s}")
        for a in drawn_ages
        for s in sexes_used
    }
    origin = _table(
        {c.code: float(c.foreigners) for c in t.countries},
        temp["origin"],
        ex.get("origin", none),
    )
    if not origin[0] and any("with_migration" in m[0] for m in migration.values()):
        raise InvalidConfig("exclude", "leaves no origin for people with a migration history")
    religion = {
        c.code: cond("religion", t.religion[c.code], f"origin {c.code}")
        for c in t.countries
        if c.code == GERMANY or c.code in origin[0]
    }
    occupation: dict[int, tuple[str, ...]] = {}
    excluded_categories = ex.get("occupation", none)
    for a in drawn_ages:
        jobs = tuple(
            o.name
            for o in t.occupations
            if o.age_from <= a <= o.age_to and o.category not in excluded_categories
        )
        occupation[a] = (RETIRED,) if a > RETIREMENT_AGE else jobs or (UNEMPLOYED,)
    return _Plan(
        ages=drawn_ages,
        age_cum=age_cum,
        sex=sex,
        education=education,
        marital=marital,
        migration=migration,
        origin=origin,
        religion=religion,
        sexuality=cond("sexuality", t.sexuality, "anyone"),
        occupation=occupation,
    )


def check_options(
    temperature: float,
    temperatures: Mapping[str, float] | None,
    exclude: Mapping[str, Sequence[str]] | None,
) -> tuple[tuple[tuple[str, float], ...], Frozen]:
    """Per-step temperatures and exclusions in a hashable form, or InvalidConfig naming them."""
    steps = dict.fromkeys(TEMPERATURE_STEPS, float(temperature))
    for step, value in (temperatures or {}).items():
        if step not in steps:
            raise InvalidConfig(
                "temperatures", f"unknown step {step!r}; one of {', '.join(TEMPERATURE_STEPS)}"
            )
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 10:
            raise InvalidConfig("temperatures", f"{step}: must be a number in [0, 10]")
        steps[step] = float(value)
    known = known_values(de_tables())
    frozen: list[tuple[str, tuple[str, ...]]] = []
    for step, values in sorted((exclude or {}).items()):
        if step not in known:
            raise InvalidConfig(
                "exclude", f"unknown step {step!r}; one of {', '.join(EXCLUDE_STEPS)}"
            )
        if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
            raise InvalidConfig("exclude", f"{step}: must be a list of values")
        unknown = [v for v in values if v not in known[step]]
        if unknown:
            raise InvalidConfig(
                "exclude",
                f"{step}: unknown value {unknown[0]!r}; one of {', '.join(known[step][:12])}"
                + (", ..." if len(known[step]) > 12 else ""),
            )
        frozen.append((step, tuple(sorted(set(values)))))
    return tuple(steps.items()), tuple(frozen)


def check_de_arguments(
    temperature: float,
    age_from: int | None,
    age_to: int | None,
    temperatures: Mapping[str, float] | None,
    exclude: Mapping[str, Sequence[str]] | None,
) -> None:
    """What `sample_de` refuses, without drawing (builds and caches the tables)."""
    steps, frozen = check_options(temperature, temperatures, exclude)
    _plan(steps, age_from, age_to, frozen)


def sample_de(
    n: int,
    *,
    temperature: float = 0.0,
    age_from: int | None = None,
    age_to: int | None = None,
    seed: int,
    temperatures: Mapping[str, float] | None = None,
    exclude: Mapping[str, Sequence[str]] | None = None,
) -> list[PersonaDraft]:
    """`n` personas living in Germany; the same arguments and seed give the same list."""
    steps, frozen = check_options(temperature, temperatures, exclude)
    plan = _plan(steps, age_from, age_to, frozen)
    rng = random.Random(seed)
    rnd = rng.random
    bisect = bisect_right
    ages = rng.choices(plan.ages, cum_weights=plan.age_cum, k=n)
    sex_of = plan.sex
    sexes = [(t := sex_of[a])[0][bisect(t[1], rnd())] for a in ages]
    edu_of = plan.education
    educations = [
        (t := edu_of[a, s])[0][bisect(t[1], rnd())] for a, s in zip(ages, sexes, strict=True)
    ]
    marital_of = plan.marital
    marital = [(t := marital_of[a])[0][bisect(t[1], rnd())] for a in ages]
    migration_of = plan.migration
    migration = [
        (t := migration_of[a, s])[0][bisect(t[1], rnd())] for a, s in zip(ages, sexes, strict=True)
    ]
    countries, country_cum = plan.origin
    origins = [
        GERMANY if m == "without_migration" else countries[bisect(country_cum, rnd())]
        for m in migration
    ]
    religion_of = plan.religion
    religions = [(t := religion_of[c])[0][bisect(t[1], rnd())] for c in origins]
    sexualities = rng.choices(plan.sexuality[0], cum_weights=plan.sexuality[1], k=n)
    jobs_of = plan.occupation
    occupations = [(j := jobs_of[a])[int(rnd() * len(j))] for a in ages]
    return list(
        map(
            PersonaDraft,
            ages,
            sexes,
            educations,
            occupations,
            marital,
            migration,
            origins,
            religions,
            sexualities,
        )
    )
