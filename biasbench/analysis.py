"""The quick analysis shown at the end of a benchmark run (artifact and notification).

Why here and pure: the numbers in a run's summary must be reproducible from the stored rows
alone, so this takes plain tuples, touches no database and is tested by hand-computed examples.

Definitions (ratings are *normalized* first: `in` stays r, `rev` becomes 6 - r):
- error_share: (planned - results) / planned, 0 when nothing was planned;
- share_extreme / share_middle: share of normalized ratings equal to 1 or 5 / equal to 3;
- dual pairs: (persona, trait) with a result in both orders; a pair is consistent when
  rating_in == 6 - rating_rev; RMA is the share of consistent pairs and MAE the mean of
  |rating_in - (6 - rating_rev)|. Both are None without dual pairs.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class QuickAnalysis:
    """Counts and order-consistency figures of one run."""

    planned: int
    results: int
    failures: int
    error_share: float
    dual_pairs: int
    rma: float | None
    mae: float | None
    share_extreme: float | None
    share_middle: float | None

    def to_markdown(self) -> str:
        """A two-column table for a Prefect markdown artifact."""
        rows = [
            ("Planned requests", str(self.planned)),
            ("Results", str(self.results)),
            ("Failures (planned without result)", str(self.failures)),
            ("Error share", _percent(self.error_share)),
            ("Dual pairs (both orders)", str(self.dual_pairs)),
            ("RMA (order-consistent share)", _percent(self.rma)),
            ("MAE (in vs. mapped rev)", _number(self.mae)),
            ("Extreme answers (1 or 5)", _percent(self.share_extreme)),
            ("Middle answers (3)", _percent(self.share_middle)),
        ]
        lines = ["| Metric | Value |", "| --- | ---: |"]
        lines.extend(f"| {label} | {value} |" for label, value in rows)
        return "\n".join(lines)

    def summary_line(self) -> str:
        """One line for logs and notifications."""
        text = (
            f"{self.results}/{self.planned} results, {self.failures} failed "
            f"({_percent(self.error_share)} errors)"
        )
        if self.dual_pairs:
            text += (
                f"; {self.dual_pairs} dual pairs: RMA {_percent(self.rma)}, MAE {_number(self.mae)}"
            )
        if self.share_extreme is not None:
            text += (
                f"; extreme {_percent(self.share_extreme)}, middle {_percent(self.share_middle)}"
            )
        return text


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def quick_analysis(
    rows: Iterable[tuple[int, int, str, int]],
    *,
    planned: int,
    plan_keys: Collection[tuple[int, int, str]] | None = None,
) -> QuickAnalysis:
    """Summarise raw result rows (persona_id, trait_id, scale_order, raw_rating).

    A repeated (persona, trait, order) key counts once, the last row winning, so a re-run
    of a request cannot inflate the figures. With `plan_keys`, only rows of those keys count:
    a run resumed after a trait was deactivated keeps the answers outside its current plan,
    and they must not make up for planned questions still unanswered. Raises ValueError on an
    unknown scale order or a rating outside 1..5, which would mean the stored data is corrupt.
    """
    if planned < 0:
        raise ValueError(f"planned must be >= 0, got {planned}")
    latest: dict[tuple[int, int, str], int] = {}
    for persona_id, trait_id, order, rating in rows:
        if order not in ("in", "rev"):
            raise ValueError(f"unknown scale order {order!r}")
        if not 1 <= rating <= 5:
            raise ValueError(f"rating out of range 1..5: {rating}")
        key = (persona_id, trait_id, order)
        if plan_keys is None or key in plan_keys:
            latest[key] = rating

    results = len(latest)
    failures = max(planned - results, 0)
    normalized = [r if order == "in" else 6 - r for (_, _, order), r in latest.items()]

    deviations = [
        abs(rating - (6 - latest[(p, t, "rev")]))
        for (p, t, order), rating in latest.items()
        if order == "in" and (p, t, "rev") in latest
    ]
    pairs = len(deviations)
    return QuickAnalysis(
        planned=planned,
        results=results,
        failures=failures,
        error_share=failures / planned if planned else 0.0,
        dual_pairs=pairs,
        rma=sum(d == 0 for d in deviations) / pairs if pairs else None,
        mae=sum(deviations) / pairs if pairs else None,
        share_extreme=(sum(r in (1, 5) for r in normalized) / results if results else None),
        share_middle=sum(r == 3 for r in normalized) / results if results else None,
    )
