"""The balancing problem in integers: values numbered across axes, personas grouped by their
signature (their tuple of values), and each value's even target (see balancing.py)."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


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


@dataclass(slots=True)
class Problem:
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


def encode(
    pool: Sequence[Mapping[str, object]], n: int, axes: tuple[str, ...], rng: random.Random
) -> Problem:
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
    return Problem(axes, names, values_of, axis_of, lo, hi, sigs, members, sigs_of, index)
