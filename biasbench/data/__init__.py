"""The reference data shipped with the package: countries, persona distributions, starter traits.

Why a loader: the JSON files beside this module are the one place the numbers live, each with
a top-level `source` saying where they come from and a `version`. Code reads them only through
these typed, validated and cached accessors, so that a bad edit of a file (shares that no longer
sum to 1, a missing age bin) fails loudly at first use instead of silently skewing every pool.

Files are read with `importlib.resources`, so they are found in an installed wheel as well as
in a source checkout. The returned objects are immutable (frozen dataclasses, read-only
mappings) because they are shared between callers through the cache.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any, Final

RELIGIONS: Final[tuple[str, ...]] = (
    "Christians",
    "Muslims",
    "Religiously_unaffiliated",
    "Buddhists",
    "Hindus",
    "Jews",
    "Other_religions",
)
"""The religion groups of Pew's Global Religious Landscape (folk religions inside "Other")."""

WORKING: Final = "working"
"""The occupation status that expands into the ISCO-08 groups given education."""

SUM_TOLERANCE: Final = 1e-6
"""How far the shares of one distribution may be from summing to 1."""

DATA_FILES: Final[tuple[str, ...]] = ("countries.json", "distributions.json", "traits.json")


class DataFileError(ValueError):
    """A shipped data file is malformed: a bug in the package, never in the user's input."""


@dataclass(frozen=True, slots=True)
class DataFileInfo:
    """Provenance of one data file, to be recorded next to anything generated from it."""

    file: str
    source: str
    version: str


@dataclass(frozen=True, slots=True)
class Country:
    """A country of origin; `religion` maps every group of RELIGIONS to its share (sum 1)."""

    code: str  # ISO 3166-1 alpha-3
    name: str
    region: str  # UN M49 region
    subregion: str  # UN M49 sub-region (intermediate region inside Sub-Saharan Africa, LatAm)
    population: float  # millions
    religion: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class AgeBinWeight:
    """One age bin of the age distribution: ages min_age..max_age (inclusive) share `weight`."""

    label: str
    min_age: int
    max_age: int
    weight: float


@dataclass(frozen=True, slots=True)
class Distributions:
    """The persona distributions of distributions.json; conditional tables are keyed by the
    age-bin label or the education level they are conditioned on."""

    source: str
    version: str
    age_bins: tuple[AgeBinWeight, ...]
    gender: Mapping[str, float]
    education: Mapping[str, Mapping[str, float]]  # by age bin
    occupation_status: Mapping[str, Mapping[str, float]]  # by age bin
    occupation_working: Mapping[str, Mapping[str, float]]  # by education
    marriage_status: Mapping[str, Mapping[str, float]]  # by age bin
    migration_status: Mapping[str, float]
    sexuality: Mapping[str, float]

    def occupation(self, age_bin: str, education: str) -> dict[str, float]:
        """p(occupation | age bin, education): the status given the age bin, with `working`
        replaced by the ISCO-08 groups given education (p(status) * p(group | education))."""
        result: dict[str, float] = {}
        for status, p_status in self.occupation_status[age_bin].items():
            if status == WORKING:
                for group, p_group in self.occupation_working[education].items():
                    result[group] = p_status * p_group
            else:
                result[status] = p_status
        return result


@dataclass(frozen=True, slots=True)
class TraitSpec:
    """A starter trait: "How <adjective> does this person seem?"; valence is -1, 0 or 1."""

    adjective: str
    category: str
    valence: int


# --- reading -------------------------------------------------------------------------------


@cache
def _document(name: str) -> Mapping[str, Any]:
    if name not in DATA_FILES:
        raise KeyError(f"unknown data file {name!r}; known: {', '.join(DATA_FILES)}")
    text = resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
    document = json.loads(text)
    if not isinstance(document, dict):
        raise DataFileError(f"{name}: the top level must be an object")
    for key in ("source", "version"):
        if not isinstance(document.get(key), str) or not document[key].strip():
            raise DataFileError(f"{name}: needs a non-empty string {key!r}")
    return document


def file_info(name: str) -> DataFileInfo:
    """Where the numbers of a data file come from (`source`) and which `version` it is."""
    document = _document(name)
    return DataFileInfo(file=name, source=document["source"], version=document["version"])


def _weights(raw: object, where: str) -> Mapping[str, float]:
    """A validated distribution: non-negative finite numbers summing to 1 (± SUM_TOLERANCE)."""
    if not isinstance(raw, dict) or not raw:
        raise DataFileError(f"{where}: expected a non-empty object of weights")
    weights: dict[str, float] = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DataFileError(f"{where}.{key}: not a number: {value!r}")
        if not math.isfinite(value) or value < 0:
            raise DataFileError(f"{where}.{key}: must be finite and >= 0, got {value!r}")
        weights[str(key)] = float(value)
    total = math.fsum(weights.values())
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise DataFileError(f"{where}: weights sum to {total!r}, not 1")
    return MappingProxyType(weights)


def _conditional(
    raw: object, keys: tuple[str, ...], where: str
) -> Mapping[str, Mapping[str, float]]:
    """A table of distributions, one per key of `keys`, all over the same outcomes."""
    if not isinstance(raw, dict) or tuple(raw) != keys:
        found = tuple(raw) if isinstance(raw, dict) else raw
        raise DataFileError(f"{where}: expected one distribution for each of {keys}, got {found}")
    table = {key: _weights(raw[key], f"{where}.{key}") for key in keys}
    outcomes = [tuple(dist) for dist in table.values()]
    if any(o != outcomes[0] for o in outcomes):
        raise DataFileError(f"{where}: every distribution must list the same outcomes in order")
    return MappingProxyType(table)


# --- countries -----------------------------------------------------------------------------


@cache
def _countries() -> tuple[Country, ...]:
    name = "countries.json"
    document = _document(name)
    if tuple(document.get("religions", ())) != RELIGIONS:
        raise DataFileError(f"{name}: 'religions' must be exactly {RELIGIONS}")
    countries: list[Country] = []
    for i, raw in enumerate(document.get("countries", [])):
        where = f"{name}: countries[{i}]"
        code = raw.get("code")
        for key in ("code", "name", "region", "subregion"):
            if not isinstance(raw.get(key), str) or not raw[key].strip():
                raise DataFileError(f"{where} ({code}): needs a non-empty string {key!r}")
        if len(code) != 3 or not code.isalpha() or not code.isupper():
            raise DataFileError(f"{where}: code {code!r} is not an ISO alpha-3 code")
        population = raw.get("population")
        if isinstance(population, bool) or not isinstance(population, int | float):
            raise DataFileError(f"{where} ({code}): population must be a number")
        if not population > 0:
            raise DataFileError(f"{where} ({code}): population must be > 0")
        religion = _weights(raw.get("religion"), f"{where} ({code}).religion")
        if tuple(religion) != RELIGIONS:
            raise DataFileError(f"{where} ({code}): religion must list exactly {RELIGIONS}")
        countries.append(
            Country(
                code=code,
                name=raw["name"],
                region=raw["region"],
                subregion=raw["subregion"],
                population=float(population),
                religion=religion,
            )
        )
    if not countries:
        raise DataFileError(f"{name}: no countries")
    codes = [c.code for c in countries]
    if len(set(codes)) != len(codes):
        raise DataFileError(f"{name}: duplicate country codes")
    return tuple(countries)


def load_countries() -> list[Country]:
    """Every country of countries.json, in file order (a new list; the items are shared)."""
    return list(_countries())


def countries_by_code() -> dict[str, Country]:
    """The countries keyed by ISO alpha-3 code, e.g. to look up a persona's subregion."""
    return {c.code: c for c in _countries()}


# --- distributions -------------------------------------------------------------------------


def _age_bins(raw: object, where: str) -> tuple[AgeBinWeight, ...]:
    if not isinstance(raw, list) or not raw:
        raise DataFileError(f"{where}: expected a non-empty list of bins")
    bins: list[AgeBinWeight] = []
    for i, item in enumerate(raw):
        try:
            age_bin = AgeBinWeight(
                label=str(item["label"]),
                min_age=int(item["min"]),
                max_age=int(item["max"]),
                weight=float(item["weight"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataFileError(f"{where}[{i}]: needs label, min, max, weight ({exc})") from exc
        if age_bin.min_age > age_bin.max_age or not age_bin.weight >= 0:
            raise DataFileError(f"{where}[{i}]: needs min <= max and weight >= 0")
        if bins and age_bin.min_age != bins[-1].max_age + 1:
            raise DataFileError(f"{where}[{i}]: bins must be contiguous and ascending")
        bins.append(age_bin)
    total = math.fsum(b.weight for b in bins)
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise DataFileError(f"{where}: weights sum to {total!r}, not 1")
    return tuple(bins)


@cache
def load_distributions() -> Distributions:
    """The persona distributions (validated; cached, immutable)."""
    name = "distributions.json"
    doc = _document(name)
    try:
        age_bins = _age_bins(doc["age"]["bins"], f"{name}: age.bins")
        labels = tuple(b.label for b in age_bins)
        education = _conditional(doc["education"]["weights"], labels, f"{name}: education")
        levels = tuple(next(iter(education.values())))
        status = _conditional(doc["occupation"]["status"], labels, f"{name}: occupation.status")
        working = _conditional(doc["occupation"]["working"], levels, f"{name}: occupation.working")
        marriage = _conditional(
            doc["marriage_status"]["weights"], labels, f"{name}: marriage_status"
        )
        distributions = Distributions(
            source=doc["source"],
            version=doc["version"],
            age_bins=age_bins,
            gender=_weights(doc["gender"]["weights"], f"{name}: gender"),
            education=education,
            occupation_status=status,
            occupation_working=working,
            marriage_status=marriage,
            migration_status=_weights(doc["migration_status"]["weights"], f"{name}: migration"),
            sexuality=_weights(doc["sexuality"]["weights"], f"{name}: sexuality"),
        )
    except (KeyError, TypeError) as exc:
        raise DataFileError(f"{name}: missing or malformed section ({exc!r})") from exc
    if WORKING not in next(iter(status.values())):
        raise DataFileError(f"{name}: occupation.status needs a {WORKING!r} entry")
    return distributions


# --- traits --------------------------------------------------------------------------------


@cache
def _traits() -> tuple[TraitSpec, ...]:
    name = "traits.json"
    traits: list[TraitSpec] = []
    for i, raw in enumerate(_document(name).get("traits", [])):
        adjective, category, valence = raw.get("adjective"), raw.get("category"), raw.get("valence")
        if not isinstance(adjective, str) or not adjective.strip():
            raise DataFileError(f"{name}: traits[{i}] needs a non-empty adjective")
        if not isinstance(category, str) or not category.strip():
            raise DataFileError(f"{name}: traits[{i}] ({adjective}) needs a category")
        if isinstance(valence, bool) or valence not in (-1, 0, 1):
            raise DataFileError(f"{name}: traits[{i}] ({adjective}) valence must be -1, 0 or 1")
        traits.append(TraitSpec(adjective=adjective, category=category, valence=int(valence)))
    adjectives = [t.adjective.lower() for t in traits]
    if not traits or len(set(adjectives)) != len(adjectives):
        raise DataFileError(f"{name}: needs traits with distinct adjectives")
    return tuple(traits)


def load_traits() -> list[TraitSpec]:
    """The starter traits of traits.json, in file order (a new list; the items are shared)."""
    return list(_traits())
