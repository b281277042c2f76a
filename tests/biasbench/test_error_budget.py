"""When the failed items of a pass say the LLM server is broken rather than flaky."""

from __future__ import annotations

import pytest

from biasbench.error_budget import MIN_SAMPLE, ErrorBudget
from biasbench.errors import LLMErrorShareExceeded, is_critical


def test_failures_within_the_share_of_the_whole_pass_never_stop_it() -> None:
    budget = ErrorBudget(total=10, max_share=0.2)
    for failed in [True, True] + [False] * 8:  # 2 of 10: exactly the share, not above it
        budget.record(server_failed=failed)
    assert (budget.failed, budget.finished) == (2, 10)


def test_the_failure_that_puts_the_pass_above_the_share_stops_it_at_once() -> None:
    budget = ErrorBudget(total=10, max_share=0.2)
    budget.record(server_failed=True)
    budget.record(server_failed=True)
    with pytest.raises(LLMErrorShareExceeded, match=r"3 of 3 items .* error: HTTP 503") as info:
        budget.record(server_failed=True, detail="HTTP 503")
    assert not is_critical(info.value)


def test_a_long_pass_stops_once_the_share_so_far_is_above_it_after_the_first_items() -> None:
    budget = ErrorBudget(total=1_000_000, max_share=0.2)
    with pytest.raises(LLMErrorShareExceeded) as info:
        for _ in range(MIN_SAMPLE):
            budget.record(server_failed=False)
            budget.record(server_failed=True)
    assert budget.finished == MIN_SAMPLE  # judged as soon as the sample is large enough
    assert str(info.value).startswith(f"{MIN_SAMPLE // 2} of {MIN_SAMPLE} items")


def test_a_share_of_zero_stops_at_the_first_failure() -> None:
    budget = ErrorBudget(total=100, max_share=0.0)
    budget.record(server_failed=False)
    with pytest.raises(LLMErrorShareExceeded):
        budget.record(server_failed=True)
