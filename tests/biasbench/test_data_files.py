"""The shipped data files: provenance, shares that sum to 1, and what the loader makes of them."""

from __future__ import annotations

import json
import math
from importlib import resources
from typing import Any

import pytest

from biasbench.data import (
    DATA_FILES,
    RELIGIONS,
    WORKING,
    Country,
    DataFileError,
    _weights,
    countries_by_code,
    file_info,
    load_countries,
    load_distributions,
    load_traits,
)
from biasbench.personas.ages import AGE_BINS, MAX_AGE, MIN_AGE

M49_SUBREGIONS = {
    "Africa": {
        "Northern Africa",
        "Eastern Africa",
        "Middle Africa",
        "Southern Africa",
        "Western Africa",
    },
    "Americas": {"Caribbean", "Central America", "South America", "Northern America"},
    "Asia": {"Central Asia", "Eastern Asia", "South-eastern Asia", "Southern Asia", "Western Asia"},
    "Europe": {"Eastern Europe", "Northern Europe", "Southern Europe", "Western Europe"},
    "Oceania": {"Australia and New Zealand", "Melanesia", "Micronesia", "Polynesia"},
}


def raw(name: str) -> dict[str, Any]:
    text = resources.files("biasbench.data").joinpath(name).read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def assert_distribution(weights: dict[str, float], where: str) -> None:
    assert weights, where
    assert all(isinstance(w, int | float) and w >= 0 for w in weights.values()), where
    assert math.fsum(weights.values()) == pytest.approx(1.0, abs=1e-6), where


@pytest.mark.parametrize("name", DATA_FILES)
def test_every_file_says_where_its_numbers_come_from(name: str) -> None:
    document = raw(name)
    assert isinstance(document["source"], str) and len(document["source"]) > 20
    assert isinstance(document["version"], str) and document["version"]
    info = file_info(name)
    assert (info.source, info.version) == (document["source"], document["version"])


def test_countries_cover_every_m49_subregion_with_valid_rows() -> None:
    countries = raw("countries.json")["countries"]
    assert 60 <= len(countries) <= 100
    codes = [c["code"] for c in countries]
    assert len(set(codes)) == len(codes)
    for c in countries:
        assert len(c["code"]) == 3 and c["code"].isalpha() and c["code"].isupper(), c
        assert c["name"] and c["region"] and c["subregion"], c
        assert c["subregion"] in M49_SUBREGIONS[c["region"]], c
        assert c["population"] > 0, c
        assert tuple(c["religion"]) == RELIGIONS, c["code"]
        assert_distribution(c["religion"], c["code"])
    for region, subregions in M49_SUBREGIONS.items():
        present = {c["subregion"] for c in countries if c["region"] == region}
        assert present == subregions, region


def test_some_religions_are_absent_somewhere() -> None:
    """Zero shares exist, so that 'religion follows origin' is testable."""
    by_code = countries_by_code()
    assert by_code["AFG"].religion["Jews"] == 0
    assert by_code["ISR"].religion["Jews"] > 0.5
    assert by_code["IND"].religion["Hindus"] > 0.5


def test_distributions_sum_to_one_and_use_the_shared_age_bins() -> None:
    document = raw("distributions.json")
    bins = document["age"]["bins"]
    assert [(b["label"], b["min"], b["max"]) for b in bins] == list(AGE_BINS)
    assert bins[0]["min"] == MIN_AGE and bins[-1]["max"] == MAX_AGE
    assert math.fsum(b["weight"] for b in bins) == pytest.approx(1.0, abs=1e-6)
    labels = [b["label"] for b in bins]
    for key in ("gender", "migration_status", "sexuality"):
        assert_distribution(document[key]["weights"], key)
    for key in ("education", "marriage_status"):
        assert list(document[key]["weights"]) == labels
        for label, weights in document[key]["weights"].items():
            assert_distribution(weights, f"{key}[{label}]")
    occupation = document["occupation"]
    assert list(occupation["status"]) == labels
    for label, weights in occupation["status"].items():
        assert_distribution(weights, f"occupation.status[{label}]")
    levels = list(document["education"]["weights"]["18-29"])
    assert list(occupation["working"]) == levels
    for level, weights in occupation["working"].items():
        assert_distribution(weights, f"occupation.working[{level}]")
    assert set(document["gender"]["weights"]) == {"male", "female", "diverse"}
    assert document["gender"]["weights"]["diverse"] < 0.05
    assert set(document["marriage_status"]["weights"]["18-29"]) == {
        "single",
        "married",
        "widowed",
        "divorced",
    }


def test_occupation_depends_on_age_and_education() -> None:
    dist = load_distributions()
    for label, _, _ in AGE_BINS:
        for level in dist.occupation_working:
            assert_distribution(dist.occupation(label, level), f"{label}/{level}")
    assert dist.occupation("18-29", "primary_education")["retired"] == 0
    assert dist.occupation("75+", "primary_education")["retired"] > 0.8
    assert dist.occupation("18-29", "bachelor_degree")["student"] > 0.2
    assert WORKING not in dist.occupation("30-44", "doctorate")
    assert dist.occupation("30-44", "doctorate")["professional"] > 0.5


def test_traits_include_the_starters_and_are_balanced() -> None:
    traits = load_traits()
    adjectives = {t.adjective for t in traits}
    assert {"friendly", "competent", "reliable", "aggressive", "helpful"} <= adjectives
    assert len(traits) >= 15
    assert all(t.valence in (-1, 0, 1) for t in traits)
    categories = {t.category for t in traits}
    assert {"competence", "warmth", "morality"} <= categories
    for category in categories:
        valences = [t.valence for t in traits if t.category == category]
        assert valences.count(1) == valences.count(-1) >= 1, category


def test_loader_returns_typed_shared_read_only_objects() -> None:
    countries = load_countries()
    assert all(isinstance(c, Country) for c in countries)
    assert load_countries() == countries and load_countries() is not countries
    assert load_countries()[0] is countries[0]  # cached
    with pytest.raises(TypeError):
        countries[0].religion["Jews"] = 1.0  # type: ignore[index]
    assert load_distributions() is load_distributions()


def test_a_distribution_that_does_not_sum_to_one_is_rejected() -> None:
    with pytest.raises(DataFileError, match="sum"):
        _weights({"a": 0.5, "b": 0.4}, "test")
    with pytest.raises(DataFileError, match=">= 0"):
        _weights({"a": 1.5, "b": -0.5}, "test")
