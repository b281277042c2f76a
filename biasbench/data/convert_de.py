"""Convert the original study's German population tables into the `de` profile's tidy tables.

Why a script and not hand edits: the shipped tables must be traceable to the publishers' figures.
The source files sit unchanged in `profiles/de/source/` (copied from the original study, see its
SOURCES.md); this script is the only way from them to the tidy tables the sampler reads, and it
writes the manifest with the sha256 of every file, so a figure in a dataset can be followed back
to the exact bytes it came from. Run it again after changing a source file:

    python -m biasbench.data.convert_de [--iso-codes /usr/share/iso-codes/json/iso_3166-1.json]

What it changes besides the layout (each also stated in the manifest):
- German labels get English keys (sex, school-leaving qualification); counts stay as published.
- Marital-status bands share their boundary ages in the source (20-25, 25-30, ...); the original
  gave a shared age to the later band, so the tidy bands end one year before the next one starts.
- Countries get ISO 3166-1 alpha-3 codes (the project's country key) from their numeric code,
  read from Debian's iso-codes; Kosovo has none and gets the common user-assigned `XKX`.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

from biasbench.data.de_manifest import MANIFEST_BODY

PROFILE_DIR: Final = Path(__file__).parent / "profiles" / "de"
SOURCE_DIR: Final = PROFILE_DIR / "source"
ISO_CODES: Final = Path("/usr/share/iso-codes/json/iso_3166-1.json")

AGE_FILE: Final = "altersaufbau-bevoelkerung-deutschland-zensus-2022-adjusted.csv"
EDUCATION_FILE: Final = "education_population_distribution_2024.csv"
MARITAL_FILE: Final = "familienstand-altersgruppen.csv"
MIGRATION_FILE: Final = "migration_population_distribution.csv"
COUNTRIES_FILE: Final = "countries_religion_foreigner.csv"
OCCUPATION_FILE: Final = "occupation.csv"

SEX: Final = {"männlich": "male", "weiblich": "female", "Insgesamt": "all"}
"""Destatis' sex labels; `all` is the total row, which the draw uses for `diverse`."""

EDUCATION: Final = {
    "Noch in schulischer Ausbildung": "still_in_school",
    "Ohne allgemeinen Schulabschluss": "no_school_leaving_certificate",
    "Haupt- (Volks-)schulabschluss": "lower_secondary_certificate",
    "Realschule oder gleichwertiger Abschluss": "intermediate_secondary_certificate",
    "Abschluss der polytechnischen Oberschule": "polytechnic_secondary_certificate",
    "Fachhochschul- oder Hochschulreife": "university_entrance_qualification",
}
"""Mikrozensus' highest school-leaving qualification, in English (the persona's `education`)."""

RELIGIONS: Final = (
    "Christians",
    "Muslims",
    "Religiously_unaffiliated",
    "Buddhists",
    "Hindus",
    "Jews",
    "Other_religions",
)
KOSOVO: Final = ("383", "XKX")


def _read(path: Path, sep: str = ";") -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter=sep))


def _number(text: str) -> int:
    """A count as published: `,` is the thousands separator, `.0` a float artefact."""
    cleaned = text.replace(",", "").strip()
    return int(float(cleaned)) if cleaned else 0


def _csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _ages(src: Path) -> str:
    rows = _read(src / AGE_FILE)
    return _csv(
        ("age", "total", "male", "female", "diverse"),
        (
            (
                int(r["age"]),
                _number(r["total"]),
                _number(r["male_adjusted"]),
                _number(r["female_adjusted"]),
                _number(r["diverse"]),
            )
            for r in rows
        ),
    )


def _education(src: Path) -> str:
    rows = sorted(
        _read(src / EDUCATION_FILE),
        key=lambda r: (
            SEX[r["Geschlecht"]],
            int(r["age_from"]),
            list(EDUCATION).index(r["Schulabschluss"]),
        ),
    )
    return _csv(
        ("sex", "age_from", "age_to", "education", "label_de", "thousands"),
        (
            (
                SEX[r["Geschlecht"]],
                int(r["age_from"]),
                int(r["age_to"]),
                EDUCATION[r["Schulabschluss"]],
                r["Schulabschluss"],
                _number(r["Anzahl"]),
            )
            for r in rows
        ),
    )


def _marital(src: Path) -> str:
    rows = _read(src / MARITAL_FILE)
    out = []
    for i, r in enumerate(rows):
        age_to = int(r["to"])
        if i + 1 < len(rows):
            age_to = min(age_to, int(rows[i + 1]["from"]) - 1)
        for status in ("single", "married", "widowed", "divorced"):
            out.append((int(r["from"]), age_to, status, r[status]))
    return _csv(("age_from", "age_to", "status", "percent"), out)


def _migration(src: Path) -> str:
    return _csv(
        ("sex", "age_from", "age_to", "with_migration", "without_migration"),
        (
            (
                SEX[r["gender"]],
                int(r["age_from"]),
                int(r["age_to"]),
                _number(r["with_migration"]),
                _number(r["without_migration"]),
            )
            for r in _read(src / MIGRATION_FILE)
        ),
    )


def _alpha3(iso_codes: Path) -> dict[str, str]:
    """ISO 3166-1 numeric code (as written in the source, no leading zeros) -> alpha-3."""
    document = json.loads(iso_codes.read_text(encoding="utf-8"))
    codes = {str(int(c["numeric"])): c["alpha_3"] for c in document["3166-1"]}
    codes[KOSOVO[0]] = KOSOVO[1]
    return codes


def _countries(src: Path, iso_codes: Path) -> tuple[str, str]:
    alpha3 = _alpha3(iso_codes)
    rows = _read(src / COUNTRIES_FILE)
    countries, religion = [], []
    for r in rows:
        code = alpha3[r["country-code"]]
        foreigners = _number(r["foreigners"]) if r["foreigners"].strip() else ""
        countries.append(
            (
                code,
                r["country_code_alpha2"],
                r["country"],
                r["country_de"],
                r["region_y"],
                r["sub-region"],
                _number(r["population"]),
                foreigners,
            )
        )
        religion += [(code, name, _number(r[name])) for name in RELIGIONS]
    header = ("code", "alpha2", "name", "name_de", "region", "subregion", "population")
    return (
        _csv((*header, "foreigners_in_germany"), countries),
        _csv(("code", "religion", "people"), religion),
    )


def _occupations(src: Path) -> str:
    return _csv(
        ("occupation", "occupation_de", "category", "age_from", "age_to"),
        (
            (r["job_en"], r["job_de"], r["category"], int(r["from_age"]), int(r["to_age"]))
            for r in _read(src / OCCUPATION_FILE, sep=",")
        ),
    )


def _sexuality() -> str:
    return _csv(
        ("sexuality", "percent"),
        (("heterosexual", "98.1"), ("homosexual", "1.2"), ("bisexual", "0.7")),
    )


def convert(src: Path = SOURCE_DIR, iso_codes: Path = ISO_CODES) -> dict[str, str]:
    """The tidy tables as file name -> CSV text (nothing written)."""
    countries, religion = _countries(src, iso_codes)
    return {
        "age_sex.csv": _ages(src),
        "education.csv": _education(src),
        "marital_status.csv": _marital(src),
        "migration.csv": _migration(src),
        "countries.csv": countries,
        "religion.csv": religion,
        "occupation.csv": _occupations(src),
        "sexuality.csv": _sexuality(),
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest(profile_dir: Path) -> dict[str, Any]:
    """The manifest: the fixed description (de_manifest.py) plus the hash of every file, keyed
    by its path under biasbench/data/ (where every profile's manifest paths start)."""
    body = json.loads(json.dumps(MANIFEST_BODY))
    files = sorted(
        p.relative_to(profile_dir).as_posix()
        for p in profile_dir.rglob("*")
        if p.is_file() and p.name != "manifest.json"
    )
    body["files"] = {f"profiles/de/{name}": sha256(profile_dir / name) for name in files}
    return dict(body)


def write(profile_dir: Path = PROFILE_DIR, iso_codes: Path = ISO_CODES) -> None:
    for name, text in convert(profile_dir / "source", iso_codes).items():
        (profile_dir / name).write_text(text, encoding="utf-8")
    text = json.dumps(manifest(profile_dir), indent=2, ensure_ascii=False) + "\n"
    (profile_dir / "manifest.json").write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--profile-dir", type=Path, default=PROFILE_DIR)
    parser.add_argument("--iso-codes", type=Path, default=ISO_CODES)
    args = parser.parse_args()
    write(args.profile_dir, args.iso_codes)
    print(f"wrote the tidy tables and manifest.json of {args.profile_dir}")


if __name__ == "__main__":
    main()
