"""Throughput of the LLM client against a fake OpenAI server with a fixed latency.

Why: the GPU server is only as busy as the client keeps it. With a fixed server latency L and
`in_flight` requests always outstanding, the ideal rate is in_flight / L; this script measures
how close (a) a bare `httpx.AsyncClient` + semaphore loop and (b) `OpenAICompatClient` driven by
`in_window` get, at 32 and 64 in flight. The server runs as several processes (SO_REUSEPORT),
so it is not the bottleneck.

    .venv/bin/python perf/llm_throughput.py [--seconds 10] [--latency 0.2] [--workers 2]

Bounded: each measurement sends `seconds` worth of ideal traffic and is cut off after
3 x seconds + 10 s (the rate is then computed on what completed); the server is stopped at
the end, also on errors or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from biasbench.llm.base import Message  # noqa: E402
from biasbench.llm.openai_compat import OpenAICompatClient  # noqa: E402
from biasbench.llm.window import in_window  # noqa: E402

MODEL = "m"
MESSAGES: list[Message] = [
    {"role": "system", "content": "You rate personas. Answer in JSON."},
    {"role": "user", "content": "How trustworthy does this person seem? Answer with a rating."},
]
BODY = {"model": MODEL, "messages": MESSAGES, "max_tokens": 8, "temperature": 0}


@contextlib.contextmanager
def fake_server(latency: float, workers: int) -> Iterator[str]:
    """Start `tests.support.openai_server` as a process group; yield its URL; always stop it."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.openai_server",
            "--port",
            "0",
            "--latency",
            str(latency),
            "--workers",
            str(workers),
            "--model",
            MODEL,
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the server prints READY within seconds or exits
        if not line.startswith("READY "):
            raise RuntimeError(f"fake server did not start: {line!r}")
        yield line.split()[1]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def timed(total: int, limit: float, run: Callable[[list[int]], Awaitable[None]]) -> float:
    """Run `run` (which appends to `done`) until it finishes or `limit` s pass; return req/s."""
    done: list[int] = []
    started = time.perf_counter()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(limit):
            await run(done)
    return len(done) / (time.perf_counter() - started)


async def bare_httpx(url: str, in_flight: int, total: int, limit: float) -> float:
    """The baseline: one httpx.AsyncClient, a semaphore, a task per request as a slot frees."""
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def run(done: list[int]) -> None:
            slots = asyncio.Semaphore(in_flight)
            tasks: set[asyncio.Task[None]] = set()

            async def one(i: int) -> None:
                try:
                    response = await client.post("/v1/chat/completions", json=BODY)
                    response.raise_for_status()
                    response.json()["choices"][0]["message"]["content"]
                    done.append(i)
                finally:
                    slots.release()

            try:
                for i in range(total):
                    await slots.acquire()
                    task = asyncio.create_task(one(i))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

        return await timed(total, limit, run)


async def ours(url: str, in_flight: int, total: int, limit: float) -> float:
    """`OpenAICompatClient` driven by `in_window`, as the flows use it."""
    async with OpenAICompatClient(base_url=url, model_name=MODEL, in_flight=in_flight) as client:
        await client.probe()  # as a flow does before its first prompt; not timed

        async def ask(i: int) -> str:
            return await client.chat(MESSAGES, max_tokens=8)

        async def run(done: list[int]) -> None:
            async with contextlib.aclosing(in_window(range(total), ask, in_flight)) as answers:
                async for i, answer in answers:
                    if isinstance(answer, Exception):
                        raise answer
                    done.append(i)

        return await timed(total, limit, run)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="ideal duration per run")
    parser.add_argument("--latency", type=float, default=0.2, help="server latency, seconds")
    parser.add_argument("--workers", type=int, default=2, help="server processes")
    parser.add_argument("--in-flight", type=int, nargs="+", default=[32, 64])
    args = parser.parse_args(argv)

    load_before = os.getloadavg()[0]
    rows = []
    with fake_server(args.latency, args.workers) as url:
        for in_flight in args.in_flight:
            ideal = in_flight / args.latency
            total = round(ideal * args.seconds)
            limit = 3 * args.seconds + 10
            bare = asyncio.run(bare_httpx(url, in_flight, total, limit))
            mine = asyncio.run(ours(url, in_flight, total, limit))
            rows.append((in_flight, ideal, bare, mine))
            print(f"in_flight={in_flight}: done", file=sys.stderr, flush=True)

    print(
        f"server latency {args.latency * 1000:g} ms, {args.workers} server processes, "
        f"{args.seconds:g} s worth of requests per run (cold start, no warm-up); "
        f"1-min load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after\n"
    )
    print(
        "| in_flight | ideal req/s | httpx + semaphore | ratio "
        "| OpenAICompatClient + in_window | ratio |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for in_flight, ideal, bare, mine in rows:
        print(
            f"| {in_flight} | {ideal:.0f} | {bare:.1f} | {bare / ideal:.3f} "
            f"| {mine:.1f} | {mine / ideal:.3f} |"
        )


if __name__ == "__main__":
    main()
