"""Sampling a persona pool from the shipped population distributions.

Each persona is drawn attribute by attribute, each from its distribution given what was drawn
before (see biasbench/data/distributions.json and countries.json):

    age bin -> age (uniform within the bin) -> gender -> education | age bin
    -> occupation | age bin, education -> marriage status | age bin -> migration status
    -> origin (population weights) -> religion | origin -> sexuality

Temperature T in [0, 10] reshapes every one of these distributions the same way: each
probability p becomes p^(1-T), then the distribution is renormalised.

- T = 0 keeps the distributions as they are; small T (the default 0.1) lifts rare values a little.
- T = 1 makes every possible value equally likely (uniform marginals for the unconditional
  attributes, uniform choices within each conditional table).
- T > 1 inverts the order: p^(1-T) = (1/p)^(T-1), so the rarer a value, the more likely it
  becomes; at T = 10 the rarest possible value dominates almost every draw.
- An entry with p = 0 is impossible (a religion with no share in a country, a retired
  18-year-old) and stays impossible at every T: temperature reweights what can happen, it never
  invents what cannot.

Reproducibility: all randomness comes from one `random.Random(seed)`, so the same seed (and the
same data files) gives the same list. `seed=None` draws a fresh seed that is not reported; a
caller who needs to reproduce a pool should call `choose_seed()` first and pass its result.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate
from typing import Final, NamedTuple

from biasbench.data import countries_by_code, load_distributions
from biasbench.errors import InvalidConfig
from biasbench.personas.ages import AGE_BINS, age_bin

__all__ = [
    "MAX_TEMPERATURE",
    "MIN_TEMPERATURE",
    "PersonaDraft",
    "age_bin",
    "check_pool_arguments",
    "check_pool_values",
    "choose_seed",
    "flatten",
    "sample_pool",
]

MIN_TEMPERATURE: Final = 0.0
MAX_TEMPERATURE: Final = 10.0


class PersonaDraft(NamedTuple):
    """A sampled persona before it gets a database id; `origin` is an ISO alpha-3 code.

    A NamedTuple rather than a frozen dataclass: a million of them are built and turned into
    rows per big pool, and a frozen dataclass costs ten times as much to build and convert."""

    age: int
    gender: str
    education: str
    occupation: str
    marriage_status: str
    migration_status: str
    origin: str
    religion: str
    sexuality: str


PERSONA_ATTRIBUTES: Final[tuple[str, ...]] = PersonaDraft._fields
"""A persona's attributes in row order: the personas table's columns, the pool report's axes."""


def choose_seed() -> int:
    """A fresh random seed from the OS, in [0, 2**31) so that it fits a 32-bit database column."""
    return random.SystemRandom().randrange(2**31)


def flatten(weights: Sequence[float], temperature: float) -> list[float]:
    """The distribution p^(1-T), renormalised; zero weights stay zero (see the module doc).

    Computed in log space, so that T > 1 with tiny shares cannot overflow. `weights` need not
    sum to 1 (a common factor cancels out), but at least one must be positive.
    """
    exponent = 1.0 - temperature
    logs = [exponent * math.log(w) if w > 0 else None for w in weights]
    finite = [x for x in logs if x is not None]
    if not finite:
        raise ValueError("a distribution needs at least one positive weight")
    top = max(finite)
    raw = [math.exp(x - top) if x is not None else 0.0 for x in logs]
    total = math.fsum(raw)
    return [x / total for x in raw]


@dataclass(frozen=True, slots=True)
class _Table:
    """One flattened distribution, ready for bisect: only the possible values are kept."""

    values: tuple[str, ...]
    cum: tuple[float, ...]

    @classmethod
    def of(cls, dist: Mapping[str, float], temperature: float) -> _Table:
        keys = list(dist)
        probs = flatten([dist[k] for k in keys], temperature)
        kept = [(k, p) for k, p in zip(keys, probs, strict=True) if p > 0]
        return cls(tuple(k for k, _ in kept), tuple(accumulate(p for _, p in kept)))

    def draw(self, rnd: float) -> str:
        """The value for a uniform number rnd in [0, 1)."""
        return self.values[bisect_right(self.cum, rnd * self.cum[-1])]


@dataclass(frozen=True, slots=True)
class _Model:
    """All conditional tables at one temperature (the age table depends on the limits too)."""

    gender: _Table
    education: dict[str, _Table]  # by age bin
    occupation: dict[tuple[str, str], _Table]  # by (age bin, education)
    marriage: dict[str, _Table]  # by age bin
    migration: _Table
    origin: _Table
    religion: dict[str, _Table]  # by country code
    sexuality: _Table


@lru_cache(maxsize=8)
def _model(temperature: float) -> _Model:
    dist = load_distributions()
    labels = [b.label for b in dist.age_bins]
    levels = list(dist.occupation_working)
    countries = countries_by_code()
    return _Model(
        gender=_Table.of(dist.gender, temperature),
        education={b: _Table.of(dist.education[b], temperature) for b in labels},
        occupation={
            (b, e): _Table.of(dist.occupation(b, e), temperature) for b in labels for e in levels
        },
        marriage={b: _Table.of(dist.marriage_status[b], temperature) for b in labels},
        migration=_Table.of(dist.migration_status, temperature),
        origin=_Table.of({c.code: c.population for c in countries.values()}, temperature),
        religion={c.code: _Table.of(c.religion, temperature) for c in countries.values()},
        sexuality=_Table.of(dist.sexuality, temperature),
    )


@lru_cache(maxsize=32)
def _age_model(
    temperature: float, age_from: int | None, age_to: int | None
) -> tuple[_Table, dict[str, tuple[int, int]]]:
    """The age-bin table restricted to [age_from, age_to], and each bin's allowed ages.

    A bin cut by the limits keeps the mass of its allowed ages only (ages are uniform within a
    bin), and temperature then reshapes the restricted bin distribution.
    """
    bins = load_distributions().age_bins
    if tuple((b.label, b.min_age, b.max_age) for b in bins) != AGE_BINS:
        raise RuntimeError("distributions.json age bins differ from biasbench.personas.ages")
    lo_limit = bins[0].min_age if age_from is None else age_from
    hi_limit = bins[-1].max_age if age_to is None else age_to
    weights: dict[str, float] = {}
    ranges: dict[str, tuple[int, int]] = {}
    for b in bins:
        lo, hi = max(b.min_age, lo_limit), min(b.max_age, hi_limit)
        if lo <= hi and b.weight > 0:
            weights[b.label] = b.weight * (hi - lo + 1) / (b.max_age - b.min_age + 1)
            ranges[b.label] = (lo, hi)
    if not weights:
        field = "age_to" if age_to is not None and age_to < bins[0].min_age else "age_from"
        raise InvalidConfig(
            field,
            f"no persona can be {lo_limit}..{hi_limit} years old: ages run "
            f"{bins[0].min_age}..{bins[-1].max_age}",
        )
    return _Table.of(weights, temperature), ranges


def _validate(
    n: int, temperature: float, age_from: int | None, age_to: int | None, seed: int | None
) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidConfig("n", f"must be an integer >= 1, got {n!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise InvalidConfig("temperature", f"must be a number, got {temperature!r}")
    if not MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE:  # also rejects NaN
        raise InvalidConfig(
            "temperature",
            f"must be in [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}], got {temperature!r}",
        )
    for field, value in (("age_from", age_from), ("age_to", age_to)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidConfig(field, f"must be an integer or empty, got {value!r}")
    if age_from is not None and age_to is not None and age_from > age_to:
        raise InvalidConfig("age_from", f"must be <= age_to, got {age_from} > {age_to}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InvalidConfig("seed", f"must be an integer or empty, got {seed!r}")


def check_pool_values(
    n: int, temperature: float, age_from: int | None, age_to: int | None, seed: int | None
) -> None:
    """The types and ranges every profile refuses alike (the age range is each profile's own)."""
    _validate(n, temperature, age_from, age_to, seed)


def check_pool_arguments(
    n: int, temperature: float, age_from: int | None, age_to: int | None, seed: int | None
) -> None:
    """What `sample_pool` refuses, without sampling: a submission checks it up front."""
    _validate(n, temperature, age_from, age_to, seed)
    _age_model(float(temperature), age_from, age_to)


def sample_pool(
    n: int,
    *,
    temperature: float = 0.1,
    age_from: int | None = None,
    age_to: int | None = None,
    seed: int | None = None,
) -> list[PersonaDraft]:
    """`n` personas drawn independently; the same arguments and seed give the same list.

    Raises InvalidConfig naming the field: n < 1, temperature outside [0, 10], age_from >
    age_to, or an age range in which no persona can fall.
    """
    check_pool_arguments(n, temperature, age_from, age_to, seed)
    ages, age_ranges = _age_model(float(temperature), age_from, age_to)
    model = _model(float(temperature))
    rnd = random.Random(choose_seed() if seed is None else seed).random
    education, occupation, marriage = model.education, model.occupation, model.marriage
    religion = model.religion
    gender, migration, origin, sexuality = (
        model.gender,
        model.migration,
        model.origin,
        model.sexuality,
    )
    drafts: list[PersonaDraft] = []
    for _ in range(n):
        bin_label = ages.draw(rnd())
        lo, hi = age_ranges[bin_label]
        age = lo + int(rnd() * (hi - lo + 1))
        sex = gender.draw(rnd())
        edu = education[bin_label].draw(rnd())
        job = occupation[bin_label, edu].draw(rnd())
        married = marriage[bin_label].draw(rnd())
        migrated = migration.draw(rnd())
        country = origin.draw(rnd())
        drafts.append(
            PersonaDraft(
                age=age,
                gender=sex,
                education=edu,
                occupation=job,
                marriage_status=married,
                migration_status=migrated,
                origin=country,
                religion=religion[country].draw(rnd()),
                sexuality=sexuality.draw(rnd()),
            )
        )
    return drafts
