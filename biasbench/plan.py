"""The benchmark plan: which (persona, trait, scale order) requests a run makes.

Why deterministic: a run that is resumed, retried or audited must ask exactly the same
questions, so every choice here comes from a stable hash (blake2b, not Python's salted
`hash()`) of the run seed and the ids, never from a random generator's state or list order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, get_args

from biasbench.errors import InvalidConfig
from biasbench.prompts import ScaleOrder

ScaleMode = Literal["in", "rev", "random50"]
SCALE_MODES: Final[tuple[str, ...]] = get_args(ScaleMode)

_DIGEST_SIZE: Final = 8


@dataclass(frozen=True, slots=True)
class PlanItem:
    """One request: rate `trait_id` for `persona_id` with the options listed in `scale_order`."""

    persona_id: int
    trait_id: int
    scale_order: ScaleOrder


def _digest(run_seed: int, persona_id: int, trait_id: int, tag: str = "") -> bytes:
    """The stable 8-byte blake2b hash of b"run_seed:persona_id:trait_id[:tag]"."""
    key = b"%d:%d:%d" % (run_seed, persona_id, trait_id)
    if tag:
        key += b":" + tag.encode()
    return hashlib.blake2b(key, digest_size=_DIGEST_SIZE).digest()


def primary_order(
    run_seed: int, persona_id: int, trait_id: int, scale_mode: ScaleMode
) -> ScaleOrder:
    """The order a pair is asked in first; `random50` takes the lowest bit of the pair's hash."""
    if scale_mode == "in" or scale_mode == "rev":
        return scale_mode
    return "rev" if _digest(run_seed, persona_id, trait_id)[-1] & 1 else "in"


def dual_count(pairs: int, dual_fraction: float) -> int:
    """How many pairs are asked in both orders: Python's `round(f × pairs)` (half to even)."""
    return round(dual_fraction * pairs)


def _validate(
    persona_ids: Sequence[int], trait_ids: Sequence[int], scale_mode: str, dual_fraction: float
) -> None:
    if scale_mode not in SCALE_MODES:
        raise InvalidConfig("scale_mode", f"must be one of {SCALE_MODES}, got {scale_mode!r}")
    if isinstance(dual_fraction, bool) or not isinstance(dual_fraction, int | float):
        raise InvalidConfig("dual_fraction", f"must be a number, got {dual_fraction!r}")
    if not 0.0 <= dual_fraction <= 1.0:  # also rejects NaN
        raise InvalidConfig("dual_fraction", f"must be within [0, 1], got {dual_fraction}")
    for field, ids in (("persona_ids", persona_ids), ("trait_ids", trait_ids)):
        if len(set(ids)) != len(ids):
            raise InvalidConfig(field, "contains duplicate ids")


def benchmark_plan(
    *,
    run_seed: int,
    persona_ids: Sequence[int],
    trait_ids: Sequence[int],
    scale_mode: ScaleMode,
    dual_fraction: float,
) -> list[PlanItem]:
    """All requests of a run, sorted by (persona_id, trait_id, scale_order).

    Every (persona, trait) pair is asked once in its primary order (`in`, `rev`, or for
    `random50` chosen per pair from a blake2b hash of (run_seed, persona_id, trait_id)).
    Exactly k = round(dual_fraction × P × T) pairs are also asked in the other order: the pairs
    are ranked by a blake2b hash of (run_seed, persona_id, trait_id, "dual") and the first k
    taken. Hence len(plan) == P × T + round(dual_fraction × P × T), and the same inputs (in any
    id order) always give the identical list.
    """
    _validate(persona_ids, trait_ids, scale_mode, dual_fraction)
    pairs = [(p, t) for p in sorted(persona_ids) for t in sorted(trait_ids)]
    orders: list[ScaleOrder]
    if scale_mode == "random50":
        blake2b = hashlib.blake2b  # inlined `primary_order`: this loop dominates large plans
        orders = [
            "rev"
            if blake2b(b"%d:%d:%d" % (run_seed, p, t), digest_size=_DIGEST_SIZE).digest()[-1] & 1
            else "in"
            for p, t in pairs
        ]
    else:
        orders = [scale_mode] * len(pairs)
    dual = _dual_flags(run_seed, pairs, dual_count(len(pairs), dual_fraction))
    plan: list[PlanItem] = []
    append = plan.append
    for (p, t), order, both in zip(pairs, orders, dual, strict=True):
        if both:
            append(PlanItem(p, t, "in"))
            append(PlanItem(p, t, "rev"))
        else:
            append(PlanItem(p, t, order))
    return plan


def _dual_flags(run_seed: int, pairs: list[tuple[int, int]], k: int) -> list[bool]:
    """Per pair: is it among the k lowest "dual" hashes? Ties (never seen) go to pair order."""
    if k <= 0:
        return [False] * len(pairs)
    if k >= len(pairs):
        return [True] * len(pairs)
    blake2b = hashlib.blake2b
    digests = [
        blake2b(b"%d:%d:%d:dual" % (run_seed, p, t), digest_size=_DIGEST_SIZE).digest()
        for p, t in pairs
    ]
    flags = [False] * len(pairs)
    for index in sorted(range(len(pairs)), key=digests.__getitem__)[:k]:
        flags[index] = True
    return flags
