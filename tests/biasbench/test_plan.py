"""The benchmark plan: exact sizes, deterministic choices, both orders for dual pairs."""

from __future__ import annotations

import gc
import time
from collections import Counter

import pytest

from biasbench.errors import InvalidConfig
from biasbench.plan import PlanItem, _digest, benchmark_plan, primary_order

PERSONAS = list(range(1, 41))
TRAITS = [3, 5, 8, 13, 21]


def plan(**overrides: object) -> list[PlanItem]:
    options: dict = {
        "run_seed": 42,
        "persona_ids": PERSONAS,
        "trait_ids": TRAITS,
        "scale_mode": "random50",
        "dual_fraction": 0.0,
    }
    options.update(overrides)
    return benchmark_plan(**options)


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.1, 0.25, 1 / 3, 0.5, 0.99, 1.0])
@pytest.mark.parametrize("mode", ["in", "rev", "random50"])
def test_total_is_pairs_plus_rounded_dual_share(mode: str, fraction: float) -> None:
    pairs = len(PERSONAS) * len(TRAITS)
    items = plan(scale_mode=mode, dual_fraction=fraction)
    assert len(items) == pairs + round(fraction * pairs)
    assert len(set(items)) == len(items)


def test_small_fraction_rounds() -> None:
    items = plan(persona_ids=[1, 2], trait_ids=[1], dual_fraction=0.2)  # 0.4 pairs -> 0
    assert len(items) == 2
    items = plan(persona_ids=[1, 2, 3], trait_ids=[1], dual_fraction=0.2)  # 0.6 -> 1
    assert len(items) == 4


def test_in_and_rev_modes_store_their_order() -> None:
    assert {item.scale_order for item in plan(scale_mode="in")} == {"in"}
    assert {item.scale_order for item in plan(scale_mode="rev")} == {"rev"}


def test_every_pair_is_planned() -> None:
    pairs = {(item.persona_id, item.trait_id) for item in plan(dual_fraction=0.3)}
    assert pairs == {(p, t) for p in PERSONAS for t in TRAITS}


def test_random50_is_roughly_half_and_reproducible() -> None:
    first = plan(persona_ids=range(1000), trait_ids=range(4))
    counts = Counter(item.scale_order for item in first)
    assert 0.45 < counts["rev"] / len(first) < 0.55
    assert first == plan(persona_ids=range(1000), trait_ids=range(4))
    for item in first[:50]:
        assert item.scale_order == primary_order(42, item.persona_id, item.trait_id, "random50")


def test_run_seed_changes_the_choice() -> None:
    assert plan(run_seed=1) != plan(run_seed=2)
    assert dual_pairs(plan(run_seed=1, dual_fraction=0.2)) != dual_pairs(
        plan(run_seed=2, dual_fraction=0.2)
    )


def dual_pairs(items: list[PlanItem]) -> set[tuple[int, int]]:
    seen = Counter((item.persona_id, item.trait_id) for item in items)
    return {pair for pair, count in seen.items() if count == 2}


def test_dual_pairs_have_both_orders() -> None:
    items = plan(scale_mode="rev", dual_fraction=0.3)
    duals = dual_pairs(items)
    assert len(duals) == round(0.3 * len(PERSONAS) * len(TRAITS))
    orders: dict[tuple[int, int], set[str]] = {}
    for item in items:
        orders.setdefault((item.persona_id, item.trait_id), set()).add(item.scale_order)
    for pair, found in orders.items():
        assert found == ({"in", "rev"} if pair in duals else {"rev"})


def test_dual_pairs_are_the_lowest_dual_hashes() -> None:
    """The fast path in the plan ranks by the documented key "run_seed:persona:trait:dual"."""
    ranked = sorted((_digest(42, p, t, "dual"), p, t) for p in PERSONAS for t in TRAITS)
    expected = {(p, t) for _, p, t in ranked[:50]}
    assert dual_pairs(plan(dual_fraction=50 / 200)) == expected


def test_dual_selection_grows_monotonically() -> None:
    """Ranking by hash: a larger fraction keeps the pairs a smaller one chose."""
    assert dual_pairs(plan(dual_fraction=0.1)) <= dual_pairs(plan(dual_fraction=0.4))


def test_sorted_and_independent_of_input_order() -> None:
    items = plan(dual_fraction=0.5)
    keys = [(i.persona_id, i.trait_id, i.scale_order) for i in items]
    assert keys == sorted(keys)
    shuffled = plan(persona_ids=PERSONAS[::-1], trait_ids=TRAITS[::-1], dual_fraction=0.5)
    assert shuffled == items


def test_empty_inputs_give_empty_plan() -> None:
    assert plan(persona_ids=[], dual_fraction=1.0) == []


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"dual_fraction": -0.1}, "dual_fraction"),
        ({"dual_fraction": 1.5}, "dual_fraction"),
        ({"dual_fraction": float("nan")}, "dual_fraction"),
        ({"scale_mode": "random"}, "scale_mode"),
        ({"persona_ids": [1, 1]}, "persona_ids"),
        ({"trait_ids": [2, 2]}, "trait_ids"),
    ],
)
def test_invalid_config_names_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        plan(**overrides)
    assert info.value.field == field


def test_large_plan_is_fast() -> None:
    """20,000 personas x 15 traits: about a second on a laptop; the bound is generous for CI."""
    start = time.perf_counter()
    items = plan(persona_ids=range(20_000), trait_ids=range(15), dual_fraction=0.5)
    assert len(items) == 450_000
    assert time.perf_counter() - start < 10
    assert gc.isenabled()  # the collector pause during the build is undone
