"""The de draw against its population: 200,000 personas whose marginals and key conditionals stay
within a total variation distance of 0.01 of the source tables, seeded, with the original's
per-step temperature and exclusions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import pytest

from biasbench.personas.ages import age_bin
from biasbench.personas.sampling import PersonaDraft
from biasbench.population.compare import total_variation
from biasbench.population.de_expected import expected_marginals, religion_given_origin
from biasbench.population.de_sampler import sample_de

N = 200_000
MAX_DISTANCE = 0.01


def shares(values: Iterable[str]) -> dict[str, float]:
    counts = Counter(values)
    total = sum(counts.values())
    return {k: c / total for k, c in counts.items()}


@pytest.fixture(scope="module")
def pool() -> list[PersonaDraft]:
    return sample_de(N, seed=2024)


def drawn(pool: list[PersonaDraft], attribute: str) -> dict[str, float]:
    if attribute == "age_bin":
        return shares(age_bin(p.age) for p in pool)
    if attribute == "gender_x_age_bin":
        return shares(f"{p.gender}|{age_bin(p.age)}" for p in pool)
    return shares(getattr(p, attribute) for p in pool)


@pytest.mark.parametrize(
    "attribute",
    [
        "age_bin",
        "gender",
        "gender_x_age_bin",
        "education",
        "marriage_status",
        "migration_status",
        "origin",
        "religion",
        "sexuality",
        "occupation",
    ],
)
def test_each_marginal_is_within_001_of_the_tables(
    pool: list[PersonaDraft], attribute: str
) -> None:
    expected = expected_marginals()[attribute]
    assert total_variation(drawn(pool, attribute), expected) < MAX_DISTANCE


def test_religion_given_each_of_the_five_largest_origins_is_within_001_of_pew(
    pool: list[PersonaDraft],
) -> None:
    origin = expected_marginals()["origin"]
    largest = sorted(origin, key=origin.__getitem__, reverse=True)[:5]
    assert largest[:2] == ["DEU", "TUR"]
    for code in largest:
        religions = shares(p.religion for p in pool if p.origin == code)
        assert total_variation(religions, religion_given_origin(code)) < MAX_DISTANCE, code


def test_the_same_seed_gives_an_identical_pool_and_another_seed_another() -> None:
    first = sample_de(5_000, seed=7)
    assert first == sample_de(5_000, seed=7)
    assert first != sample_de(5_000, seed=8)


def test_every_persona_is_an_adult_with_a_coherent_draw(pool: list[PersonaDraft]) -> None:
    assert min(p.age for p in pool) == 18 and max(p.age for p in pool) == 100
    assert all(p.occupation == "retired" for p in pool if p.age > 67)
    assert all(p.origin == "DEU" for p in pool if p.migration_status == "without_migration")
    assert all(p.origin != "DEU" for p in pool if p.migration_status == "with_migration")
    # Pew counts no Hindus in Germany's Polish population: impossible stays impossible.
    assert not [p for p in pool if p.origin == "POL" and p.religion == "Hindus"]


def test_exclusions_remove_values_and_the_rest_keeps_its_proportions() -> None:
    pool = sample_de(20_000, seed=3, exclude={"sexuality": ["heterosexual"], "origin": ["TUR"]})
    sexualities = shares(p.sexuality for p in pool)
    assert set(sexualities) == {"homosexual", "bisexual"}
    assert sexualities["homosexual"] == pytest.approx(1.2 / 1.9, abs=0.02)
    assert "TUR" not in {p.origin for p in pool}


def test_a_step_temperature_flattens_that_step_only() -> None:
    flat = sample_de(20_000, seed=4, temperatures={"sexuality": 1.0})
    sexualities = shares(p.sexuality for p in flat)
    assert all(share == pytest.approx(1 / 3, abs=0.02) for share in sexualities.values())
    assert shares(p.gender for p in flat)["diverse"] < 0.02  # gender keeps its table


def test_the_age_limits_hold() -> None:
    pool = sample_de(3_000, seed=5, age_from=95)
    assert {p.age for p in pool} <= set(range(95, 101))
    assert {p.occupation for p in pool} == {"retired"}
