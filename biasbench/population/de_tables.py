"""The `de` profile's tidy tables, read once into plain lookups keyed by single year of age.

Why expand bands to single years here: every conditional step of the draw is "given the age"
(and sex), so the sampler and the exact expected marginals (`de_expected.py`) both index one
table per age instead of searching bands, and a band boundary is decided in exactly one place.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Final

from biasbench.data import DataFileError
from biasbench.population.profiles import load_profile

SEXES: Final = ("male", "female", "diverse")
MARITAL: Final = ("single", "married", "widowed", "divorced")
MIGRATION: Final = ("with_migration", "without_migration")
GERMANY: Final = "DEU"
RETIREMENT_AGE: Final = 67
"""Above it the original gave every persona the occupation `retired`."""
RETIRED: Final = "retired"
UNEMPLOYED: Final = "unemployed"


@dataclass(frozen=True, slots=True)
class Occupation:
    name: str
    category: str
    age_from: int
    age_to: int


@dataclass(frozen=True, slots=True)
class CountryRow:
    code: str
    name: str
    region: str
    subregion: str
    foreigners: int  # foreign citizens of this country living in Germany; 0 for Germany


@dataclass(frozen=True, slots=True)
class DeTables:
    """Weights as published (counts or percent); every mapping is keyed as named."""

    ages: tuple[int, ...]
    age_total: Mapping[int, float]
    sex: Mapping[int, Mapping[str, float]]  # age -> sex -> people
    education: Mapping[tuple[int, str], Mapping[str, float]]  # (age, table sex) -> level -> 1000s
    education_levels: tuple[str, ...]
    marital: Mapping[int, Mapping[str, float]]  # age -> status -> percent
    migration: Mapping[tuple[int, str], Mapping[str, float]]  # (age, table sex) -> status -> people
    countries: tuple[CountryRow, ...]
    religion: Mapping[str, Mapping[str, float]]  # country code -> religion -> people
    occupations: tuple[Occupation, ...]
    sexuality: Mapping[str, float]


def table_sex(sex: str) -> str:
    """The sex row of the Mikrozensus tables: they have none for `diverse`, which uses `all`."""
    return sex if sex in ("male", "female") else "all"


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@cache
def de_tables() -> DeTables:
    profile = load_profile("de")
    age_rows = _rows(profile.read_text("age_sex.csv"))
    ages = tuple(int(r["age"]) for r in age_rows)
    education_rows = _rows(profile.read_text("education.csv"))
    levels = tuple(dict.fromkeys(r["education"] for r in education_rows))
    education: dict[tuple[int, str], dict[str, float]] = {}
    for row in education_rows:
        for age in range(int(row["age_from"]), int(row["age_to"]) + 1):
            education.setdefault((age, row["sex"]), {})[row["education"]] = float(row["thousands"])

    marital: dict[int, dict[str, float]] = {}
    for row in _rows(profile.read_text("marital_status.csv")):
        for age in range(int(row["age_from"]), int(row["age_to"]) + 1):
            marital.setdefault(age, {})[row["status"]] = float(row["percent"])

    migration: dict[tuple[int, str], dict[str, float]] = {}
    for row in _rows(profile.read_text("migration.csv")):
        for age in range(int(row["age_from"]), int(row["age_to"]) + 1):
            migration[age, row["sex"]] = {m: float(row[m]) for m in MIGRATION}

    countries = tuple(
        CountryRow(
            code=r["code"],
            name=r["name"],
            region=r["region"],
            subregion=r["subregion"],
            foreigners=int(r["foreigners_in_germany"] or 0),
        )
        for r in _rows(profile.read_text("countries.csv"))
    )
    religion: dict[str, dict[str, float]] = {}
    for row in _rows(profile.read_text("religion.csv")):
        religion.setdefault(row["code"], {})[row["religion"]] = float(row["people"])

    tables = DeTables(
        ages=ages,
        age_total={int(r["age"]): float(r["total"]) for r in age_rows},
        sex={int(r["age"]): {s: float(r[s]) for s in SEXES} for r in age_rows},
        education=education,
        education_levels=levels,
        marital={age: dict(row) for age, row in marital.items()},
        migration=migration,
        countries=countries,
        religion=religion,
        occupations=tuple(
            Occupation(r["occupation"], r["category"], int(r["age_from"]), int(r["age_to"]))
            for r in _rows(profile.read_text("occupation.csv"))
        ),
        sexuality={
            r["sexuality"]: float(r["percent"]) for r in _rows(profile.read_text("sexuality.csv"))
        },
    )
    _check_coverage(tables)
    return tables


def _check_coverage(t: DeTables) -> None:
    """Every adult age the draw can reach has a row in every conditional table."""
    adults = [a for a in t.ages if a >= 15]
    for age in adults:
        if age not in t.marital:
            raise DataFileError(f"de marital_status.csv: no band for age {age}")
        for sex in ("male", "female", "all"):
            if (age, sex) not in t.education:
                raise DataFileError(f"de education.csv: no row for age {age}, sex {sex}")
            if (age, sex) not in t.migration:
                raise DataFileError(f"de migration.csv: no row for age {age}, sex {sex}")
    codes = {c.code for c in t.countries}
    if GERMANY not in codes or set(t.religion) != codes:
        raise DataFileError("de countries.csv and religion.csv must list the same countries")
