"""Steps 1 and 2 of balancing (see balancing.py): raking fits inclusion probabilities per
signature, rounding turns them into counts of members to take."""

from __future__ import annotations

import math
import random
from typing import Final

from biasbench.personas.signatures import Problem

_RAKING_WORK: Final = 1_500_000
"""Raking sweeps are limited to about this many (signature, axis) updates in total."""
_RAKING_SWEEPS: Final = 40
_RAKING_PATIENCE: Final = 3
"""Raking stops after this many sweeps without a smaller total error (contradicting targets)."""
_RAKING_TOLERANCE: Final = 0.02
"""Raking stops once every value's expected count is this close to its target."""
_LOG_LIMIT: Final = 40.0
"""Bound of a raking factor's logarithm: factors of contradicting targets diverge."""


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


def rake(problem: Problem, n: int) -> list[float]:
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


def round_counts(problem: Problem, probability: list[float], rng: random.Random) -> list[int]:
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
