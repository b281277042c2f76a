"""The age bins every part of the project groups ages by.

Why fixed in code: balancing, reports and the conditional tables of distributions.json all key
on these labels, so they must not drift apart; the sampler checks that the data file uses
exactly these bins.

    label   ages
    18-29   18..29
    30-44   30..44
    45-59   45..59
    60-74   60..74
    75+     75..90 when sampling (MAX_AGE); older ages given to `age_bin` also count as 75+
"""

from __future__ import annotations

from typing import Final

from biasbench.errors import InvalidConfig

MIN_AGE: Final = 18
MAX_AGE: Final = 90

AGE_BINS: Final[tuple[tuple[str, int, int], ...]] = (
    ("18-29", 18, 29),
    ("30-44", 30, 44),
    ("45-59", 45, 59),
    ("60-74", 60, 74),
    ("75+", 75, MAX_AGE),
)
"""(label, youngest, oldest) of each bin, ascending and contiguous."""


def age_bin(age: int) -> str:
    """The label of the bin holding `age`; adults only (an age under 18 is an InvalidConfig)."""
    if isinstance(age, bool) or not isinstance(age, int):
        raise InvalidConfig("age", f"must be an integer, got {age!r}")
    if age < MIN_AGE:
        raise InvalidConfig("age", f"personas are adults: {age} < {MIN_AGE}")
    for label, _, oldest in AGE_BINS[:-1]:
        if age <= oldest:
            return label
    return AGE_BINS[-1][0]
