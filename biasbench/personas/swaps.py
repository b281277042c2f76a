"""Steps 3 to 5 of balancing (see balancing.py): a selection with its cost, and the swaps that
lower or even it out: descent, annealing, spreading."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Final

from biasbench.personas.signatures import Problem

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


# --- the selection -------------------------------------------------------------------------


class Selection:
    """Chosen members per signature and counts per value, with what a change would cost.

    The cost of a value is its distance to [lo, hi] (0 inside) times its axis' weight (1
    unless the axes are being prioritised); `cost` is their sum. `add[v]` / `drop[v]` are the
    changes of v's cost for one member more / fewer with value v (each -weight, 0 or +weight).
    `free_bits[v]` is the set of signatures with value v that still have
    an unchosen member, as an int used as a bit set (bit s for signature s).
    """

    def __init__(
        self, problem: Problem, take: list[int], weights: Sequence[int] | None = None
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


def resize(selection: Selection, n: int) -> None:
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
    selection: Selection, x: int, limit: int, rng: random.Random
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


def descend(selection: Selection, rng: random.Random) -> bool:
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


def anneal(selection: Selection, rng: random.Random, steps: int) -> Selection:
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
        return Selection(selection.problem, best_takes)
    return selection


def _replace(sig: tuple[int, ...], axis: int, value: int) -> tuple[int, ...]:
    return (*sig[:axis], value, *sig[axis + 1 :])


def _spreads(selection: Selection, u: int, v: int) -> bool:
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


def spread(selection: Selection) -> bool:
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


def priority_weights(selection: Selection) -> list[int]:
    """Axis weights under which a swap that lowers the total distance always wins, and among
    equal totals the one that moves distance to a later axis: the earlier an axis is named,
    the closer it stays to its targets when not all can be met."""
    n_axes = len(selection.problem.axes)
    base = n_axes * (selection.cost + 2 * n_axes) + 1
    return [base + (n_axes - 1 - a) for a in range(n_axes)]


def anneal_steps(problem: Problem, n: int) -> int:
    """More steps for more personas, fewer for wide problems (a step's cost grows with the
    number of axes and of signatures)."""
    steps = min(_ANNEAL_MAX_STEPS, max(_ANNEAL_MIN_STEPS, _ANNEAL_STEPS_PER_PERSONA * n))
    width = len(problem.axes) * len(problem.sigs)
    return max(1, int(steps * min(1.0, _ANNEAL_WIDTH / width)))
