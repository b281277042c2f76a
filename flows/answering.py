"""Drive a task's questions through the LLM in a continuous window and save as answers arrive.

Answers are flushed in batches every `interval` seconds (and before any error propagates), so a
killed process loses at most the last few seconds of answers and never a stored one. An item the
server could not answer is stored as a failure and the run goes on, until the error budget
(`biasbench.error_budget`) says the server fails too many to be merely flaky."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import TypeVar

from biasbench.asking import LLM_ERROR, Answered, Unanswered
from biasbench.error_budget import ErrorBudget
from biasbench.llm.window import in_window
from biasbench.rates import RateMeter
from flows.progress import Progress

Item = TypeVar("Item")
Outcome = Answered | Unanswered


async def answer_all(
    todo: Sequence[Item],
    ask_one: Callable[[Item], Awaitable[Outcome]],
    *,
    in_flight: int,
    save: Callable[[list[tuple[Item, Outcome]]], None],
    progress: Progress,
    already_done: int,
    interval: float,
    max_error_share: float,
    meter: RateMeter | None = None,
) -> tuple[int, int]:
    """Returns (answered, unanswered) counts of this pass; raises LLMErrorShareExceeded when
    more than `max_error_share` of the task's items failed on the server (what failed is saved).
    `meter` records the pass's rate per flush, after the batch it describes is saved."""
    pending: list[tuple[Item, Outcome]] = []
    answered = unanswered = 0
    # The share is of the task's items, not of this pass's: a resume that asks only the items
    # that failed before must not fail because they are all hard ones.
    budget = ErrorBudget(total=already_done + len(todo), max_share=max_error_share)
    last_flush = time.monotonic()

    async def flush() -> None:
        nonlocal pending, last_flush
        batch, pending = pending, []
        last_flush = time.monotonic()
        if batch:
            await asyncio.to_thread(save_and_measure, batch, already_done + answered)

    def save_and_measure(batch: list[tuple[Item, Outcome]], done: int) -> None:
        save(batch)
        if meter is not None:
            meter.flush(done)

    try:
        # aclosing: an error cancels the requests still in flight at once, not at GC time.
        async with aclosing(in_window(todo, ask_one, in_flight)) as answers:
            async for item, outcome in answers:
                if isinstance(outcome, Exception):
                    raise outcome
                pending.append((item, outcome))
                if meter is not None:
                    meter.note(answered=isinstance(outcome, Answered))
                if isinstance(outcome, Answered):
                    answered += 1
                    budget.record(server_failed=False)
                else:
                    unanswered += 1
                    budget.record(server_failed=outcome.kind == LLM_ERROR, detail=outcome.snippet)
                if time.monotonic() - last_flush >= interval:
                    await flush()
                    await progress.update(already_done + answered)
    finally:
        await flush()
    await progress.update(already_done + answered, force=True)
    return answered, unanswered
