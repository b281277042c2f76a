"""The quick analysis on a tiny example computed by hand."""

from __future__ import annotations

import pytest

from biasbench.analysis import QuickAnalysis, quick_analysis

# (persona, trait, order, raw rating); rev is normalized with 6 - r.
ROWS = [
    (1, 1, "in", 4),
    (1, 1, "rev", 2),  # -> 4: consistent, |4 - 4| = 0
    (1, 2, "in", 5),
    (1, 2, "rev", 3),  # -> 3: inconsistent, |5 - 3| = 2
    (2, 1, "rev", 5),  # -> 1, no partner
    (2, 2, "in", 3),  # no partner
]


def test_hand_computed_example() -> None:
    result = quick_analysis(ROWS, planned=8)
    assert result == QuickAnalysis(
        planned=8,
        results=6,
        failures=2,
        error_share=0.25,
        dual_pairs=2,
        rma=0.5,
        mae=1.0,
        share_extreme=2 / 6,  # normalized 4, 4, 5, 3, 1, 3
        share_middle=2 / 6,
    )


def test_repeated_key_counts_once_last_wins() -> None:
    rows = [*ROWS, (1, 2, "rev", 1)]  # (1, 2) becomes consistent: 6 - 1 = 5
    result = quick_analysis(rows, planned=8)
    assert result.results == 6
    assert result.rma == 1.0
    assert result.mae == 0.0


def test_only_the_keys_of_the_current_plan_count() -> None:
    # Trait 2 was deactivated before the run was resumed: its answers stay stored, but the plan
    # now has 4 questions, of which (2, 1, "in") is still unanswered.
    plan = {(1, 1, "in"), (1, 1, "rev"), (2, 1, "rev"), (2, 1, "in")}
    result = quick_analysis(ROWS, planned=4, plan_keys=plan)
    assert (result.results, result.failures, result.error_share) == (3, 1, 0.25)
    assert result.dual_pairs == 1 and result.rma == 1.0


def test_no_rows() -> None:
    result = quick_analysis([], planned=0)
    assert result.error_share == 0.0
    assert result.dual_pairs == 0
    assert result.rma is None and result.mae is None
    assert result.share_extreme is None and result.share_middle is None
    assert "n/a" in result.to_markdown()
    assert quick_analysis(iter([]), planned=10).error_share == 1.0


def test_no_dual_pairs() -> None:
    result = quick_analysis([(1, 1, "in", 1), (1, 2, "rev", 1)], planned=2)
    assert result.rma is None and result.mae is None
    assert result.share_extreme == 1.0


@pytest.mark.parametrize("row", [(1, 1, "up", 3), (1, 1, "in", 0), (1, 1, "rev", 6)])
def test_corrupt_rows_raise(row: tuple[int, int, str, int]) -> None:
    with pytest.raises(ValueError):
        quick_analysis([row], planned=1)


def test_rendering() -> None:
    result = quick_analysis(ROWS, planned=8)
    markdown = result.to_markdown()
    assert markdown.startswith("| Metric | Value |")
    assert "| RMA (order-consistent share) | 50.0% |" in markdown
    assert "| MAE (in vs. mapped rev) | 1.00 |" in markdown
    line = result.summary_line()
    assert "\n" not in line
    assert "6/8 results" in line and "RMA 50.0%" in line and "MAE 1.00" in line
