"""The fixed part of the `de` profile's manifest: what each table is, where it comes from, how the
draw uses it and what it does where a table has no figure. convert_de.py adds the file hashes.

Why in code and not only in the JSON: the conversion writes manifest.json from this, so the
descriptions cannot drift from the files they describe (a hand edit of the JSON would be
overwritten, and the hashes would catch a hand edit of a table)."""

from __future__ import annotations

from typing import Any, Final

DESTATIS_LICENCE: Final = (
    "Destatis figures: Datenlizenz Deutschland – Namensnennung – Version 2.0 "
    "(source: Statistisches Bundesamt (Destatis)). Pew Research Center figures: free to use "
    "with attribution. UN M49 regions: public. Occupation list and sexuality shares: from the "
    "original study (ltreme/Social-Bias-Benchmark, commit 2dab7d7), see 'assumed'."
)

MANIFEST_BODY: Final[dict[str, Any]] = {
    "name": "de",
    "version": "2024.1",
    "description": (
        "People living in Germany, as the original study (ltreme/Social-Bias-Benchmark) "
        "sampled them: Zensus 2022 age structure, Mikrozensus 2024 education and migration "
        "history, Destatis marital status, foreign citizens by country, Pew 2020 religion."
    ),
    "licence": DESTATIS_LICENCE,
    "conversion": "python -m biasbench.data.convert_de (source/ -> tidy tables + this file)",
    "tables": {
        "age_sex.csv": {
            "source": "Destatis, Zensus 2022 age structure, by single year of age 0-100",
            "from": "source/altersaufbau-bevoelkerung-deutschland-zensus-2022-adjusted.csv",
            "basis": "statistic",
            "note": (
                "column 'diverse' is assumed: the original study moved a small share of each "
                "year of age (none below 4, 1 % in childhood, 0.2 % at the oldest ages) from "
                "male/female into 'diverse'; 'total' is the published count."
            ),
        },
        "education.csv": {
            "source": "Destatis, Mikrozensus 2024, GENESIS 12211-0100 family: people aged 15+ by "
            "sex, age band and highest school-leaving qualification (thousands)",
            "from": "source/education_population_distribution_2024.csv",
            "basis": "statistic",
        },
        "marital_status.csv": {
            "source": "Destatis, population by marital status and age band (percent)",
            "from": "source/familienstand-altersgruppen.csv",
            "basis": "statistic",
            "note": "source bands share boundary ages; a shared age belongs to the later band "
            "(as in the original), so tidy bands end one year before the next starts",
        },
        "migration.csv": {
            "source": "Destatis, Mikrozensus 2024, GENESIS 12211-0200: people with / without a "
            "migration history by age band and sex",
            "from": "source/migration_population_distribution.csv",
            "basis": "statistic",
        },
        "countries.csv": {
            "source": "foreign citizens in Germany by citizenship: Destatis; population 2020: "
            "Pew Research Center; region and sub-region: UN M49; alpha-3 codes: ISO 3166-1 "
            "(Debian iso-codes, Kosovo: user-assigned XKX)",
            "from": "source/countries_religion_foreigner.csv",
            "basis": "statistic",
            "note": "Namibia's alpha-2 code 'NA' was read as missing by the original, which "
            "never drew Namibia; here it is drawn like every other country.",
        },
        "religion.csv": {
            "source": "Pew Research Center, Religious Composition 2010-2020, 2020 estimates "
            "(people per religion group and country)",
            "from": "source/countries_religion_foreigner.csv",
            "basis": "statistic",
        },
        "occupation.csv": {
            "source": "occupation list with the ages in which each is plausible, compiled by "
            "the original study's authors (not a statistic)",
            "from": "source/occupation.csv",
            "basis": "assumed",
            "note": "no weights: the draw is uniform over the occupations plausible at the "
            "persona's age, as in the original",
        },
        "sexuality.csv": {
            "source": "fixed shares in the original study's code (heterosexual 98.1 %, "
            "homosexual 1.2 %, bisexual 0.7 %), which names no publication",
            "from": "the original's sexuality_sampler.py",
            "basis": "assumed",
        },
    },
    "steps": [
        {"step": "age", "given": [], "table": "age_sex.csv:total", "temperature": True},
        {
            "step": "gender",
            "given": ["age"],
            "table": "age_sex.csv",
            "temperature": True,
            "exclude": "values",
        },
        {
            "step": "education",
            "given": ["age", "gender"],
            "table": "education.csv",
            "temperature": True,
            "exclude": "values",
            "note": "gender 'diverse' uses the table's total row ('all')",
        },
        {
            "step": "marriage_status",
            "given": ["age"],
            "table": "marital_status.csv",
            "temperature": True,
            "exclude": "values",
        },
        {
            "step": "migration_status",
            "given": ["age", "gender"],
            "table": "migration.csv",
            "temperature": True,
            "exclude": "values",
            "note": "gender 'diverse' uses the table's total row ('all')",
        },
        {
            "step": "origin",
            "given": ["migration_status"],
            "table": "countries.csv:foreigners_in_germany",
            "temperature": True,
            "exclude": "values (countries, alpha-3)",
            "note": "without a migration history: Germany (DEU); with: a country by its number "
            "of foreign citizens in Germany",
        },
        {
            "step": "religion",
            "given": ["origin"],
            "table": "religion.csv",
            "temperature": True,
            "exclude": "values",
            "note": "a religion with no people in the country stays "
            "impossible at every temperature",
        },
        {
            "step": "sexuality",
            "given": [],
            "table": "sexuality.csv",
            "temperature": True,
            "exclude": "values",
        },
        {
            "step": "occupation",
            "given": ["age"],
            "table": "occupation.csv",
            "temperature": False,
            "exclude": "categories",
            "note": "older than 67: retired; no occupation plausible at that age: unemployed",
        },
    ],
    "gaps": {
        "children": "the tables cover ages 0-100, but personas are adults: the draw covers "
        "ages 18-100 (an age range entirely below 18 is refused). So the education table's "
        "missing rows under 15 (the original answered 'Unknown') are never needed, nor are "
        "the occupations of children under 6 (the original answered 'unemployed').",
        "oldest": "age 100 is the Zensus' last row; ages above it are not drawn. Education "
        "uses its 75-100 band, migration its 65-100 band, marital status its 80-100 band for "
        "every age up to 100. Occupation: retired above 67, as in the original.",
        "temperature_zero_weights": "the original raised 0 to the power 1-T, which made an "
        "impossible value possible at T = 1 and infinite above; here a zero stays impossible.",
    },
    "assumed": [
        "age_sex.csv: the 'diverse' column (a share moved by the original study)",
        "occupation.csv: uniform over the plausible occupations (no statistic)",
        "sexuality.csv: fixed shares without a named publication",
    ],
}
