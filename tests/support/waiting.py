"""Waiting for flow runs the way a user watching the UI would: poll until they reach a state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
from prefect import get_client
from prefect.client.schemas.objects import FlowRun


async def read_runs(ids: list[str]) -> list[FlowRun]:
    async with get_client() as client:
        return [await client.read_flow_run(i) for i in ids]  # type: ignore[arg-type]


def all_final(runs: list[FlowRun]) -> bool:
    return all(r.state is not None and r.state.is_final() for r in runs)


async def wait_for(
    done: Callable[[list[FlowRun]], bool], ids: list[str], timeout: float = 150
) -> list[FlowRun]:
    """The runs, as soon as `done` holds for them; fails naming every run's state."""
    deadline = time.monotonic() + timeout
    while True:
        runs = await read_runs(ids)
        if done(runs):
            return runs
        if time.monotonic() > deadline:
            states = [(r.name, r.state_name) for r in runs]
            raise AssertionError(f"not done after {timeout} s; states: {states}")
        await asyncio.sleep(0.5)


async def wait_final(ids: list[str], timeout: float = 150) -> list[FlowRun]:
    """The runs, once every one of them is in a final state."""
    return await wait_for(all_final, ids, timeout)


def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """`check()`'s first truthy result, polled while a server may not answer yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if result := check():
                return result
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout} s: {what}")
