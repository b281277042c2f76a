"""`in_window`: a continuous window of calls, checked with real sleeps and a real server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest

from biasbench.llm.base import Message
from biasbench.llm.openai_compat import OpenAICompatClient
from biasbench.llm.window import in_window
from tests.support.openai_server import Delay, OpenAIServer


def prompt(i: int) -> list[Message]:
    return [{"role": "user", "content": f"question {i}"}]


def test_yields_every_item_with_its_result_or_exception() -> None:
    async def call(i: int) -> int:
        await asyncio.sleep(0.001 * (i % 3))
        if i % 2:
            raise ValueError(f"odd {i}")
        return i * 10

    async def main() -> dict[int, object]:
        return {i: r async for i, r in in_window(range(10), call, 3)}

    results = asyncio.run(main())
    assert sorted(results) == list(range(10))
    for i, result in results.items():
        if i % 2:
            assert isinstance(result, ValueError) and str(result) == f"odd {i}"
        else:
            assert result == i * 10


def test_a_synchronous_raise_in_call_is_yielded_too() -> None:
    def call(i: int) -> asyncio.Future[int]:
        raise KeyError(i)

    async def main() -> list[tuple[int, object]]:
        return [pair async for pair in in_window([1, 2], call, 2)]

    assert [(i, type(r)) for i, r in asyncio.run(main())] == [(1, KeyError), (2, KeyError)]


def test_results_come_in_completion_order() -> None:
    delays = {"slow": 0.3, "fast": 0.05, "middle": 0.15}

    async def call(name: str) -> str:
        await asyncio.sleep(delays[name])
        return name

    async def main() -> list[str]:
        return [name async for name, _ in in_window(delays, call, 3)]

    assert asyncio.run(main()) == ["fast", "middle", "slow"]


def test_items_are_consumed_lazily() -> None:
    pulled: list[int] = []

    def items() -> Iterator[int]:
        for i in range(1000):
            pulled.append(i)
            yield i

    async def call(i: int) -> int:
        await asyncio.sleep(0)
        return i

    async def main() -> int:
        async with contextlib.aclosing(in_window(items(), call, 4)) as results:
            async for _ in results:
                return len(pulled)
        raise AssertionError("nothing yielded")

    assert asyncio.run(main()) <= 5


def test_size_must_be_positive() -> None:
    async def call(i: int) -> int:
        return i

    async def main() -> None:
        async for _ in in_window([1], call, 0):
            pass

    with pytest.raises(ValueError, match="size"):
        asyncio.run(main())


def test_stopping_early_cancels_the_calls_in_flight() -> None:
    started: list[int] = []
    cancelled: list[int] = []
    tasks: list[asyncio.Task[object]] = []

    async def call(i: int) -> int:
        started.append(i)
        tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await asyncio.sleep(0 if i == 0 else 30)
        except asyncio.CancelledError:
            cancelled.append(i)
            raise
        return i

    async def main() -> bool:
        async with contextlib.aclosing(in_window(range(100), call, 5)) as results:
            async for i, _ in results:
                assert i == 0
                break
        return all(task.done() for task in tasks)  # aclose() has awaited the cancelled calls

    assert asyncio.run(asyncio.wait_for(main(), 10))
    assert started[:5] == [0, 1, 2, 3, 4]
    assert sorted(cancelled) == started[1:]  # item 5 may be cancelled before it started


def test_cancelling_the_consumer_cancels_the_calls_in_flight() -> None:
    started: list[int] = []
    cancelled: list[int] = []

    async def call(i: int) -> int:
        started.append(i)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(i)
            raise
        return i

    async def consume() -> None:
        async for _ in in_window(range(100), call, 3):
            pass

    async def main() -> None:
        consumer = asyncio.create_task(consume())
        await asyncio.sleep(0.05)
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer

    asyncio.run(asyncio.wait_for(main(), 10))
    assert started == [0, 1, 2] and sorted(cancelled) == [0, 1, 2]


def test_a_cancelled_call_propagates_instead_of_being_yielded() -> None:
    async def call(i: int) -> int:
        if i == 1:
            raise asyncio.CancelledError
        await asyncio.sleep(0.01)
        return i

    async def main() -> None:
        with pytest.raises(asyncio.CancelledError):
            async for _ in in_window(range(5), call, 2):
                pass

    asyncio.run(main())


def test_the_window_against_a_real_server_is_full_but_never_larger() -> None:
    """At most `size` requests reach the server at once, and a new one starts as soon as any
    finishes: the short requests keep flowing while the slow first one is still running."""
    size = 4
    with OpenAIServer(models=["m"], answer=lambda messages, model: "ok") as server:
        server.script([Delay(1.0)] + [Delay(0.05)] * 30)

        async def main() -> list[tuple[int, str | Exception]]:
            # the client's own pool is larger: the window alone must do the limiting
            async with OpenAICompatClient(
                base_url=server.base_url, model_name="m", in_flight=16
            ) as client:
                return [
                    pair
                    async for pair in in_window(
                        range(20), lambda i: client.chat(prompt(i), max_tokens=4), size
                    )
                ]

        results = asyncio.run(main())
        records = [r for r in server.records if r.path == "/v1/chat/completions"]

    assert sorted(i for i, _ in results) == list(range(20))
    assert all(r == "ok" for _, r in results)
    assert server.max_in_flight == size
    slow = min(records, key=lambda r: r.started)  # the first to arrive got Delay(1.0)
    assert slow.finished is not None
    started_meanwhile = [r for r in records if r is not slow and r.started < slow.finished]
    assert len(started_meanwhile) > size  # no batch barrier behind the slow request
    assert results[-1][1] == "ok" and results[-1][0] == int(slow.body["messages"][0]["content"][9:])
