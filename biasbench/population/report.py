"""What a user reads about a dataset's population in the Prefect UI: where the tables come from
(profile, version, file hashes, what is assumed) and the achieved shares next to the population's.

Plain functions returning markdown, so the flows only publish them (orchestration stays in flows/).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Final

from biasbench.population.compare import Comparison
from biasbench.population.profiles import Profile
from biasbench.population.shares import marginal_shares

MAX_ROWS: Final = 15
"""Rows per attribute in the report; the rest are summed into one line (origin has 186)."""


@dataclass(frozen=True, slots=True)
class PoolRequest:
    """A pool_gen task's parameters, as checked, drawn with and stored in the dataset's config."""

    population: str
    n: int
    temperature: float
    temperatures: dict[str, float] | None
    exclude: dict[str, list[str]] | None
    age_from: int | None
    age_to: int | None
    seed: int | None

    def parameters(self) -> dict[str, Any]:
        return asdict(self)

    def with_seed(self, seed: int) -> PoolRequest:
        return replace(self, seed=seed)


def provenance_markdown(
    population: str | None,
    version: str | None,
    files: Mapping[str, str] | None,
    assumed: Sequence[str],
) -> list[str]:
    if population is None:
        return ["Population: not recorded (drawn before provenance was kept).", ""]
    lines = [f"Population profile **{population}**, version {version or 'not recorded'}.", ""]
    if files:
        lines += ["| file | sha256 |", "|---|---|"]
        lines += [f"| `{name}` | `{digest}` |" for name, digest in sorted(files.items())]
        lines.append("")
    if assumed:
        lines += ["**Assumed** (not from a published table):", ""]
        lines += [f"- {item}" for item in assumed]
        lines.append("")
    return lines


def marginals_markdown(comparison: Comparison) -> list[str]:
    lines = ["## Achieved shares next to the population's", ""]
    for attribute, row in comparison.rows.items():
        distance = comparison.distance(attribute)
        lines += [
            f"### {attribute} (total variation distance {distance:.4f})",
            "",
            "| value | pool | population |",
            "|---|---:|---:|",
        ]
        items = list(row.items())
        lines += [f"| {v} | {a:.2%} | {p:.2%} |" for v, (a, p) in items[:MAX_ROWS]]
        if len(items) > MAX_ROWS:
            rest_a = sum(a for _, (a, _) in items[MAX_ROWS:])
            rest_p = sum(p for _, (_, p) in items[MAX_ROWS:])
            lines.append(f"| {len(items) - MAX_ROWS} others | {rest_a:.2%} | {rest_p:.2%} |")
        lines.append("")
    return lines


def pool_report(
    dataset_id: int, request: PoolRequest, profile: Profile, comparison: Comparison
) -> str:
    options = f"temperature {request.temperature}"
    if request.temperatures:
        options += f", per step {request.temperatures}"
    if request.exclude:
        options += f", excluded {request.exclude}"
    lines = [
        f"# Pool dataset {dataset_id}",
        "",
        f"{request.n:,} personas, {options}, seed {request.seed}.",
        "",
        *provenance_markdown(profile.name, profile.version, profile.files, profile.assumed),
        *marginals_markdown(comparison),
    ]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class DatasetPopulation:
    """A dataset's provenance as stored: its profile and the pool's population shares by axis."""

    pool_dataset_id: int | None
    population: str | None
    version: str | None
    files: Mapping[str, str] | None
    assumed: Sequence[str]
    population_shares: Mapping[str, Mapping[str, float]]


def balanced_report(
    new_id: int,
    source_id: int,
    marginals: Mapping[str, Mapping[str, int]],
    targets: Mapping[str, Mapping[str, int]],
    provenance: DatasetPopulation,
) -> str:
    """Counts next to the balancing target and the population's share (as in the pool's profile,
    for the pool's ages)."""
    pool = provenance.pool_dataset_id
    lines = [f"# Balanced dataset {new_id} (from dataset {source_id}, pool {pool})", ""]
    lines += provenance_markdown(
        provenance.population, provenance.version, provenance.files, provenance.assumed
    )
    for axis, counts in marginals.items():
        own = marginal_shares(counts)
        population = provenance.population_shares.get(axis, {})
        lines += [
            f"## {axis}",
            "",
            "| value | count | share | target | population |",
            "|---|---:|---:|---:|---:|",
        ]
        for value, count in sorted(counts.items()):
            share = population.get(value)
            shown = f"{share:.2%}" if share is not None else "–"
            target = targets.get(axis, {}).get(value, "")
            lines.append(f"| {value} | {count} | {own.get(value, 0.0):.2%} | {target} | {shown} |")
        lines.append("")
    return "\n".join(lines)
