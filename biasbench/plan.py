"""The benchmark plan: which (persona, trait, scale order) requests a run makes.

Why deterministic: a run that is resumed, retried or audited must ask exactly the same
questions, so every choice here comes from a stable hash (blake2b, not Python's salted
`hash()`) of the run seed and the ids, never from a random generator's state or list order.
"""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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
    personas, traits = sorted(persona_ids), sorted(trait_ids)
    with _gc_paused():
        return _build(run_seed, personas, traits, scale_mode, dual_fraction)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a large plan is built.

    The plan allocates hundreds of thousands of small acyclic objects; in a process that holds
    a big heap (Prefect, SQLAlchemy) each full collection they trigger rescans all of it, which
    doubles the build time. Nothing built here can form a cycle, so pausing loses nothing.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _build(
    run_seed: int, personas: list[int], traits: list[int], scale_mode: ScaleMode, fraction: float
) -> list[PlanItem]:
    size = len(personas) * len(traits)
    k = dual_count(size, fraction)
    random_order = scale_mode == "random50"
    rank_duals = 0 < k < size
    rev_bits, dual_keys = _pair_digests(
        run_seed, personas, traits, order=random_order, dual=rank_duals
    )
    if random_order:
        orders: list[ScaleOrder] = ["rev" if bit else "in" for bit in rev_bits]
    else:
        fixed: ScaleOrder = "rev" if scale_mode == "rev" else "in"
        orders = [fixed] * size
    if rank_duals:
        dual = [False] * size
        for index in sorted(range(size), key=dual_keys.__getitem__)[:k]:
            dual[index] = True  # sorted() is stable: equal hashes (never seen) keep pair order
    else:
        dual = [k > 0] * size

    plan: list[PlanItem] = []
    append = plan.append
    index = 0
    for p in personas:  # pair index = persona position * len(traits) + trait position
        for t in traits:
            if dual[index]:
                append(PlanItem(p, t, "in"))
                append(PlanItem(p, t, "rev"))
            else:
                append(PlanItem(p, t, orders[index]))
            index += 1
    return plan


def _pair_digests(
    run_seed: int, personas: list[int], traits: list[int], *, order: bool, dual: bool
) -> tuple[list[int], list[bytes]]:
    """Per pair, in (persona, trait) order: the order bit and the "dual" ranking key.

    The same digests as `_digest`, computed faster: one hasher per persona is copied per trait,
    and the ":dual" key continues the state of the pair's own key (digest() does not finalise).
    """
    rev_bits: list[int] = []
    dual_keys: list[bytes] = []
    if not (order or dual):
        return rev_bits, dual_keys
    trait_bytes = [b"%d" % t for t in traits]
    for p in personas:
        persona_hasher = hashlib.blake2b(b"%d:%d:" % (run_seed, p), digest_size=_DIGEST_SIZE)
        for suffix in trait_bytes:
            hasher = persona_hasher.copy()
            hasher.update(suffix)
            if order:
                rev_bits.append(hasher.digest()[-1] & 1)
            if dual:
                hasher.update(b":dual")
                dual_keys.append(hasher.digest())
    return rev_bits, dual_keys
