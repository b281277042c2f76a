"""The `world` profile's exact shares (its tables are all assumed; see its manifest), so that a
world pool's report has the same two columns as a `de` pool's."""

from __future__ import annotations

from collections import defaultdict

from biasbench.data import countries_by_code, load_distributions
from biasbench.population.shares import marginal_shares


def world_marginals(age_from: int | None, age_to: int | None) -> dict[str, dict[str, float]]:
    dist = load_distributions()
    lo = dist.age_bins[0].min_age if age_from is None else age_from
    hi = dist.age_bins[-1].max_age if age_to is None else age_to
    weights: dict[str, float] = {}
    for b in dist.age_bins:
        first, last = max(b.min_age, lo), min(b.max_age, hi)
        if first <= last:
            weights[b.label] = b.weight * (last - first + 1) / (b.max_age - b.min_age + 1)
    bins = marginal_shares(weights)
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    gender = marginal_shares(dist.gender)
    for label, p_bin in bins.items():
        out["age_bin"][label] += p_bin
        for sex, p_sex in gender.items():
            out["gender_x_age_bin"][f"{sex}|{label}"] += p_bin * p_sex
        for level, p_level in dist.education[label].items():
            out["education"][level] += p_bin * p_level
            for job, p_job in dist.occupation(label, level).items():
                out["occupation"][job] += p_bin * p_level * p_job
        for status, p in dist.marriage_status[label].items():
            out["marriage_status"][status] += p_bin * p
    countries = countries_by_code()
    origin = marginal_shares({code: c.population for code, c in countries.items()})
    for code, p_origin in origin.items():
        for religion, p in countries[code].religion.items():
            out["religion"][religion] += p_origin * p
    result = {attribute: dict(shares) for attribute, shares in out.items()}
    result |= {
        "gender": gender,
        "migration_status": marginal_shares(dist.migration_status),
        "origin": origin,
        "sexuality": marginal_shares(dist.sexuality),
    }
    return {k: {v: s for v, s in shares.items() if s > 0} for k, shares in result.items()}
