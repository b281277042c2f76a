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
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from biasbench.errors import InvalidConfig

DEFAULT_AXES: Final[tuple[str, ...]] = ("gender", "age_bin", "subregion", "religion", "sexuality")

_RAKING_WORK: Final = 1_500_000
"""Raking sweeps are limited to about this many (signature, axis) updates in total."""
_RAKING_SWEEPS: Final = 40
_RAKING_PATIENCE: Final = 3
"""Raking stops after this many sweeps without a smaller total error (contradicting targets)."""
_RAKING_TOLERANCE: Final = 0.02
"""Raking stops once every value's expected count is this close to its target."""
_LOG_LIMIT: Final = 40.0
"""Bound of a raking factor's logarithm: factors of contradicting targets diverge."""
_ANNEAL_START: Final = 1.0
_ANNEAL_END: Final = 0.05
"""Annealing temperatures, in units of the cost (personas off target)."""
_ANNEAL_STEPS_PER_PERSONA: Final = 5
_ANNEAL_MIN_STEPS: Final = 2_000
_ANNEAL_MAX_STEPS: Final = 10_000
_ANNEAL_WIDTH: Final = 30_000
"""Annealing steps: a count, not a time limit, so that results are reproducible; scaled down
for problems wider than this many (axis, signature) pairs."""
_PARTNER_LIMIT: Final = 3
"""Annealing considers swaps that raise the cost by at most this much minus 1."""


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
    """The pool as signatures over value numbers (the values of all axes numbered in one
    range), with every value's bounds. Signatures are numbered in a seeded random order, so
    that "the lowest-numbered candidate" is a random one."""

    axes: tuple[str, ...]
    names: list[list[str]]  # per axis, its values (sorted)
    values_of: list[range]  # per axis, its value numbers
    axis_of: list[int]  # per value, its axis
    lo: list[int]  # per value
    hi: list[int]
    sigs: list[tuple[int, ...]]  # per signature, one value per axis
    members: list[list[int]]  # per signature, persona ids in a seeded random order
    sigs_of: list[list[int]]  # per value, the signatures that have it
    index: dict[tuple[int, ...], int]  # signature -> its number


def _encode(
    pool: Sequence[Mapping[str, object]], n: int, axes: tuple[str, ...], rng: random.Random
) -> _Problem:
    entries = sorted(pool, key=lambda entry: int(entry["id"]))  # type: ignore[call-overload]
    names = [sorted({str(entry[axis]) for entry in entries}) for axis in axes]
    values_of: list[range] = []
    for axis_names in names:
        start = values_of[-1].stop if values_of else 0
        values_of.append(range(start, start + len(axis_names)))
    number = [
        dict(zip(axis_names, values_of[a], strict=True)) for a, axis_names in enumerate(names)
    ]
    grouped: dict[tuple[int, ...], list[int]] = {}
    for entry in entries:
        sig = tuple(number[a][str(entry[axis])] for a, axis in enumerate(axes))
        grouped.setdefault(sig, []).append(int(entry["id"]))  # type: ignore[call-overload]
    sigs = list(grouped)
    rng.shuffle(sigs)
    members = [grouped[sig] for sig in sigs]
    for ids in members:
        rng.shuffle(ids)
    index = {sig: s for s, sig in enumerate(sigs)}

    n_values = values_of[-1].stop
    in_pool = [0] * n_values
    sigs_of: list[list[int]] = [[] for _ in range(n_values)]
    for s, sig in enumerate(sigs):
        for v in sig:
            in_pool[v] += len(members[s])
            sigs_of[v].append(s)
    axis_of = [a for a, values in enumerate(values_of) for _ in values]
    lo, hi = [0] * n_values, [0] * n_values
    for a, values in enumerate(values_of):
        bounds = water_fill({names[a][i]: in_pool[v] for i, v in enumerate(values)}, n)
        for i, v in enumerate(values):
            lo[v], hi[v] = bounds[names[a][i]]
    return _Problem(axes, names, values_of, axis_of, lo, hi, sigs, members, sigs_of, index)


# --- step 1: raking ------------------------------------------------------------------------


def _log_factor(target: float, sizes: list[int], log_rest: list[float]) -> float:
    """log f such that sum(size * min(1, f * rest)) == target over one value's signatures,
    where rest = exp(log_rest) is the product of their other factors. The sum is piecewise
    linear in f: signatures reach the cap of 1 in the order of their `rest`."""
    order = sorted(range(len(log_rest)), key=lambda i: -log_rest[i])
    if target >= sum(sizes) - 1e-9:  # the whole value: just cap every signature
        return min(_LOG_LIMIT, -log_rest[order[-1]])
    top = log_rest[order[0]]
    rest = [math.exp(x - top) for x in log_rest]  # scaled so that the largest is 1
    capped = 0.0
    linear = math.fsum(size * r for size, r in zip(sizes, rest, strict=True))
    for i in order:
        if linear <= 0:
            break
        factor = (target - capped) / linear
        if factor * rest[i] <= 1.0:  # the largest uncapped one stays below the cap: solved
            if factor <= 0:
                return -_LOG_LIMIT
            return max(-_LOG_LIMIT, min(_LOG_LIMIT, math.log(factor) - top))
        capped += sizes[i]
        linear -= sizes[i] * rest[i]
    return min(_LOG_LIMIT, -log_rest[order[-1]])


def _rake(problem: _Problem, n: int) -> list[float]:
    """Inclusion probability per signature, p = min(1, product of its values' factors), fitted
    so that each value's expected count sum(size * p) meets its (fractional) even target.

    Each sweep solves every value's factor exactly, given the others (in logs, so that nothing
    under- or overflows). Where two axes' targets contradict each other in this pool, the
    factors drift apart without converging; so the sweep with the smallest total error wins,
    and raking stops once that has not improved for a few sweeps.
    """
    sizes = [len(ids) for ids in problem.members]
    target = [float(lo) for lo in problem.lo]
    for values in problem.values_of:
        flexible = [v for v in values if problem.hi[v] > problem.lo[v]]
        extra = n - sum(problem.lo[v] for v in values)
        for v in flexible:
            target[v] += extra / len(flexible)
    log_factor = [0.0] * len(target)
    for v in problem.values_of[0]:
        log_factor[v] = math.log(n / sum(sizes))
    log_product = [log_factor[sig[0]] for sig in problem.sigs]
    best = [math.exp(min(0.0, x)) for x in log_product]
    best_error, since_best = math.inf, 0
    work = max(1, len(problem.sigs) * len(problem.axes))
    for _ in range(min(_RAKING_SWEEPS, max(3, _RAKING_WORK // work))):
        for v in range(len(target)):
            sigs = problem.sigs_of[v]
            log_rest = [log_product[s] - log_factor[v] for s in sigs]
            new = _log_factor(target[v], [sizes[s] for s in sigs], log_rest)
            for s, r in zip(sigs, log_rest, strict=True):
                log_product[s] = r + new
            log_factor[v] = new
        probability = [math.exp(min(0.0, x)) for x in log_product]
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


# --- the selection -------------------------------------------------------------------------


class _Selection:
    """Chosen members per signature and counts per value, with what a change would cost.

    The cost of a value is its distance to [lo, hi] (0 inside) times its axis' weight (1
    unless the axes are being prioritised); `cost` is their sum. `add[v]` / `drop[v]` are the
    changes of v's cost for one member more / fewer with value v (each -weight, 0 or +weight).
    `free_bits[v]` is the set of signatures with value v that still have
    an unchosen member, as an int used as a bit set (bit s for signature s).
    """

    def __init__(
        self, problem: _Problem, take: list[int], weights: Sequence[int] | None = None
    ) -> None:
        self.problem = problem
        self.weight = [1] * len(problem.axes) if weights is None else list(weights)
        n_values = len(problem.lo)
        self.free = [list(ids) for ids in problem.members]  # chosen from the end
        self.chosen: list[list[int]] = [[] for _ in problem.members]
        self.chosen_sigs: dict[int, None] = {}  # signatures with a chosen member, in order
        self.chosen_with: list[dict[int, None]] = [{} for _ in range(n_values)]
        self.count = [0] * n_values
        for s, k in enumerate(take):
            for _ in range(k):
                self._take(s)
        self.free_bits = [0] * n_values
        for s, sig in enumerate(problem.sigs):
            if self.free[s]:
                for v in sig:
                    self.free_bits[v] |= 1 << s
        self.add = [0] * n_values
        self.drop = [0] * n_values
        self.distance = [0] * n_values
        self.cost = 0
        for v in range(n_values):
            self._reprice(v)

    @property
    def size(self) -> int:
        return sum(len(c) for c in self.chosen)

    def takes(self) -> list[int]:
        """Chosen members per signature: enough to rebuild an equally good selection."""
        return [len(c) for c in self.chosen]

    def _reprice(self, v: int) -> None:
        count, lo, hi = self.count[v], self.problem.lo[v], self.problem.hi[v]
        weight = self.weight[self.problem.axis_of[v]]
        self.add[v] = weight if count >= hi else (-weight if count < lo else 0)
        self.drop[v] = weight if count <= lo else (-weight if count > hi else 0)
        distance = lo - count if count < lo else (count - hi if count > hi else 0)
        self.cost += weight * (distance - self.distance[v])
        self.distance[v] = distance

    def _take(self, s: int) -> None:
        self.chosen[s].append(self.free[s].pop())
        self.chosen_sigs[s] = None
        for v in self.problem.sigs[s]:
            self.count[v] += 1
            self.chosen_with[v][s] = None

    def take(self, s: int) -> None:
        """Choose one more (free) member of signature s."""
        self._take(s)
        for v in self.problem.sigs[s]:
            self._reprice(v)
            if not self.free[s]:
                self.free_bits[v] &= ~(1 << s)

    def give_back(self, s: int) -> None:
        """Return one chosen member of signature s to the free ones."""
        self.free[s].append(self.chosen[s].pop())
        if not self.chosen[s]:
            del self.chosen_sigs[s]
        for v in self.problem.sigs[s]:
            self.count[v] -= 1
            self._reprice(v)
            self.free_bits[v] |= 1 << s
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
        selection.give_back(
            min(
                selection.chosen_sigs,
                key=lambda s: sum(selection.drop[v] for v in problem.sigs[s]),
            )
        )


# --- step 3: descent -----------------------------------------------------------------------


def _pick_bit(bits: int, rng: random.Random, width: int) -> int:
    """A set bit of `bits`: the first one at or after a random position, wrapping around."""
    start = rng.randrange(width)
    upper = bits >> start
    if upper:
        return start + (upper & -upper).bit_length() - 1
    return (bits & -bits).bit_length() - 1


def _partner(
    selection: _Selection, x: int, limit: int, rng: random.Random
) -> tuple[int, int] | None:
    """(cost change, y) of the cheapest swap of a member of signature x for a free member of
    some signature y, if that change is below `limit`; None otherwise. Ties: a random y.

    The change is a sum over axes b of 0 if y keeps x's value there, else drop[x_b] + add[y_b].
    Per axis, the candidate signatures fall into at most four classes by that term (keep the
    value; change it to a value with add -w, 0 or +w), each a bit set; a depth-first search
    over the axes intersects classes, cheapest first, and prunes by the best sum left.
    """
    problem, add, drop, free_bits = (
        selection.problem,
        selection.add,
        selection.drop,
        selection.free_bits,
    )
    options: list[list[tuple[int, int]]] = []
    for b, values in enumerate(problem.values_of):
        groups: dict[int, int] = {}
        for w in values:
            groups[add[w]] = groups.get(add[w], 0) | free_bits[w]
        u = problem.sigs[x][b]
        classes = [(0, free_bits[u])] if free_bits[u] else []
        for k, bits in groups.items():
            others = bits & ~free_bits[u]
            if others:
                classes.append((drop[u] + k, others))
        if not classes:
            return None
        classes.sort(key=lambda c: c[0])
        options.append(classes)
    floor = [0] * (len(options) + 1)  # the smallest sum the axes from b on can add
    for b in range(len(options) - 1, -1, -1):
        floor[b] = floor[b + 1] + options[b][0][0]
    best_change, best_bits = limit, 0

    def search(b: int, bits: int, change: int) -> None:
        nonlocal best_change, best_bits
        if b == len(options):
            if change < best_change:
                best_change, best_bits = change, bits
            elif change == best_change:
                best_bits |= bits
            return
        for term, class_bits in options[b]:
            if change + term + floor[b + 1] > best_change:
                break
            both = bits & class_bits
            if both:
                search(b + 1, both, change + term)

    search(0, (1 << len(problem.sigs)) - 1, 0)
    best_bits &= ~(1 << x)
    if best_change >= limit or not best_bits:
        return None
    return best_change, _pick_bit(best_bits, rng, len(problem.sigs))


def _descend(selection: _Selection, rng: random.Random) -> bool:
    """Apply cost-lowering swaps (the best one for each chosen signature in turn) until a
    whole pass finds none: then no single swap lowers the cost. True if anything changed."""
    changed, improved = False, True
    while improved:
        improved = False
        for x in list(selection.chosen_sigs):
            if x in selection.chosen_sigs and (found := _partner(selection, x, 0, rng)):
                selection.swap(x, found[1])
                changed = improved = True
    return changed


# --- step 4: annealing and spreading -------------------------------------------------------


def _anneal(selection: _Selection, rng: random.Random, steps: int) -> _Selection:
    """Simulated annealing: a random chosen signature is swapped with its cheapest partner,
    also when that raises the cost, with a probability that falls as the temperature does.
    Returns the best selection seen (rebuilt if that is not the current one)."""
    best_cost, best_takes = selection.cost, selection.takes()
    temperature = _ANNEAL_START
    cooling = (_ANNEAL_END / _ANNEAL_START) ** (1.0 / max(steps, 1))
    for _ in range(steps):
        if selection.cost == 0:
            break
        temperature *= cooling
        x = rng.choice(tuple(selection.chosen_sigs))
        found = _partner(selection, x, _PARTNER_LIMIT, rng)
        if found is None:
            continue
        change, y = found
        if change <= 0 or rng.random() < math.exp(-change / temperature):
            selection.swap(x, y)
            if selection.cost < best_cost:
                best_cost, best_takes = selection.cost, selection.takes()
    if selection.cost > best_cost:
        return _Selection(selection.problem, best_takes)
    return selection


def _replace(sig: tuple[int, ...], axis: int, value: int) -> tuple[int, ...]:
    return (*sig[:axis], value, *sig[axis + 1 :])


def _spreads(selection: _Selection, u: int, v: int) -> bool:
    """Whether moving a member from value u to value v of the same axis keeps the cost but
    takes it from a value further off target to one less far off (5 over and 1 over become 4
    and 2), i.e. lowers the sum of squared distances."""
    add, drop, distance = selection.add, selection.drop, selection.distance
    if drop[u] + add[v] != 0:
        return False
    if drop[u] < 0 and add[v] > 0:  # both over their targets
        return distance[u] > distance[v] + 1
    if drop[u] > 0 and add[v] < 0:  # both at or below their targets
        return distance[v] > distance[u] + 1
    return False


def _spread(selection: _Selection) -> bool:
    """Apply spreading swaps between signatures that differ on one axis only, so the other
    axes stay as they are, until a whole pass finds none. True if anything changed."""
    problem = selection.problem
    changed, moved = False, True
    while moved:
        moved = False
        for a, values in enumerate(problem.values_of):
            for u in values:
                for v in values:
                    for x in list(selection.chosen_with[u]):
                        if not (v != u and _spreads(selection, u, v)):
                            break
                        y = problem.index.get(_replace(problem.sigs[x], a, v))
                        if y is not None and selection.free[y] and selection.chosen[x]:
                            selection.swap(x, y)
                            changed = moved = True
    return changed


# --- the result ----------------------------------------------------------------------------


def _report(selection: _Selection, n: int) -> BalancedSelection:
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


def _priority_weights(selection: _Selection) -> list[int]:
    """Axis weights under which a swap that lowers the total distance always wins, and among
    equal totals the one that moves distance to a later axis: the earlier an axis is named,
    the closer it stays to its targets when not all can be met."""
    n_axes = len(selection.problem.axes)
    base = n_axes * (selection.cost + 2 * n_axes) + 1
    return [base + (n_axes - 1 - a) for a in range(n_axes)]


def _anneal_steps(problem: _Problem, n: int) -> int:
    """More steps for more personas, fewer for wide problems (a step's cost grows with the
    number of axes and of signatures)."""
    steps = min(_ANNEAL_MAX_STEPS, max(_ANNEAL_MIN_STEPS, _ANNEAL_STEPS_PER_PERSONA * n))
    width = len(problem.axes) * len(problem.sigs)
    return max(1, int(steps * min(1.0, _ANNEAL_WIDTH / width)))


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
    problem = _encode(pool, n, tuple(axes), rng)
    selection = _Selection(problem, _round(problem, _rake(problem, n), rng))
    _resize(selection, n)
    _descend(selection, rng)
    if selection.cost > 0 and any(selection.free_bits):
        selection = _anneal(selection, rng, _anneal_steps(problem, n))
        _descend(selection, rng)
        selection = _Selection(problem, selection.takes(), _priority_weights(selection))
    # each round lowers (cost, squared distances within an axis): it ends
    while _descend(selection, rng) | _spread(selection):
        pass
    return _report(selection, n)
