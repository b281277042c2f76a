"""Marginal shares: each value's fraction of the whole, from counts (a drawn pool) or weights
(a population table). One function, so that the two columns a report compares are made alike."""

from __future__ import annotations

from collections.abc import Mapping

Shares = dict[str, float]


def marginal_shares(counts: Mapping[str, float]) -> Shares:
    """Values that never occur are left out (a marginal lists what occurs); nothing counted
    gives no shares."""
    total = sum(counts.values())
    return {k: c / total for k, c in counts.items() if c > 0} if total else {}
