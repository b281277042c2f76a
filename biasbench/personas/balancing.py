"""Drawing a balanced set of personas from a pool.

Goal: choose exactly n distinct personas so that on every axis (gender, age bin, ...) the
counts of the values present in the pool are as even as the pool allows. Per axis that is a
water-filling target: a value with fewer members than an even share is taken completely, and
the rest of n is spread evenly (within 1) over the other values.

Why this is not plain stratification: the axes cross. Taking every Jewish persona also fixes
their genders, ages and subregions, so the per-axis targets must be met jointly, and where
axes are strongly dependent in the pool (religion and subregion are, in a pool sampled at a
low temperature) they cannot all be met at once. The search then minimises the *cost*: the
sum over all axis values of how far the count lies outside its target [lo, hi], i.e. the
number of persona-axis assignments off target. Among selections of equal cost it prefers the
one whose deviations sit on the later axes: name the axes in order of importance.

It works on *signatures* (a persona's tuple of values on all axes; a 20,000 pool has a few
thousand) instead of on personas:

1. Raking (iterative proportional fitting, as in survey calibration) fits inclusion
   probabilities p = min(1, product of one factor per value) so that every value's expected
   count meets its target. The start then looks like the pool within each value, which leaves
   the next steps room to move.
2. Rounding turns expected counts into counts, in a seeded random order, each time in the
   direction that keeps the running rounding error of the signature's values smallest.
3. Descent swaps one chosen persona for one unchosen persona while that lowers the cost. The
   search for a swap is complete (it finds one if any exists): for a chosen signature x, the
   cost change of a swap is a sum of one term per axis, and the unchosen signatures are held
   as bit sets per value, so a branch-and-bound over the axes intersects bit sets instead of
   scanning thousands of candidates.
4. If the cost is still above 0, annealing looks for a better optimum: a random chosen
   signature is swapped for its cheapest partner, a worse swap accepted with a probability
   that falls over a fixed number of steps. The descent then runs once more with the axes
   weighted so that equal-cost swaps which move deviation to a later axis count as better.
5. Last, descent alternates with spreading: swaps that keep the cost but even out a deviation
   over the values of one axis (5 over and 1 over become 4 and 2), between signatures that
   differ on that axis only.

All randomness comes from one `random.Random(seed)` and no step depends on the clock, so the
same pool, n, axes and seed give the same selection, whatever the order of the pool entries.

The problem in integers (signatures, targets) is in `signatures.py`, steps 1-2 in `raking.py`,
steps 3-5 in `swaps.py`; this module checks the input, runs the steps and reports.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from biasbench.errors import InvalidConfig
from biasbench.personas.raking import rake, round_counts
from biasbench.personas.signatures import encode, water_fill
from biasbench.personas.swaps import (
    Selection,
    anneal,
    anneal_steps,
    descend,
    priority_weights,
    resize,
    spread,
)

__all__ = ["DEFAULT_AXES", "BalancedSelection", "select_balanced", "water_fill"]

DEFAULT_AXES: Final[tuple[str, ...]] = ("gender", "age_bin", "subregion", "religion", "sexuality")


@dataclass(frozen=True, slots=True)
class BalancedSelection:
    """The chosen persona ids (sorted) and how even the result is.

    `marginals[axis][value]` is the achieved count of every value present in the pool,
    `targets[axis][value]` the water-filling target, and `max_deviation[axis]` the largest
    |count - target| on that axis (0 when the axis is met exactly). Where n is not divisible,
    some values' targets are one higher than others'; which ones is free, so those +1s go to
    the values that achieved them.
    """

    ids: list[int]
    marginals: dict[str, dict[str, int]]
    targets: dict[str, dict[str, int]]
    max_deviation: dict[str, int]


# --- validation ----------------------------------------------------------------------------


def _validate(pool: Sequence[Mapping[str, object]], n: int, seed: int, axes: Sequence[str]) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidConfig("n", f"must be an integer >= 1, got {n!r}")
    if n > len(pool):
        raise InvalidConfig("n", f"the pool has only {len(pool)} personas, cannot draw {n}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidConfig("seed", f"must be an integer, got {seed!r}")
    if isinstance(axes, str) or not axes:
        raise InvalidConfig("axes", "name at least one axis, e.g. ['gender', 'age_bin']")
    if len(set(axes)) != len(axes):
        raise InvalidConfig("axes", f"an axis is named twice: {list(axes)}")
    for axis in axes:
        if not isinstance(axis, str) or axis == "id":
            raise InvalidConfig("axes", f"not an axis: {axis!r}")
        missing = next((entry for entry in pool if axis not in entry), None)
        if missing is not None:
            raise InvalidConfig(
                "axes", f"unknown axis {axis!r}: not a key of the pool entries {sorted(missing)}"
            )
    seen: set[int] = set()
    for entry in pool:
        pid = entry.get("id")
        if isinstance(pid, bool) or not isinstance(pid, int):
            raise InvalidConfig("pool", f"every entry needs an integer 'id', got {pid!r}")
        if pid in seen:
            raise InvalidConfig("pool", f"duplicate id {pid}")
        seen.add(pid)


# --- the result ----------------------------------------------------------------------------


def _report(selection: Selection, n: int) -> BalancedSelection:
    problem = selection.problem
    marginals: dict[str, dict[str, int]] = {}
    targets: dict[str, dict[str, int]] = {}
    max_deviation: dict[str, int] = {}
    for axis, names, values in zip(problem.axes, problem.names, problem.values_of, strict=True):
        counts = {name: selection.count[v] for name, v in zip(names, values, strict=True)}
        target = {name: problem.lo[v] for name, v in zip(names, values, strict=True)}
        # n - sum(lo) of the values with room get their +1, preferably where it was achieved
        flexible = sorted(
            (i for i, v in enumerate(values) if problem.hi[v] > problem.lo[v]),
            key=lambda i: (-selection.count[values[i]], i),
        )
        for i in flexible[: n - sum(problem.lo[v] for v in values)]:
            target[names[i]] += 1
        marginals[axis] = counts
        targets[axis] = target
        max_deviation[axis] = max(abs(counts[name] - target[name]) for name in names)
    ids = sorted(pid for chosen in selection.chosen for pid in chosen)
    return BalancedSelection(
        ids=ids, marginals=marginals, targets=targets, max_deviation=max_deviation
    )


def select_balanced(
    pool: Sequence[Mapping[str, object]],
    n: int,
    *,
    seed: int = 42,
    axes: Sequence[str] = DEFAULT_AXES,
) -> BalancedSelection:
    """Choose n distinct personas of `pool` whose counts per axis value are as even as the pool
    allows (see the module doc). Each pool entry needs an integer "id" and a value for every
    axis; values are compared as strings. Where the pool cannot meet every axis' targets at
    once, the earlier axes in `axes` are kept closer to theirs.

    Raises InvalidConfig naming the field: `n` (< 1 or more than the pool), `axes` (none,
    repeated, or not a key of the entries), `pool` (missing or duplicate ids), `seed`.
    """
    _validate(pool, n, seed, axes)
    rng = random.Random(seed)
    problem = encode(pool, n, tuple(axes), rng)
    selection = Selection(problem, round_counts(problem, rake(problem, n), rng))
    resize(selection, n)
    descend(selection, rng)
    if selection.cost > 0 and any(selection.free_bits):
        selection = anneal(selection, rng, anneal_steps(problem, n))
        descend(selection, rng)
        selection = Selection(problem, selection.takes(), priority_weights(selection))
    # each round lowers (cost, squared distances within an axis): it ends
    while descend(selection, rng) | spread(selection):
        pass
    return _report(selection, n)
