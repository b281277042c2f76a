"""Pauses before writing again what the Prefect server on SQLite refused as "database is locked".

SQLite has one writer; a transaction that read before another connection committed cannot become
the writer and fails at once, whatever the busy timeout (Prefect's routes read first). The other
writers are the server's own short transactions (its triggers store each event a proactive
watchdog expects), so a try a moment later usually goes through; under a burst several collide
in a row. Hence short jittered pauses for a time budget rather than a count of long ones."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator


def collision_pauses(budget: float, *, first: float = 0.01, cap: float = 0.2) -> Iterator[float]:
    """Pauses (seconds) that double from `first` up to `cap`, each drawn at random below its
    bound so that colliding writers spread out; they end once `budget` seconds have passed
    since this call."""
    return _pauses(time.monotonic() + budget, first, cap)


def _pauses(deadline: float, bound: float, cap: float) -> Iterator[float]:
    while time.monotonic() < deadline:
        yield random.uniform(0, bound)
        bound = min(cap, bound * 2)
