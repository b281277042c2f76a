"""Latency of the /queue API with 10,000 tasks in Prefect, next to bare Prefect reads.

    .venv/bin/python perf/queue_api_latency.py         # --tasks 10000 --requests 100

Starts a Prefect server on a fresh PostgreSQL database (created on `--postgres`, dropped at the
end; SQLite locks up under this many writes), sets up the deployments, creates
`--tasks` queue tasks directly through the Prefect client (9,950 finished in a mix of states,
50 held), serves the shim in-process on a free port and measures, alternating the two so that
both see the same server load:

- `GET /queue?limit=50` against a bare `read_flow_runs(limit=50)` of the queue's runs;
- `GET /queue/stats` against a bare `count_flow_runs` of the queue's runs.

Prints p50 and p95 of each and the ratio (target: at most 2)."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import uvicorn
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.states import Cancelled, Completed, Failed
from sqlalchemy import create_engine, text

from biasbench.queue import control
from biasbench.queue.gateway import deployment_name, held_state
from biasbench.queue.model import QUEUE_TAG, SKIPPED
from biasbench.settings import Settings
from deployments.stack import Stack
from queue_api.app import create_app
from queue_api.settings import ApiSettings

PORT = 4261
FINAL_STATES = [
    lambda: Completed(),
    lambda: Completed(),
    lambda: Failed(message="LLM server unreachable"),
    lambda: Cancelled(message="cancelled by a user"),
    lambda: Cancelled(name=SKIPPED, message="upstream failed"),
]


async def populate(tasks: int, held: int = 50) -> None:
    async with get_client() as client:
        # Paused: the held tasks stay held while the manager keeps looking, as on a busy night.
        await control.set_paused(client, True)
        deployment = await client.read_deployment_by_name(deployment_name("pool_gen"))
        semaphore = asyncio.Semaphore(8)

        async def one(i: int) -> None:
            state = held_state() if i >= tasks - held else FINAL_STATES[i % len(FINAL_STATES)]()
            async with semaphore:
                await client.create_flow_run_from_deployment(
                    deployment.id,
                    parameters={"n": 100 + i, "upstream": None, "priority": 0},
                    state=state,
                    tags=[QUEUE_TAG],
                    name=f"Pool Generation: {100 + i} personas",
                )

        await asyncio.gather(*(one(i) for i in range(tasks)))


def serve_shim(db_url: str) -> tuple[str, uvicorn.Server]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = create_app(ApiSettings(), Settings(db_url=db_url))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


async def measure(base: str, requests: int) -> dict[str, tuple[list[float], list[float]]]:
    queue_runs = FlowRunFilter(tags=FlowRunFilterTags(all_=[QUEUE_TAG]))
    results: dict[str, tuple[list[float], list[float]]] = {
        "GET /queue?limit=50": ([], []),
        "GET /queue/stats": ([], []),
    }
    async with get_client() as client, httpx.AsyncClient(base_url=base, timeout=60) as http:
        pairs = {
            "GET /queue?limit=50": (
                lambda: http.get("/queue", params={"limit": 50}),
                lambda: client.read_flow_runs(flow_run_filter=queue_runs, limit=50),
            ),
            "GET /queue/stats": (
                lambda: http.get("/queue/stats"),
                lambda: client.count_flow_runs(flow_run_filter=queue_runs),
            ),
        }
        for shim, bare in pairs.values():  # warm both paths (connections, caches)
            await shim()
            await bare()
        for _ in range(requests):
            for name, (shim, bare) in pairs.items():
                results[name][0].append(await timed(shim))
                results[name][1].append(await timed(bare))
    return results


def p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument(
        "--postgres", default="postgres@127.0.0.1:5432", help="user@host:port, trust auth"
    )
    args = parser.parse_args()
    os.environ.pop("PREFECT_API_URL", None)
    name = f"api_latency_{os.getpid()}"
    admin = create_engine(
        f"postgresql+psycopg://{args.postgres}/postgres", isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        return run(args, f"postgresql+asyncpg://{args.postgres}/{name}")
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def run(args: argparse.Namespace, prefect_db: str) -> int:
    with tempfile.TemporaryDirectory(prefix="api-latency-") as tmp:
        os.environ["PREFECT_API_DATABASE_CONNECTION_URL"] = prefect_db
        db_url = f"sqlite:///{tmp}/biasbench.db"
        os.environ["DB_URL"] = db_url
        with Stack(port=PORT, api_port=None, logs=Path(tmp) / "logs"):
            started = time.monotonic()
            asyncio.run(populate(args.tasks))
            print(f"{args.tasks} tasks created in {time.monotonic() - started:.0f} s")
            base, server = serve_shim(db_url)
            results = asyncio.run(measure(base, args.requests))
            server.should_exit = True
    print(f"\n{args.requests} requests each, milliseconds")
    print(f"{'':24} {'shim p50':>9} {'p95':>7} {'bare p50':>9} {'p95':>7} {'ratio p50':>10}")
    for name, (shim, bare) in results.items():
        ratio = statistics.median(shim) / statistics.median(bare)
        print(
            f"{name:24} {p(shim, 50):9.1f} {p(shim, 95):7.1f} {p(bare, 50):9.1f} "
            f"{p(bare, 95):7.1f} {ratio:10.2f}"
        )
    print("(target: ratio <= 2)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
