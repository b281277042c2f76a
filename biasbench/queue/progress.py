"""A task's progress as numbers: read from the domain database (biasbench.results), shown by
the REST shim, and written for people into the run's progress artifact (flows/progress.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressCount:
    done: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 if self.total == 0 else round(100.0 * self.done / self.total, 1)

    def describe(self, what: str) -> str:
        return f"{self.done:,} of {self.total:,} {what}"
