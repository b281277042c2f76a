"""The `world` profile's manifest: today's illustrative world tables, each marked for what it is.

Why kept at all: existing pools were drawn from it and stay reproducible. Why marked: none of its
weights was converted from a published table (distributions.json and countries.json say so
themselves: "illustrative", "roughly after", "approximate"), so every table is `assumed`, and
every dataset drawn from it says so in its report. Use `de` for published figures.

    python -m biasbench.data.world_manifest     # after editing countries.json or distributions.json
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Final

DATA_DIR: Final = Path(__file__).parent
FILES: Final = ("countries.json", "distributions.json")

BODY: Final[dict[str, Any]] = {
    "name": "world",
    "version": "1.0",
    "description": "Illustrative world adult population (the project's first profile).",
    "licence": "project-authored illustrative weights; no third-party table is reproduced",
    "tables": {
        "distributions.json:age": {
            "source": "rounded shares roughly after UN World Population Prospects 2022, not "
            "converted from the table",
            "basis": "assumed",
        },
        "distributions.json:gender": {"source": "illustrative", "basis": "assumed"},
        "distributions.json:education": {"source": "illustrative", "basis": "assumed"},
        "distributions.json:occupation": {"source": "illustrative", "basis": "assumed"},
        "distributions.json:marriage_status": {"source": "illustrative", "basis": "assumed"},
        "distributions.json:migration_status": {"source": "illustrative", "basis": "assumed"},
        "distributions.json:sexuality": {"source": "illustrative", "basis": "assumed"},
        "countries.json:population": {
            "source": "UN WPP 2022 in millions, rounded, a selection of countries",
            "basis": "assumed",
        },
        "countries.json:religion": {
            "source": "after Pew Research Center 2012 (2010 estimates), approximate",
            "basis": "assumed",
        },
    },
    "gaps": {"ages": "18-90; older ages are not drawn"},
    "assumed": [
        "distributions.json: every table (age, gender, education, occupation, marriage_status, "
        "migration_status, sexuality)",
        "countries.json: population and religion shares (approximate, a selection of countries)",
    ],
}


def manifest() -> dict[str, Any]:
    files = {name: hashlib.sha256((DATA_DIR / name).read_bytes()).hexdigest() for name in FILES}
    return {**BODY, "files": files}


def write() -> None:
    target = DATA_DIR / "profiles" / "world" / "manifest.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(manifest(), indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    write()
