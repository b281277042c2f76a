"""How a running task reports its progress (a Prefect progress artifact) and how it is read
back: one format, written by the flows, parsed by the REST shim."""

from __future__ import annotations

import re
from dataclasses import dataclass

_TEXT = re.compile(r"^([\d,]+) of ([\d,]+) ")


@dataclass(frozen=True)
class ProgressCount:
    done: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 if self.total == 0 else round(100.0 * self.done / self.total, 1)

    def describe(self, what: str) -> str:
        return f"{self.done:,} of {self.total:,} {what}"


def parse_progress(description: str | None) -> ProgressCount | None:
    if description is None or (match := _TEXT.match(description)) is None:
        return None
    done, total = (int(g.replace(",", "")) for g in match.groups())
    return ProgressCount(done, total)
