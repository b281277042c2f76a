"""Drawing a balanced set of personas from a pool.

Goal: choose exactly n distinct personas so that on every axis (gender, age bin, ...) the
counts of the values present in the pool are as even as the pool allows. Per axis that is a
water-filling target: a value with fewer members than an even share is taken completely, and
the rest of n is spread evenly (within 1) over the other values.

Why this is not plain stratification: the axes cross. Taking every Jewish persona also fixes
their genders, ages and subregions, so the per-axis targets must be met jointly, and where
axes are strongly dependent in the pool (religion and subregion are) they cannot all be met
at once. The search then minimises the total shortfall and excess, axis by axis in counts.

It works on *signatures* (a persona's tuple of values on all axes), of which a 20,000 pool
has a few thousand, instead of on personas:

1. Raking (iterative proportional fitting, as in survey calibration): inclusion probabilities
   p = min(1, product of one factor per value) are fitted so that every value's expected count
   meets its target. This spreads the selection over the pool in proportion to it, so the
   result looks like the pool within each value, and it leaves room for step 3.
2. Rounding: the expected counts per signature are rounded, in a seeded random order, each
   time in the direction that keeps the running rounding error of its values smallest.
3. Repair: one chosen persona is swapped for an unchosen one while that lowers the total
   distance to the targets (first for signatures that differ on one axis, then on two, then
   any); a swap within one axis is also taken when it spreads a deviation more evenly.

All randomness comes from one `random.Random(seed)`: the same pool, n, axes and seed give the
same selection, whatever the order of the pool entries (they are processed by id).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from biasbench.errors import InvalidConfig

DEFAULT_AXES: Final[tuple[str, ...]] = ("gender", "age_bin", "subregion", "religion", "sexuality")

_RAKING_SWEEPS: Final = 40
"""Upper limit of raking sweeps; feasible targets converge in far fewer."""
_RAKING_PATIENCE: Final = 3
"""Raking stops after this many sweeps without a smaller total error (contradicting targets)."""
_RAKING_TOLERANCE: Final = 0.02
"""Raking stops once every value's expected count is this close to its target."""


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


def water_fill(counts: Mapping[str, int], n: int) -> dict[str, tuple[int, int]]:
    """Per value, the (lowest, highest) count that is as even as `counts` (members in the pool)
    allow when n are drawn in total: scarce values are taken completely (lo = hi = count), the
    rest of n is split evenly over the others (lo = floor, hi = ceil of the even share).

    The result satisfies sum(lo) <= n <= sum(hi) whenever n <= sum(counts).
    """
    order = sorted(counts, key=lambda value: (counts[value], value))
    remaining, left = n, len(order)
    bounds: dict[str, tuple[int, int]] = {}
    for i, value in enumerate(order):
        if counts[value] * left <= remaining:  # no more than an even share: take them all
            bounds[value] = (counts[value], counts[value])
            remaining -= counts[value]
            left -= 1
            continue
        share, extra = divmod(remaining, left)
        for rest in order[i:]:
            bounds[rest] = (share, share + (1 if extra else 0))
        break
    return {value: bounds[value] for value in counts}


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


# --- the problem in integers ---------------------------------------------------------------


@dataclass(slots=True)
class _Problem:
    """The pool as signatures over global value indices (all axes' values numbered in one
    range), with every value's bounds."""

    axes: tuple[str, ...]
    values: list[list[str]]  # per axis, its values (sorted)
    axis_of: list[int]  # per value, its axis
    lo: list[int]  # per value
    hi: list[int]
    sigs: list[tuple[int, ...]]  # per signature, one value per axis
    members: list[list[int]]  # per signature, persona ids in a seeded random order
    sigs_of: list[list[int]]  # per value, the signatures that have it
    index: dict[tuple[int, ...], int]  # signature -> its number

    def values_of(self, axis: int) -> range:
        start = sum(len(v) for v in self.values[:axis])
        return range(start, start + len(self.values[axis]))


def _encode(
    pool: Sequence[Mapping[str, object]], n: int, axes: tuple[str, ...], rng: random.Random
) -> _Problem:
    entries = sorted(pool, key=lambda entry: int(entry["id"]))  # type: ignore[call-overload]
    values = [sorted({str(entry[axis]) for entry in entries}) for axis in axes]
    offsets = [0]
    for axis_values in values:
        offsets.append(offsets[-1] + len(axis_values))
    number = [
        {value: offsets[a] + i for i, value in enumerate(axis_values)}
        for a, axis_values in enumerate(values)
    ]
    index: dict[tuple[int, ...], int] = {}
    sigs: list[tuple[int, ...]] = []
    members: list[list[int]] = []
    for entry in entries:
        sig = tuple(number[a][str(entry[axis])] for a, axis in enumerate(axes))
        s = index.get(sig)
        if s is None:
            s = index[sig] = len(sigs)
            sigs.append(sig)
            members.append([])
        members[s].append(int(entry["id"]))  # type: ignore[call-overload]
    for ids in members:
        rng.shuffle(ids)

    n_values = offsets[-1]
    in_pool = [0] * n_values
    sigs_of: list[list[int]] = [[] for _ in range(n_values)]
    for s, sig in enumerate(sigs):
        for v in sig:
            in_pool[v] += len(members[s])
            sigs_of[v].append(s)
    axis_of = [a for a, axis_values in enumerate(values) for _ in axis_values]
    lo, hi = [0] * n_values, [0] * n_values
    for a, axis_values in enumerate(values):
        counts = {value: in_pool[offsets[a] + i] for i, value in enumerate(axis_values)}
        bounds = water_fill(counts, n)
        for i, value in enumerate(axis_values):
            lo[offsets[a] + i], hi[offsets[a] + i] = bounds[value]
    return _Problem(axes, values, axis_of, lo, hi, sigs, members, sigs_of, index)


# --- step 1: raking ------------------------------------------------------------------------


def _solve_factor(target: float, sizes: list[int], rest: list[float]) -> float:
    """The factor f with sum(size * min(1, f * r)) == target over one value's signatures
    (r: the product of their other factors). The left side is piecewise linear in f."""
    order = sorted(range(len(rest)), key=lambda i: -rest[i])  # first to reach the cap first
    capped = 0.0
    linear = math.fsum(sizes[i] * rest[i] for i in order)
    for j, i in enumerate(order):
        factor = (target - capped) / linear if linear > 0 else math.inf
        if factor * rest[i] <= 1.0:
            return factor
        capped += sizes[i]
        linear -= sizes[i] * rest[i]
        if j == len(order) - 1 or linear <= 0:
            break
    return 1.0 / rest[order[-1]]  # every signature capped: the target is the whole value


def _rake(problem: _Problem, n: int) -> list[float]:
    """Inclusion probability per signature, p = min(1, product of its values' factors), fitted
    so that each value's expected count sum(size * p) meets its (fractional) even target.

    Each sweep solves every value's factor exactly, given the others. Where the targets of two
    axes contradict each other in this pool, the factors drift apart without converging; so
    the sweep with the smallest total error wins, and raking stops once that stops improving.
    """
    sizes = [len(ids) for ids in problem.members]
    target = [float(lo) for lo in problem.lo]
    for a in range(len(problem.axes)):
        flexible = [v for v in problem.values_of(a) if problem.hi[v] > problem.lo[v]]
        extra = n - sum(problem.lo[v] for v in problem.values_of(a))
        for v in flexible:
            target[v] += extra / len(flexible)
    factor = [1.0] * len(target)
    for v in problem.values_of(0):
        factor[v] = n / sum(sizes)
    product = [factor[sig[0]] for sig in problem.sigs]
    best: list[float] = [min(1.0, p) for p in product]
    best_error, since_best = math.inf, 0
    for _ in range(_RAKING_SWEEPS):
        for v in range(len(target)):
            sigs = problem.sigs_of[v]
            rest = [product[s] / factor[v] for s in sigs]
            # a factor of 0 (a target of 0) would lose the other factors: keep it tiny instead
            new = max(_solve_factor(target[v], [sizes[s] for s in sigs], rest), 1e-12)
            for s, r in zip(sigs, rest, strict=True):
                product[s] = r * new
            factor[v] = new
        probability = [min(1.0, p) for p in product]
        expected = [0.0] * len(target)
        for s, sig in enumerate(problem.sigs):
            share = sizes[s] * probability[s]
            for v in sig:
                expected[v] += share
        errors = [abs(e - t) for e, t in zip(expected, target, strict=True)]
        if sum(errors) < best_error - _RAKING_TOLERANCE:
            best, best_error, since_best = probability, sum(errors), 0
        else:
            since_best += 1
        if max(errors) < _RAKING_TOLERANCE or since_best >= _RAKING_PATIENCE:
            break
    return best


# --- step 2: rounding ----------------------------------------------------------------------


def _round(problem: _Problem, probability: list[float], rng: random.Random) -> list[int]:
    """Members to take per signature: each expected count rounded down or up, whichever keeps
    the running rounding error of its values (and of the total) smaller."""
    error = [0.0] * (len(problem.lo) + 1)  # per value, then the total
    total = len(problem.lo)
    take = [0] * len(problem.sigs)
    order = list(range(len(problem.sigs)))
    rng.shuffle(order)
    for s in order:
        expected = len(problem.members[s]) * probability[s]
        down = math.floor(expected)
        fraction = expected - down
        touched = (*problem.sigs[s], total)
        if fraction > 1e-9:
            cost_down = sum(abs(error[v] - fraction) for v in touched)
            cost_up = sum(abs(error[v] + 1.0 - fraction) for v in touched)
            if cost_up < cost_down:
                down += 1
                fraction -= 1.0
            for v in touched:
                error[v] -= fraction
        take[s] = min(down, len(problem.members[s]))
    return take


# --- step 3: repair ------------------------------------------------------------------------


class _Selection:
    """Chosen members per signature and counts per value, with what a change would cost.

    The cost of a value is its distance to [lo, hi]; `add[v]` / `drop[v]` are the changes of
    that cost for one member more / fewer with value v (each -1, 0 or +1).
    """

    def __init__(self, problem: _Problem, take: list[int]) -> None:
        self.problem = problem
        self.free = [list(ids) for ids in problem.members]  # chosen from the end
        self.chosen: list[list[int]] = [[] for _ in problem.members]
        self.chosen_with: list[dict[int, None]] = [{} for _ in problem.lo]  # ordered sets
        self.count = [0] * len(problem.lo)
        for s, k in enumerate(take):
            for _ in range(k):
                self._take(s)
        self.add = [0] * len(problem.lo)
        self.drop = [0] * len(problem.lo)
        for v in range(len(problem.lo)):
            self._reprice(v)

    @property
    def size(self) -> int:
        return sum(len(c) for c in self.chosen)

    def distance(self, v: int) -> int:
        """How far value v's count is outside [lo, hi]."""
        count, lo, hi = self.count[v], self.problem.lo[v], self.problem.hi[v]
        return lo - count if count < lo else (count - hi if count > hi else 0)

    def _reprice(self, v: int) -> None:
        count, lo, hi = self.count[v], self.problem.lo[v], self.problem.hi[v]
        self.add[v] = 1 if count >= hi else (-1 if count < lo else 0)
        self.drop[v] = 1 if count <= lo else (-1 if count > hi else 0)

    def _take(self, s: int) -> None:
        self.chosen[s].append(self.free[s].pop())
        for v in self.problem.sigs[s]:
            self.count[v] += 1
            self.chosen_with[v][s] = None

    def take(self, s: int) -> None:
        """Choose one more (free) member of signature s."""
        self._take(s)
        for v in self.problem.sigs[s]:
            self._reprice(v)

    def give_back(self, s: int) -> None:
        """Return one chosen member of signature s to the free ones."""
        self.free[s].append(self.chosen[s].pop())
        for v in self.problem.sigs[s]:
            self.count[v] -= 1
            self._reprice(v)
            if not self.chosen[s]:
                del self.chosen_with[v][s]

    def swap(self, x: int, y: int) -> None:
        """Give back one chosen member of signature x, choose one free member of y."""
        self.give_back(x)
        self.take(y)


def _resize(selection: _Selection, n: int) -> None:
    """Rounding can miss n by a few: add or remove the members that cost least."""
    problem = selection.problem
    while selection.size < n:
        free = (s for s in range(len(problem.sigs)) if selection.free[s])
        selection.take(min(free, key=lambda s: sum(selection.add[v] for v in problem.sigs[s])))
    while selection.size > n:
        chosen = (s for s in range(len(problem.sigs)) if selection.chosen[s])
        selection.give_back(
            min(chosen, key=lambda s: sum(selection.drop[v] for v in problem.sigs[s]))
        )


def _transfers(selection: _Selection) -> list[tuple[int, int, int, int]]:
    """Every (gain, axis, u, v) where moving one member from value u to value v of the same
    axis changes the cost by gain < 0 on that axis, most promising first."""
    problem, add, drop = selection.problem, selection.add, selection.drop
    found = []
    for a in range(len(problem.axes)):
        values = problem.values_of(a)
        for u in values:
            if selection.chosen_with[u]:
                for v in values:
                    if v != u and drop[u] + add[v] < 0:
                        found.append((drop[u] + add[v], a, u, v))
    found.sort()
    return found


def _spreading_transfers(selection: _Selection) -> Iterator[tuple[int, int, int]]:
    """(axis, u, v) that keep the cost but move a member from a value further off target to
    one less far off (an excess from 5 over to 1 over): spreads deviations evenly."""
    problem, add, drop = selection.problem, selection.add, selection.drop
    for a in range(len(problem.axes)):
        values = problem.values_of(a)
        for u in values:
            if selection.chosen_with[u]:
                for v in values:
                    if v != u and drop[u] + add[v] == 0:
                        du, dv = selection.distance(u), selection.distance(v)
                        over_u, over_v = drop[u] < 0, add[v] > 0
                        under_u, under_v = drop[u] > 0, add[v] < 0
                        if (over_u and over_v and du > dv + 1) or (
                            under_u and under_v and dv > du + 1
                        ):
                            yield a, u, v


def _replace(sig: tuple[int, ...], axis: int, value: int) -> tuple[int, ...]:
    return (*sig[:axis], value, *sig[axis + 1 :])


def _find_swap(selection: _Selection) -> tuple[int, int] | None:
    """A swap (chosen signature x, free signature y) that lowers the cost, or None."""
    problem, add, drop, free = selection.problem, selection.add, selection.drop, selection.free
    index, sigs = problem.index, problem.sigs
    transfers = _transfers(selection)
    # x and y differ on one axis: the swap's gain is the transfer's
    for _, a, u, v in transfers:
        for x in selection.chosen_with[u]:
            y = index.get(_replace(sigs[x], a, v))
            if y is not None and free[y]:
                return x, y
    # ... on two axes
    n_axes = len(problem.axes)
    for gain, a, u, v in transfers:
        for x in selection.chosen_with[u]:
            sig_x = _replace(sigs[x], a, v)
            for b in range(n_axes):
                if b == a:
                    continue
                w_out = sig_x[b]
                budget = -gain - drop[w_out]  # add[w] must be below this
                for w in problem.values_of(b):
                    if w != w_out and add[w] < budget:
                        y = index.get(_replace(sig_x, b, w))
                        if y is not None and free[y]:
                            return x, y
    # ... anywhere: every improving swap has an axis whose transfer alone is negative
    for _, _, u, v in transfers:
        candidates = [y for y in problem.sigs_of[v] if free[y]]
        for x in selection.chosen_with[u]:
            sig_x = sigs[x]
            gone = [drop[w] for w in sig_x]
            for y in candidates:
                delta = 0
                for w, z, d in zip(sig_x, sigs[y], gone, strict=True):
                    if w != z:
                        delta += d + add[z]
                if delta < 0:
                    return x, y
    # no cost to gain: spread deviations within one axis (the other axes stay as they are)
    for a, u, v in _spreading_transfers(selection):
        for x in selection.chosen_with[u]:
            y = index.get(_replace(sigs[x], a, v))
            if y is not None and free[y]:
                return x, y
    return None


def _repair(selection: _Selection) -> None:
    """Apply cost-lowering swaps until there is none. Ends: every swap lowers the total
    distance, or keeps it and lowers the sum of squared distances of one axis."""
    while (swap := _find_swap(selection)) is not None:
        selection.swap(*swap)


# --- the result ----------------------------------------------------------------------------


def _report(selection: _Selection, n: int) -> BalancedSelection:
    problem = selection.problem
    marginals: dict[str, dict[str, int]] = {}
    targets: dict[str, dict[str, int]] = {}
    max_deviation: dict[str, int] = {}
    for a, axis in enumerate(problem.axes):
        indices = problem.values_of(a)
        names = problem.values[a]
        counts = {names[i]: selection.count[v] for i, v in enumerate(indices)}
        target = {names[i]: problem.lo[v] for i, v in enumerate(indices)}
        # n - sum(lo) of the values with room get their +1, preferably where it was achieved
        flexible = sorted(
            (i for i, v in enumerate(indices) if problem.hi[v] > problem.lo[v]),
            key=lambda i: (-selection.count[indices[i]], i),
        )
        for i in flexible[: n - sum(problem.lo[v] for v in indices)]:
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
    axis; values are compared as strings.

    Raises InvalidConfig naming the field: `n` (< 1 or more than the pool), `axes` (none,
    repeated, or not a key of the entries), `pool` (missing or duplicate ids), `seed`.
    """
    _validate(pool, n, seed, axes)
    rng = random.Random(seed)
    problem = _encode(pool, n, tuple(axes), rng)
    selection = _Selection(problem, _round(problem, _rake(problem, n), rng))
    _resize(selection, n)
    _repair(selection)
    return _report(selection, n)
