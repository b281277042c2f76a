"""A continuous request window: keep exactly `size` calls in flight until the items run out.

Why not `gather` over batches: a batch waits for its slowest answer while the GPU server idles,
and LLM latencies vary a lot with answer length. Here a new call starts the moment any call
finishes, so the server always has `size` requests queued (vLLM batches them continuously).
Items are pulled lazily (a dataset of a million prompts is never materialised as tasks), and
results come back in completion order, so the caller can persist them as they arrive.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


async def in_window(
    items: Iterable[T], call: Callable[[T], Awaitable[R]], size: int
) -> AsyncGenerator[tuple[T, R | Exception], None]:
    """Yield `(item, result or exception)` for every item, at most `size` calls at a time.

    An `Exception` raised by `call` is yielded in place of the result, so one bad prompt does
    not stop a run; `BaseException`s (cancellation, KeyboardInterrupt) propagate. When the
    consumer stops early (break, `aclose()`, cancellation), the calls still in flight are
    cancelled and awaited. Use `contextlib.aclosing(in_window(...))` so that this happens at
    once on `break` rather than when the generator is garbage-collected.
    """
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    source = iter(items)
    pending: dict[asyncio.Task[R], T] = {}
    # Each task reports itself here when done: O(1) per completion, unlike re-`wait`ing on the
    # whole window, and the queue order is the completion order.
    finished: asyncio.Queue[asyncio.Task[R]] = asyncio.Queue()

    async def run(item: T) -> R:
        return await call(item)  # a synchronous raise in `call` becomes the task's exception

    def start_next() -> bool:
        for item in source:
            task = asyncio.create_task(run(item))
            task.add_done_callback(finished.put_nowait)
            pending[task] = item
            return True
        return False

    try:
        while len(pending) < size and start_next():
            pass
        while pending:
            task = await finished.get()
            item = pending.pop(task)
            start_next()  # refill first: the window stays full while the consumer works
            exc = task.exception()  # raises CancelledError if the call was cancelled
            if exc is None:
                yield item, task.result()
            elif isinstance(exc, Exception):
                yield item, exc
            else:
                raise exc
    finally:
        # Done-but-unconsumed tasks are in `pending` too; gathering them marks errors as seen.
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
