"""How many items of a task may fail on the LLM server before the task fails as a whole.

One request that exhausts its retries (a lasting 429 or 5xx, a body without a completion, a
prompt the server refuses) condemns that item, not the run: it is stored as a failure, counted
in the analysis and asked again on resume. But a server that fails more than `max_share` of the
items (LLM_MAX_ERROR_SHARE, 0.2 by default) is broken, not flaky: a flaky server fails a few in
a hundred, while one failing one in five is overloaded, misconfigured or serving the wrong
model, and every further item would only add hours of retries and a run full of holes. So the
task fails, keeping what it stored, and a resume asks the failed items again.

Only server-side failures count: unparseable answers are the model's behaviour, which the
benchmark measures (the analysis reports them), not a fault of the server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from biasbench.errors import LLMErrorShareExceeded

MIN_SAMPLE: Final = 50
"""Items that must have finished before the share so far is judged: fewer say too little
(two failures among the first five are 40 %), more would let a broken server waste a long
time before the run stops."""


@dataclass
class ErrorBudget:
    """Counts the items of one pass as they finish and says when the server failed too many.

    `total` is every item of the task (its plan, also those answered in earlier passes).
    Exceeded when this pass's failures are more than `max_share` of the total (the task can no
    longer end within the share), or of the items finished in this pass once at least
    MIN_SAMPLE have."""

    total: int
    max_share: float
    finished: int = 0
    failed: int = 0

    def record(self, *, server_failed: bool, detail: str = "") -> None:
        """Count one finished item; raise LLMErrorShareExceeded once the budget is spent."""
        self.finished += 1
        if not server_failed:
            return
        self.failed += 1
        if self.failed > self.max_share * self.total or (
            self.finished >= MIN_SAMPLE and self.failed > self.max_share * self.finished
        ):
            raise LLMErrorShareExceeded(
                f"{self.failed} of {self.finished} items asked so far failed on the LLM server "
                f"({self.failed / self.finished:.0%}; the task has {self.total}), more than "
                f"LLM_MAX_ERROR_SHARE={self.max_share:.0%}; last error: {detail}"
            )
