"""The `de` population's exact shares, computed from the tables by enumeration, not by drawing.

Why a second computation: it is what a drawn pool is compared with (the dataset report and the
test that draws 200,000 personas). It walks the tables' conditional structure age by age and sex
by sex with their published weights (no temperature, no exclusion), and shares no code with the
sampler beyond reading the tables, so a sampler that drops or swaps a step shows up as a distance.
"""

from __future__ import annotations

from collections import defaultdict
from functools import lru_cache

from biasbench.personas.ages import MIN_AGE, age_bin
from biasbench.population.de_tables import (
    GERMANY,
    RETIRED,
    RETIREMENT_AGE,
    UNEMPLOYED,
    DeTables,
    de_tables,
    table_sex,
)
from biasbench.population.shares import Shares, marginal_shares


def religion_given_origin(code: str, tables: DeTables | None = None) -> Shares:
    """Pew 2020 shares of the country's people by religion group."""
    return marginal_shares((tables or de_tables()).religion[code])


@lru_cache(maxsize=8)
def expected_marginals(age_from: int | None = None, age_to: int | None = None) -> dict[str, Shares]:
    """Attribute -> value -> share among adults in [age_from, age_to] (default 18..100), plus
    the joint `gender x age_bin` (values `female|30-44`)."""
    t = de_tables()
    lo = max(MIN_AGE, age_from if age_from is not None else MIN_AGE)
    hi = min(t.ages[-1], age_to if age_to is not None else t.ages[-1])
    ages = marginal_shares({str(a): t.age_total[a] for a in t.ages if lo <= a <= hi})
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    with_migration = 0.0
    for age_text, p_age in ages.items():
        age = int(age_text)
        out["age_bin"][age_bin(age)] += p_age
        for status, p in marginal_shares(t.marital[age]).items():
            out["marriage_status"][status] += p_age * p
        jobs = [o.name for o in t.occupations if o.age_from <= age <= o.age_to]
        if age > RETIREMENT_AGE:
            jobs = [RETIRED]
        for job in jobs or [UNEMPLOYED]:
            out["occupation"][job] += p_age / len(jobs or [UNEMPLOYED])
        for sex, p_sex in marginal_shares(t.sex[age]).items():
            p_as = p_age * p_sex
            out["gender"][sex] += p_as
            out["gender_x_age_bin"][f"{sex}|{age_bin(age)}"] += p_as
            for level, p in marginal_shares(t.education[age, table_sex(sex)]).items():
                out["education"][level] += p_as * p
            migration = marginal_shares(t.migration[age, table_sex(sex)])
            for status, p in migration.items():
                out["migration_status"][status] += p_as * p
            with_migration += p_as * migration.get("with_migration", 0.0)
    origin = {GERMANY: 1.0 - with_migration}
    for code, share in marginal_shares({c.code: float(c.foreigners) for c in t.countries}).items():
        origin[code] = origin.get(code, 0.0) + with_migration * share
    out["origin"] = defaultdict(float, origin)
    for code, p_origin in origin.items():
        for religion, p in religion_given_origin(code, t).items():
            out["religion"][religion] += p_origin * p
    out["sexuality"] = defaultdict(float, marginal_shares(t.sexuality))
    return {attribute: dict(shares) for attribute, shares in out.items()}
