"""The countries table's rows: every profile's countries, one row per ISO alpha-3 code.

Why one merged list: personas of every profile share the `countries` table (a persona's origin is
a foreign key into it). A country both profiles know keeps the world profile's name and UN M49
sub-region, which splits Sub-Saharan Africa and Latin America into intermediate regions where the
de table does not; so a balanced draw by sub-region sees one label per country whatever the pool.
"""

from __future__ import annotations

from functools import cache
from typing import NamedTuple

from biasbench.data import load_countries
from biasbench.population.de_tables import de_tables


class CountryLabels(NamedTuple):
    code: str
    name: str
    region: str
    subregion: str


@cache
def reference_countries() -> dict[str, CountryLabels]:
    rows = {
        c.code: CountryLabels(c.code, c.name, c.region, c.subregion) for c in de_tables().countries
    }
    rows |= {c.code: CountryLabels(c.code, c.name, c.region, c.subregion) for c in load_countries()}
    return rows
