"""Drawing a balanced set of personas from a pool.

Goal: choose exactly n distinct personas so that on every axis (gender, age bin, ...) the counts
of the values present in the pool are as even as the pool allows. "As even as the pool allows"
is a water-filling target per axis: a value with fewer members than an even share is taken
completely, and what remains of n is spread evenly (within 1) over the other values.

Why not simply stratify: the axes cross. Taking every Jewish persona fixes their genders, ages
and subregions too, so the per-axis targets must be met jointly. The search works on
*signatures* (the tuple of a persona's values on all axes), of which a 20,000 pool has a few
thousand, instead of on personas:

1. Greedy, most constrained first: the value with the largest ratio of still-needed members to
   still-available candidates is served next, by the candidate signature that also serves the
   most urgent other needs. A signature is dropped for good once any of its values is full or
   would only use up slack an axis no longer has, so the greedy never overshoots a target.
2. Repair: if the greedy got stuck (the pool does not allow an exact solution, or the greedy
   cornered itself), swaps of one chosen persona for one unchosen persona are applied while they
   lower the total distance to the targets.

All ties are broken by one `random.Random(seed)`, so the same pool, n, axes and seed give the
same selection; the order of the pool entries does not matter (they are processed by id).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from biasbench.errors import InvalidConfig

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
                "axes", f"unknown axis {axis!r}: not a key of the pool entries ({sorted(missing)})"
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
    """The pool encoded as signatures over global value indices, with the per-value bounds."""

    axes: tuple[str, ...]
    values: list[list[str]]  # per axis, its values (sorted)
    axis_of: list[int]  # per global value index, its axis
    lo: list[int]  # per global value index
    hi: list[int]
    sigs: list[tuple[int, ...]]  # per signature, one global value index per axis
    members: list[list[int]]  # per signature, persona ids in a seeded random order
    rank: list[float]  # per signature, a seeded random tie-breaker
    sigs_of: list[list[int]]  # per global value index, the signatures that have it


def _encode(
    pool: Sequence[Mapping[str, object]], n: int, axes: tuple[str, ...], rng: random.Random
) -> _Problem:
    entries = sorted(pool, key=lambda entry: int(entry["id"]))  # type: ignore[call-overload]
    values = [sorted({str(entry[axis]) for entry in entries}) for axis in axes]
    offsets = [0]
    for axis_values in values:
        offsets.append(offsets[-1] + len(axis_values))
    index = [
        {value: offsets[a] + i for i, value in enumerate(axis_values)}
        for a, axis_values in enumerate(values)
    ]
    sig_ids: dict[tuple[int, ...], int] = {}
    sigs: list[tuple[int, ...]] = []
    members: list[list[int]] = []
    for entry in entries:
        sig = tuple(index[a][str(entry[axis])] for a, axis in enumerate(axes))
        s = sig_ids.get(sig)
        if s is None:
            s = sig_ids[sig] = len(sigs)
            sigs.append(sig)
            members.append([])
        members[s].append(int(entry["id"]))  # type: ignore[call-overload]
    for ids in members:
        rng.shuffle(ids)
    rank = [rng.random() for _ in sigs]

    total = offsets[-1]
    in_pool = [0] * total
    sigs_of: list[list[int]] = [[] for _ in range(total)]
    for s, sig in enumerate(sigs):
        for v in sig:
            in_pool[v] += len(members[s])
            sigs_of[v].append(s)
    axis_of = [a for a, axis_values in enumerate(values) for _ in axis_values]
    lo, hi = [0] * total, [0] * total
    for a, axis_values in enumerate(values):
        bounds = water_fill({value: in_pool[offsets[a] + i] for i, value in enumerate(axis_values)}, n)
        for i, value in enumerate(axis_values):
            lo[offsets[a] + i], hi[offsets[a] + i] = bounds[value]
    return _Problem(axes, values, axis_of, lo, hi, sigs, members, rank, sigs_of)


# --- the selection and its cost ------------------------------------------------------------


class _Selection:
    """Chosen members per signature, counts per value, and the cost of changing them.

    The cost of a value is the square of its distance to [lo, hi]; squares (rather than
    absolute distances) make the search spread an unavoidable shortfall over several values
    instead of dumping it on one. `add[v]` / `drop[v]` are the cost changes of one more / one
    fewer member with value v. The cost is convex in each count, so `add[v]` only grows as v
    is added to, which is what makes the lazy greedy below exact.
    """

    def __init__(self, problem: _Problem) -> None:
        self.problem = problem
        n_values = len(problem.lo)
        self.count = [0] * n_values
        self.add = [0] * n_values
        self.drop = [0] * n_values
        for v in range(n_values):
            self._reprice(v)
        self.free = [list(ids) for ids in problem.members]  # unchosen; chosen from the end
        self.chosen: list[list[int]] = [[] for _ in problem.members]
        self.chosen_with: list[set[int]] = [set() for _ in range(n_values)]  # signatures

    def _cost(self, v: int, count: int) -> int:
        lo, hi = self.problem.lo[v], self.problem.hi[v]
        distance = lo - count if count < lo else (count - hi if count > hi else 0)
        return distance * distance

    def _reprice(self, v: int) -> None:
        here = self._cost(v, self.count[v])
        self.add[v] = self._cost(v, self.count[v] + 1) - here
        self.drop[v] = self._cost(v, self.count[v] - 1) - here if self.count[v] else 0

    def total_cost(self) -> int:
        return sum(self._cost(v, c) for v, c in enumerate(self.count))

    def add_cost(self, s: int) -> int:
        add = self.add
        return sum(add[v] for v in self.problem.sigs[s])

    def take(self, s: int) -> None:
        """Choose one more (free) member of signature s."""
        self.chosen[s].append(self.free[s].pop())
        for v in self.problem.sigs[s]:
            self.count[v] += 1
            self._reprice(v)
            self.chosen_with[v].add(s)

    def swap(self, x: int, y: int) -> None:
        """Give back one chosen member of signature x, choose one free member of y."""
        self.free[x].append(self.chosen[x].pop())
        self.chosen[y].append(self.free[y].pop())
        for u, v in zip(self.problem.sigs[x], self.problem.sigs[y], strict=True):
            if u != v:
                self.count[u] -= 1
                self.count[v] += 1
                self._reprice(u)
                self._reprice(v)
        if not self.chosen[x]:
            for u in self.problem.sigs[x]:
                self.chosen_with[u].discard(x)
        for v in self.problem.sigs[y]:
            self.chosen_with[v].add(y)


# --- phase 1: greedy -----------------------------------------------------------------------


def _greedy(selection: _Selection, n: int) -> None:
    """Take n members, each time from the signature whose member lowers the cost most.

    Lazy (Minoux) greedy: a signature's gain only shrinks as the selection grows (convex
    costs), so a stale gain in the heap is an upper bound and only the top needs recomputing.
    Ties go to the lower seeded rank.
    """
    problem = selection.problem
    heap = [(selection.add_cost(s), problem.rank[s], s) for s in range(len(problem.sigs))]
    heapq.heapify(heap)
    for _ in range(n):
        while True:
            stale, rank, s = heapq.heappop(heap)
            if not selection.free[s]:
                continue
            cost = selection.add_cost(s)
            if cost == stale:
                break
            heapq.heappush(heap, (cost, rank, s))
        selection.take(s)
        if selection.free[s]:
            heapq.heappush(heap, (cost, rank, s))


# --- phase 2: swaps ------------------------------------------------------------------------


def _improve(selection: _Selection) -> None:
    """Swap one chosen member for one free member while that lowers the cost (first found).

    A swap changes the cost only on axes where the two signatures differ, by drop[u] + add[v]
    for the values u -> v there; so a swap can only help if on some axis that transfer itself
    is negative. Transfers are tried from the most to the least promising, and for each the
    chosen signatures with u against the free signatures with v, which covers every improving
    swap: the loop ends in a selection that no single swap improves.
    """
    problem = selection.problem
    sigs, sigs_of, axis_of = problem.sigs, problem.sigs_of, problem.axis_of
    add, drop, free, chosen_with = selection.add, selection.drop, selection.free, selection.chosen_with
    n_axes = len(problem.axes)
    values_of = [[v for v, a in enumerate(axis_of) if a == axis] for axis in range(n_axes)]
    while True:
        transfers = sorted(
            (drop[u] + add[v], u, v)
            for axis_values in values_of
            for u in axis_values
            if chosen_with[u]
            for v in axis_values
            if v != u and drop[u] + add[v] < 0
        )
        found: tuple[int, int] | None = None
        for _, u, v in transfers:
            candidates = [y for y in sigs_of[v] if free[y]]
            for x in sorted(chosen_with[u]):
                sig_x = sigs[x]
                gone = [drop[w] for w in sig_x]
                best, best_delta = -1, 0
                for y in candidates:
                    delta = 0
                    for w, z, d in zip(sig_x, sigs[y], gone, strict=True):
                        if w != z:
                            delta += d + add[z]
                    if delta < best_delta:
                        best, best_delta = y, delta
                if best >= 0:
                    found = (x, best)
                    break
            if found is not None:
                break
        if found is None:
            return
        selection.swap(*found)


# --- the result ----------------------------------------------------------------------------


def _report(selection: _Selection, n: int) -> BalancedSelection:
    problem = selection.problem
    marginals: dict[str, dict[str, int]] = {}
    targets: dict[str, dict[str, int]] = {}
    max_deviation: dict[str, int] = {}
    offset = 0
    for axis, values in zip(problem.axes, problem.values, strict=True):
        indices = range(offset, offset + len(values))
        offset += len(values)
        counts = {values[v - indices[0]]: selection.count[v] for v in indices}
        target = {values[v - indices[0]]: problem.lo[v] for v in indices}
        # n - sum(lo) of the values with room get their +1, preferably where it was achieved
        flexible = sorted(
            (v for v in indices if problem.hi[v] > problem.lo[v]),
            key=lambda v: (-selection.count[v], v),
        )
        for v in flexible[: n - sum(problem.lo[v] for v in indices)]:
            target[values[v - indices[0]]] += 1
        marginals[axis] = counts
        targets[axis] = target
        max_deviation[axis] = max(abs(counts[value] - target[value]) for value in values)
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
    problem = _encode(pool, n, tuple(axes), random.Random(seed))
    selection = _Selection(problem)
    _greedy(selection, n)
    _improve(selection)
    return _report(selection, n)
