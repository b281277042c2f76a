"""The shipped profiles: converted shares equal the source tables, every file is hashed, every
table names its source or says it is assumed, and a changed file is refused."""

from __future__ import annotations

import csv
import hashlib
import shutil
from importlib import resources
from pathlib import Path

import pytest

from biasbench.data import DataFileError
from biasbench.data.convert_de import EDUCATION, ISO_CODES, SEX, convert, manifest
from biasbench.data.world_manifest import manifest as world_manifest
from biasbench.errors import InvalidConfig
from biasbench.population.de_tables import de_tables, table_sex
from biasbench.population.profiles import PROFILES, check_population, load_profile, read_profile

DATA = Path(str(resources.files("biasbench.data")))
SOURCE = DATA / "profiles" / "de" / "source"


def source_rows(name: str, sep: str = ";") -> list[dict[str, str]]:
    with (SOURCE / name).open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter=sep))


def number(text: str) -> float:
    return float(text.replace(",", "")) if text.strip() else 0.0


def shares(weights: dict[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {k: w / total for k, w in weights.items() if w > 0}


def test_the_age_and_sex_shares_are_the_zensus_rows() -> None:
    tables = de_tables()
    for row in source_rows("altersaufbau-bevoelkerung-deutschland-zensus-2022-adjusted.csv"):
        age = int(row["age"])
        assert tables.age_total[age] == number(row["total"])
        published = {"male": row["male_adjusted"], "female": row["female_adjusted"]}
        for sex, value in (published | {"diverse": row["diverse"]}).items():
            assert tables.sex[age][sex] == number(value), (age, sex)


def test_education_shares_given_age_and_sex_are_the_mikrozensus_rows() -> None:
    tables = de_tables()
    by_band: dict[tuple[str, int, int], dict[str, float]] = {}
    for row in source_rows("education_population_distribution_2024.csv"):
        key = (SEX[row["Geschlecht"]], int(row["age_from"]), int(row["age_to"]))
        by_band.setdefault(key, {})[EDUCATION[row["Schulabschluss"]]] = number(row["Anzahl"])
    assert len(by_band) == 21  # 7 age bands x (male, female, all)
    for (sex, first, last), published in by_band.items():
        for age in (first, last):
            assert shares(dict(tables.education[age, sex])) == pytest.approx(shares(published))


def test_marital_status_shares_follow_the_later_band_at_a_shared_age() -> None:
    tables = de_tables()
    rows = source_rows("familienstand-altersgruppen.csv")
    for i, row in enumerate(rows):
        published = {s: number(row[s]) for s in ("single", "married", "widowed", "divorced")}
        last = int(row["to"]) if i + 1 == len(rows) else int(rows[i + 1]["from"]) - 1
        for age in {int(row["from"]), last}:
            assert shares(dict(tables.marital[age])) == pytest.approx(shares(published)), age
    assert tables.marital[25] == tables.marital[29] != tables.marital[24]


def test_migration_shares_given_age_and_sex_are_the_mikrozensus_rows() -> None:
    tables = de_tables()
    for row in source_rows("migration_population_distribution.csv"):
        sex = SEX[row["gender"]]
        published = {m: number(row[m]) for m in ("with_migration", "without_migration")}
        for age in (int(row["age_from"]), int(row["age_to"])):
            assert dict(tables.migration[age, sex]) == published
    assert table_sex("diverse") == "all"


def test_origin_and_religion_shares_are_the_foreigner_and_pew_rows() -> None:
    tables = de_tables()
    rows = source_rows("countries_religion_foreigner.csv")
    by_name = {c.name: c for c in tables.countries}
    assert len(by_name) == len(rows) == 186
    for row in rows:
        country = by_name[row["country"]]
        assert country.foreigners == number(row["foreigners"])
        published = {r: number(row[r]) for r in tables.religion[country.code]}
        assert dict(tables.religion[country.code]) == published
        assert country.subregion == row["sub-region"]
    assert by_name["Germany"].code == "DEU" and by_name["Turkey"].code == "TUR"
    assert by_name["Namibia"].code == "NAM" and by_name["Kosovo"].code == "XKX"


def test_occupations_keep_their_plausible_ages() -> None:
    rows = source_rows("occupation.csv", sep=",")
    assert [(o.name, o.age_from, o.age_to) for o in de_tables().occupations] == [
        (r["job_en"], int(r["from_age"]), int(r["to_age"])) for r in rows
    ]


@pytest.mark.parametrize("name", PROFILES)
def test_every_file_is_hashed_and_every_table_has_a_source_or_says_assumed(name: str) -> None:
    profile = load_profile(name)
    for file, digest in profile.files.items():
        assert hashlib.sha256((DATA / file).read_bytes()).hexdigest() == digest
    tables = profile.manifest["tables"]
    assert tables and profile.manifest["licence"]
    for table, entry in tables.items():
        assert len(entry["source"]) > 10, table
        assert entry["basis"] in ("statistic", "assumed"), table
        if entry["basis"] == "assumed":
            assert any(table.split(":")[0] in item for item in profile.assumed), table


def test_the_de_manifest_lists_every_shipped_file_and_the_gaps() -> None:
    profile_dir = DATA / "profiles" / "de"
    shipped = {
        f"profiles/de/{p.relative_to(profile_dir).as_posix()}"
        for p in profile_dir.rglob("*")
        if p.is_file() and p.name != "manifest.json"
    }
    assert set(load_profile("de").files) == shipped
    assert manifest(profile_dir)["files"] == dict(load_profile("de").files)
    gaps = load_profile("de").manifest["gaps"]
    assert "Unknown" in gaps["children"] and "100" in gaps["oldest"]


def test_a_table_changed_without_its_manifest_is_refused(tmp_path: Path) -> None:
    shutil.copytree(DATA / "profiles", tmp_path / "profiles")
    assert read_profile("de", tmp_path).files == load_profile("de").files
    with (tmp_path / "profiles" / "de" / "sexuality.csv").open("a", encoding="utf-8") as f:
        f.write("asexual,1.0\n")
    with pytest.raises(DataFileError, match=r"sexuality\.csv has sha256"):
        read_profile("de", tmp_path)


def test_an_unknown_population_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidConfig) as refused:
        check_population("mars")
    assert refused.value.field == "population" and "de, world" in str(refused.value)


@pytest.mark.skipif(not ISO_CODES.exists(), reason="needs Debian's iso-codes for alpha-3 codes")
def test_the_conversion_reproduces_the_shipped_tables() -> None:
    for name, text in convert().items():
        assert (DATA / "profiles" / "de" / name).read_text(encoding="utf-8") == text, name


def test_the_world_manifest_is_the_one_its_script_writes() -> None:
    assert dict(load_profile("world").manifest) == world_manifest()
