"""The /queue API under 50 concurrent clients, with and without one writer at a time.

    .venv/bin/python perf/queue_api_load.py            # --tasks 500 --clients 50 --rounds 5

Starts the whole stack (`deployments.stack.Stack`: Prefect server on a fresh SQLite database,
warm starter, GPU worker, queue manager; the GPU pool paused, so nothing runs) on port 4264, and
two /queue API processes (`python -m queue_api`) beside it: one as shipped
(`QUEUE_API_ONE_WRITER=true`), one with `QUEUE_API_ONE_WRITER=false` (every request writes to
Prefect when it likes, as before). In each round, each API gets `--tasks / --rounds` adds
(`POST /queue/add`) from `--clients` concurrent clients, then the same number of deletes of
those tasks the same way; which API goes first alternates, so both see the same machine load.
The deletes come right after the adds were answered, while the API is still creating their runs
(queue_api/outbox.py); with `--created-first`, only once every run exists (the bulk-delete path).

Prints, for each API, the p50 / p95 / max latency of adds and deletes and every answer that was
not 2xx (status and message), then checks that every add made one task (unique ids) and every
delete removed it, and, once the outboxes are empty, that no run is left in Prefect. Logs stay
in `.stack-logs/api-load/`. Takes 1-4 minutes."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

from biasbench.queue import control
from biasbench.queue.model import QUEUE_TAG
from deployments.setup import PROJECT_DIR
from deployments.stack import Stack
from tests.support.outbox import wait_drained
from tests.support.ports import free_port

PORT = 4264
MODES = {"one writer": "true", "free writes": "false"}  # QUEUE_API_ONE_WRITER


@dataclass
class Tally:
    """What one API answered."""

    adds: list[float] = field(default_factory=list)
    deletes: list[float] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)  # "add 503: message" -> count
    task_ids: list[int] = field(default_factory=list)
    left: int = 0  # tasks still listed after their delete was answered 2xx


async def concurrently(
    clients: int, jobs: list[int], one: Callable[[int], Awaitable[None]]
) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)

    async def client() -> None:
        while not queue.empty():
            await one(queue.get_nowait())

    await asyncio.gather(*(client() for _ in range(clients)))


def client_limits(clients: int) -> httpx.Limits:
    # Idle connections are dropped before uvicorn closes them (5 s): reusing one it is closing
    # fails in the client ("Server disconnected"), which is not what is measured here.
    return httpx.Limits(
        max_connections=clients, max_keepalive_connections=clients, keepalive_expiry=2
    )


async def add_tasks(
    http: httpx.AsyncClient, labels: list[str], clients: int, tally: Tally
) -> list[int]:
    """A `pool_gen` task per label through `POST /queue/add`, from `clients` concurrent
    clients; latencies and refusals go to the tally, the new task ids are returned."""
    created: list[int] = []

    async def add(i: int) -> None:
        body = {"task_type": "pool_gen", "config": {"n": 10}, "label": labels[i]}
        began = time.perf_counter()
        answer = await http.post("/queue/add", json=body)
        tally.adds.append(time.perf_counter() - began)
        if answer.is_success:
            created.append(answer.json()["task_id"])
        else:
            tally.refused[f"add {answer.status_code}: {answer.text[:160]}"] += 1

    await concurrently(clients, list(range(len(labels))), add)
    tally.task_ids += created
    return created


async def round_of(
    base: str, tasks: int, clients: int, tally: Tally, offset: int, created_in: str | None
) -> None:
    """`created_in`: the API's domain database, to wait until the adds exist in Prefect before
    deleting them."""
    async with httpx.AsyncClient(base_url=base, timeout=300, limits=client_limits(clients)) as http:

        async def delete(task_id: int) -> None:
            began = time.perf_counter()
            answer = await http.delete(f"/queue/{task_id}")
            tally.deletes.append(time.perf_counter() - began)
            if not answer.is_success:
                tally.refused[f"delete {answer.status_code}: {answer.text[:160]}"] += 1

        labels = [f"load-{offset + i}" for i in range(tasks)]
        created = await add_tasks(http, labels, clients, tally)
        if created_in:
            await asyncio.to_thread(wait_drained, created_in, 600)
        await concurrently(clients, created, delete)
        listed = await http.get("/queue", params={"limit": 10_000})
        if listed.is_success:
            tally.left += len({t["id"] for t in listed.json()} & set(created))
        else:  # counted, so that a run on a loaded machine still prints its figures
            tally.refused[f"list {listed.status_code}: {listed.text[:160]}"] += 1


def start_api(env: dict[str, str], name: str, logs: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """`python -m queue_api` with `env` (its DB_URL, QUEUE_API_* settings) on a free port,
    logging to logs/queue-api-<name>.log; returns its address once it answers."""
    port = free_port()
    with (logs / f"queue-api-{name}.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "queue_api"],
            cwd=PROJECT_DIR,
            env={**env, "QUEUE_API_PORT": str(port)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/queue/stats", timeout=5).status_code == 200:
                return base, process
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"the /queue API {name} did not come up; see its log in {logs}")


def stop_api(process: subprocess.Popen[bytes]) -> None:
    process.terminate()  # uvicorn waits for open requests: then it is killed
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def ms(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


def report(tallies: dict[str, Tally], tasks: int) -> None:
    print(f"\n{'':12} {'':7} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'non-2xx':>8}")
    for mode, t in tallies.items():
        for what, values in (("add", t.adds), ("delete", t.deletes)):
            bad = sum(n for k, n in t.refused.items() if k.startswith(what))
            print(
                f"{mode:12} {what:7} {ms(values, 50):8.0f} {ms(values, 95):8.0f} "
                f"{max(values) * 1000:8.0f} {bad:8}"
            )
    ours, before = tallies["one writer"], tallies["free writes"]
    for what in ("adds", "deletes"):
        a, b = getattr(ours, what), getattr(before, what)
        print(
            f"ratio one writer / free writes, {what}: p50 {ms(a, 50) / ms(b, 50):.2f}, "
            f"p95 {ms(a, 95) / ms(b, 95):.2f}"
        )
    for mode, t in tallies.items():
        for message, count in t.refused.most_common():
            print(f"  {mode}: {count} x {message}")
        unique = len(set(t.task_ids))
        print(
            f"{mode}: {len(t.task_ids)} tasks created ({unique} unique) of {tasks} adds; "
            f"{t.left} still listed after their delete"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=500, help="adds per API")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--created-first", action="store_true", help="delete once the adds' runs exist"
    )
    args = parser.parse_args()
    os.environ.pop("PREFECT_API_URL", None)
    logs = PROJECT_DIR / ".stack-logs" / "api-load"
    shutil.rmtree(logs, ignore_errors=True)
    tallies = {mode: Tally() for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="api-load-") as tmp:
        os.environ["PREFECT_API_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{tmp}/prefect.db"
        os.environ["DB_URL"] = f"sqlite:///{tmp}/biasbench.db"
        with Stack(port=PORT, api_port=None, logs=logs) as stack:
            asyncio.run(pause())
            db_urls = {flag: f"sqlite:///{tmp}/biasbench-{flag}.db" for flag in MODES.values()}
            apis = {
                mode: start_api(
                    {**stack.env, "QUEUE_API_ONE_WRITER": flag, "DB_URL": db_urls[flag]},
                    flag,
                    logs,
                )
                for mode, flag in MODES.items()
            }
            try:
                load_before = os.getloadavg()[0]
                began = time.monotonic()
                per_round = args.tasks // args.rounds
                for r in range(args.rounds):
                    order = list(MODES) if r % 2 == 0 else list(reversed(MODES))
                    for mode in order:
                        asyncio.run(
                            round_of(
                                apis[mode][0],
                                per_round,
                                args.clients,
                                tallies[mode],
                                r * per_round,
                                db_urls[MODES[mode]] if args.created_first else None,
                            )
                        )
                    print(f"round {r + 1}/{args.rounds} done", flush=True)
                took = time.monotonic() - began
                for db_url in db_urls.values():  # deletes of adds in flight are carried out
                    wait_drained(db_url, 600)
                left_in_prefect = asyncio.run(queue_runs())
            finally:
                for _, process in apis.values():
                    stop_api(process)
    print(f"\n{args.tasks} adds then deletes per API from {args.clients} concurrent clients")
    report(tallies, per_round * args.rounds)
    print(f"queue runs left in Prefect once both outboxes were empty: {left_in_prefect}")
    print(
        f"1-min load {load_before:.2f} before, {os.getloadavg()[0]:.2f} after; "
        f"measuring took {took:.0f} s; logs in {logs}"
    )
    return 0


async def queue_runs() -> int:
    async with get_client() as client:
        return await client.count_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[QUEUE_TAG]))
        )


async def pause() -> None:
    async with get_client() as client:
        await control.set_paused(client, True)


if __name__ == "__main__":
    raise SystemExit(main())
