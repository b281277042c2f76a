"""A drawn pool's marginals next to its population's, and how far apart they are.

Why stored with the pool: a published figure should show how the personas it rests on compare
with the population they stand for. The pool's dataset report (and every balanced draw from it)
shows both columns; the total variation distance (half the sum of absolute differences, 0 = the
same, 1 = disjoint) sums each attribute up in one number.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Final

from biasbench.personas.ages import age_bin
from biasbench.personas.sampling import PERSONA_ATTRIBUTES, PersonaDraft
from biasbench.population.countries import reference_countries
from biasbench.population.de_expected import expected_marginals
from biasbench.population.profiles import Profile
from biasbench.population.shares import Shares, marginal_shares
from biasbench.population.world_expected import world_marginals

ATTRIBUTES: Final = (
    "age_bin",
    "gender",
    "gender_x_age_bin",
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
"""What the report compares: each balancing axis but single-year age, plus sex x age band."""


def total_variation(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    return 0.5 * sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in set(a) | set(b))


def achieved_marginals(drafts: Sequence[PersonaDraft]) -> dict[str, Shares]:
    """Counted column by column with C-level counters: a million personas in about a second."""
    column = {name: i for i, name in enumerate(PERSONA_ATTRIBUTES)}

    def counted(attribute: str) -> Counter[Any]:
        return Counter(map(itemgetter(column[attribute]), drafts))

    bins = {age: age_bin(age) for age in counted("age")}
    by_sex_and_age = Counter(map(itemgetter(column["gender"], column["age"]), drafts))
    by_bin: Counter[str] = Counter()
    by_sex_and_bin: Counter[str] = Counter()
    for (sex, age), count in by_sex_and_age.items():
        by_bin[bins[age]] += count
        by_sex_and_bin[f"{sex}|{bins[age]}"] += count
    out = {"age_bin": marginal_shares(by_bin), "gender_x_age_bin": marginal_shares(by_sex_and_bin)}
    for attribute in PERSONA_ATTRIBUTES:
        if attribute != "age":  # single years are compared as bands (above)
            out[attribute] = marginal_shares(counted(attribute))
    countries = reference_countries()
    origin = out["origin"]
    out["region"] = regroup(origin, {c: countries[c].region for c in origin})
    out["subregion"] = regroup(origin, {c: countries[c].subregion for c in origin})
    return out


def regroup(by_country: Mapping[str, float], label: Mapping[str, str]) -> Shares:
    out: Shares = {}
    for code, share in by_country.items():
        out[label[code]] = out.get(label[code], 0.0) + share
    return out


def population_marginals(
    population: str, age_from: int | None, age_to: int | None
) -> dict[str, Shares]:
    """The profile's own shares for the ages drawn, as published (no temperature, no exclusion)."""
    expected = (
        dict(expected_marginals(age_from, age_to))
        if population == "de"
        else world_marginals(age_from, age_to)
    )
    countries = reference_countries()
    origin = expected["origin"]
    expected["region"] = regroup(origin, {c: countries[c].region for c in origin})
    expected["subregion"] = regroup(origin, {c: countries[c].subregion for c in origin})
    return expected


@dataclass(frozen=True, slots=True)
class Comparison:
    """Attribute -> value -> (achieved share, population share)."""

    profile: str
    rows: Mapping[str, Mapping[str, tuple[float, float]]]

    def distance(self, attribute: str) -> float:
        row = self.rows[attribute]
        return total_variation(
            {k: a for k, (a, _) in row.items()}, {k: p for k, (_, p) in row.items()}
        )

    def as_json(self) -> dict[str, dict[str, list[float]]]:
        return {
            attribute: {value: [round(a, 6), round(p, 6)] for value, (a, p) in row.items()}
            for attribute, row in self.rows.items()
        }


def compare_pool(
    profile: Profile, drafts: Sequence[PersonaDraft], age_from: int | None, age_to: int | None
) -> Comparison:
    achieved = achieved_marginals(drafts)
    expected = population_marginals(profile.name, age_from, age_to)
    rows: dict[str, dict[str, tuple[float, float]]] = {}
    for attribute in ATTRIBUTES:
        got, want = achieved.get(attribute, {}), expected.get(attribute, {})
        values = sorted(set(got) | set(want), key=lambda v: (-want.get(v, 0.0), v))
        rows[attribute] = {v: (got.get(v, 0.0), want.get(v, 0.0)) for v in values}
    return Comparison(profile=profile.name, rows=rows)
