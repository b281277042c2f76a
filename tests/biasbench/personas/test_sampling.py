"""Sampling a persona pool: reproducibility, age limits, temperature, conditional structure."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from biasbench.data import RELIGIONS, countries_by_code, load_distributions
from biasbench.errors import InvalidConfig
from biasbench.personas.sampling import (
    PersonaDraft,
    age_bin,
    choose_seed,
    flatten,
    sample_pool,
)


def test_same_seed_same_pool_and_different_seed_different_pool() -> None:
    first = sample_pool(2_000, seed=7)
    assert first == sample_pool(2_000, seed=7)
    assert first != sample_pool(2_000, seed=8)
    assert len(first) == 2_000 and all(isinstance(p, PersonaDraft) for p in first)


def test_drafts_hold_valid_values() -> None:
    dist = load_distributions()
    countries = countries_by_code()
    for p in sample_pool(3_000, temperature=0.5, seed=1):
        assert 18 <= p.age <= 90
        assert p.gender in dist.gender
        assert p.education in dist.occupation_working
        assert p.occupation in dist.occupation(age_bin(p.age), p.education)
        assert p.marriage_status in dist.marriage_status["18-29"]
        assert p.migration_status in dist.migration_status
        assert p.origin in countries
        assert p.religion in RELIGIONS
        assert p.sexuality in dist.sexuality


@pytest.mark.parametrize(
    ("age_from", "age_to", "lowest", "highest"),
    [(30, 40, 30, 40), (85, None, 85, 90), (None, 20, 18, 20), (50, 50, 50, 50), (0, 19, 18, 19)],
)
def test_age_limits_are_honoured(
    age_from: int | None, age_to: int | None, lowest: int, highest: int
) -> None:
    ages = [p.age for p in sample_pool(2_000, age_from=age_from, age_to=age_to, seed=3)]
    assert min(ages) == lowest and max(ages) == highest


def test_temperature_zero_follows_the_data() -> None:
    pool = sample_pool(30_000, temperature=0.0, seed=11)
    genders = Counter(p.gender for p in pool)
    assert genders["diverse"] / len(pool) == pytest.approx(0.01, abs=0.004)
    bins = Counter(age_bin(p.age) for p in pool)
    assert bins["30-44"] / len(pool) == pytest.approx(0.29, abs=0.015)
    origins = Counter(p.origin for p in pool)
    assert origins.most_common(2)[0][0] in {"CHN", "IND"}


def test_temperature_one_makes_unconditional_marginals_uniform() -> None:
    pool = sample_pool(30_000, temperature=1.0, seed=12)
    for attribute, tolerance in [
        ("gender", 0.05),
        ("migration_status", 0.05),
        ("sexuality", 0.05),
        ("age_bin", 0.08),
        ("origin", 0.3),  # 94 countries: about 320 each
    ]:
        counts = Counter(
            age_bin(p.age) if attribute == "age_bin" else getattr(p, attribute) for p in pool
        )
        expected = len(pool) / len(counts)
        for value, count in counts.items():
            assert abs(count / expected - 1) < tolerance, (attribute, value, count, expected)
    assert len({p.origin for p in pool}) == len(countries_by_code())


def test_temperature_above_one_favours_rare_values() -> None:
    genders = Counter(p.gender for p in sample_pool(3_000, temperature=3.0, seed=13))
    assert genders.most_common(1)[0][0] == "diverse"


@pytest.mark.parametrize("temperature", [0.0, 1.0, 4.0])
def test_religion_follows_origin(temperature: float) -> None:
    """A religion with no share in a country is impossible there, at every temperature."""
    countries = countries_by_code()
    pool = sample_pool(20_000, temperature=temperature, seed=14)
    for p in pool:
        assert countries[p.origin].religion[p.religion] > 0, p
    afghans = [p for p in pool if p.origin == "AFG"]
    assert all(p.religion != "Jews" for p in afghans)
    if temperature <= 1:  # above 1, the populous countries become rare
        assert len(afghans) > 20


def test_impossible_occupations_stay_impossible() -> None:
    for temperature in (0.0, 1.0, 5.0):
        young = [p for p in sample_pool(5_000, temperature=temperature, seed=15) if p.age < 30]
        assert young and all(p.occupation != "retired" for p in young)


def test_a_large_pool_generates() -> None:
    pool = sample_pool(20_000, seed=16)
    assert len(pool) == 20_000
    assert len({p.origin for p in pool}) > 60


def test_flatten() -> None:
    assert flatten([0.5, 0.3, 0.2, 0.0], 0.0) == pytest.approx([0.5, 0.3, 0.2, 0.0])
    assert flatten([0.5, 0.3, 0.2, 0.0], 1.0) == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0.0])
    inverse = [1 / 0.5, 1 / 0.3, 1 / 0.2]
    expected = [w / sum(inverse) for w in inverse]
    assert flatten([0.5, 0.3, 0.2], 2.0) == pytest.approx(expected)
    extreme = flatten([1e-300, 0.5, 0.0], 10.0)
    assert all(math.isfinite(w) for w in extreme) and extreme[0] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        flatten([0.0, 0.0], 0.5)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n": 0}, "n"),
        ({"n": -5}, "n"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": 10.5}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"age_from": 50, "age_to": 40}, "age_from"),
        ({"age_from": 95}, "age_from"),
        ({"age_to": 10}, "age_to"),
        ({"seed": "x"}, "seed"),
    ],
)
def test_invalid_arguments_name_the_field(kwargs: dict[str, object], field: str) -> None:
    n = kwargs.pop("n", 10)
    with pytest.raises(InvalidConfig) as raised:
        sample_pool(n, **kwargs)  # type: ignore[arg-type]
    assert raised.value.field == field


@pytest.mark.parametrize(
    ("age", "label"),
    [
        (18, "18-29"),
        (29, "18-29"),
        (30, "30-44"),
        (44, "30-44"),
        (45, "45-59"),
        (59, "45-59"),
        (60, "60-74"),
        (74, "60-74"),
        (75, "75+"),
        (90, "75+"),
        (104, "75+"),
    ],
)
def test_age_bin(age: int, label: str) -> None:
    assert age_bin(age) == label


def test_age_bin_rejects_minors() -> None:
    with pytest.raises(InvalidConfig) as raised:
        age_bin(17)
    assert raised.value.field == "age"


def test_choose_seed() -> None:
    seeds = {choose_seed() for _ in range(5)}
    assert len(seeds) > 1 and all(0 <= s < 2**31 for s in seeds)
