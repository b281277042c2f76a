"""Latency of the /queue API with many tasks in Prefect, next to bare Prefect reads.

With `--throughput`, also submission throughput through `/queue/add` next to Prefect's bulk route.

    .venv/bin/python perf/queue_api_latency.py         # --tasks 10000 --requests 100
    .venv/bin/python perf/queue_api_latency.py --profile cluster --tasks 100000 --throughput 500

Starts the whole stack (`deployments.stack.Stack`: Prefect server, warm starter, GPU worker,
queue manager) with the server on a fresh PostgreSQL database (created on `--postgres`, dropped
at the end; SQLite locks up under this many writes). With `--profile cluster` the server is the
cluster profile's (deployments/cluster.py: 2 API processes behind one port, 1 services process,
Redis messaging on `--redis`, a database number that must be empty and is flushed at the end)
and the domain database is a second fresh PostgreSQL database, dropped too. The manager and the
workers are not needed to answer the reads; they run so that the server is polled as in
production (the manager and both workers every 0.5 s; the GPU pool is paused, so nothing runs),
and so that `/queue/stats` reports `executor_running: true`. Logs stay in
`.stack-logs/api-latency/`.

Populating, first through Prefect's route code (about 60 runs/s on the 2-core VM): `--bulk`
(default 5,000, at most `--tasks`) queue tasks of the `pool_gen/gpu` deployment (tag
`llm-queue`, parameters `{"n": ..., "upstream": None, "priority": 0}`, labels as the shim makes
them), all but 50 finished (Completed, Failed, Cancelled, Cancelled "Skipped", in turn) and 50
held (Paused "Queued"). This process calls Prefect's own bulk-create route function
(`POST /deployments/{id}/create_flow_run/bulk`) directly on the server's database, 100 runs per
transaction, 2 transactions at a time, with the same request bodies that
`create_flow_run_from_deployment` sends: the runs are built by the server's code (deployment
tags, work queue and parameters merged in, the state forced, start and end times set). Two
differences, neither visible to the shim: the job variables are validated against the pool's
template once, not per run (ours carry none, so the result cannot differ, and the validation
was about half of the cost), and the state-change events go to this process's in-memory
broker, not to the server. (Populating through the server's HTTP bulk route ran at 26 runs/s,
the server's one process being the limit, and right after 4,000 runs bare reads were 1.4-4 x
slower than in other runs, presumably while its event services worked through the backlog.)
A batch that takes over 120 s aborts the script.

Then, up to `--tasks`, copies of the finished ones written in SQL (perf/run_copies.py: a new id,
their own copies of the state rows, the times shifted into an older past; everything else the
original's), a few seconds for 95,000, then VACUUM ANALYZE. They cannot change what the reads
measure: `GET /queue?limit=50` reads the 50 unfinished runs (the held ones, all made by the
route code) through Prefect's state-type filter and never a finished one, and `/queue/stats`
and the bare counts count every run by its denormalised state columns, which each copy has
consistent with its own state row, as the server would have written them; the planner sees the
tables' statistics after the ANALYZE. What the copies share with their originals (name,
parameters, tags) is not read by either, except the tag, which every queue run has anyway.

Then the shim is served in-process on a free port (with this thread's Prefect settings, so it
talks to the stack's server). Its first `GET /queue` allocates the integer task ids of the runs
it lists (`queue_task_ids`) and every first call opens connections: the first call of each
endpoint is reported on its own, then each path is warmed 3 more times and measured
`--requests` times, alternating shim and bare (which goes first alternates too), so that both
see the same server load:

- `GET /queue?limit=50` against a bare `read_flow_runs(limit=50)` of the queue's runs;
- `GET /queue/stats` against a bare `count_flow_runs` of the queue's runs (one number), and
  against the bare Prefect reads that give what it reports (the runs counted by state in one
  `POST /flow_runs/history`, the runs scheduled for later counted, the work pool, the manager's
  run and the GPU workers concurrently, then the model hosts' variables, as the shim does).

Prints p50 and p95 of each and the p50 ratio (target: at most 2), the 1-minute load before and
after measuring, and how long each part took.

`--throughput N` (after the reads, which it would otherwise change: every add is one more
unfinished run) measures N adds through a `python -m queue_api` of the stack from `--clients`
concurrent clients against Prefect's bulk route creating the same runs, in `--rounds` rounds
(perf/add_throughput.py); prints tasks/s, p50/p95/max latency, every non-2xx answer, and the
ratio (goal: at least 50 tasks/s).

SIGTERM acts like Ctrl-C: the stack is stopped (its `prefect worker`s ignore SIGTERM and are
SIGKILLed after 10 s), the databases dropped and the Redis database flushed, within about 10-60
s. A SIGKILL of this script leaves the stack running."""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any
from unittest.mock import patch
from uuid import UUID

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import uvicorn
from prefect import get_client
from prefect.client.schemas.actions import DeploymentFlowRunCreate
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.client.schemas.objects import State
from prefect.server.api import deployments as deployments_api
from prefect.server.api.validation import (
    validate_job_variables_for_deployment_flow_run as validate_job_variables,
)
from prefect.server.api.workers import WorkerLookups
from prefect.server.database import provide_database_interface
from prefect.server.schemas.actions import DeploymentFlowRunCreate as ServerRunCreate
from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, temporary_settings
from prefect.states import Cancelled, Completed, Failed, to_state_create
from sqlalchemy import create_engine, text

from biasbench.queue import control, gateway
from biasbench.queue.gateway import deployment_name, held_state
from biasbench.queue.model import QUEUE_TAG, SKIPPED
from biasbench.settings import Settings
from deployments.setup import PROJECT_DIR
from deployments.stack import Stack
from perf import add_throughput
from perf.run_copies import multiply
from queue_api.app import create_app
from queue_api.labels import default_label
from queue_api.settings import ApiSettings
from tests.support.ports import free_port

PORT = 4261
BATCH = 100  # Prefect's limit for one bulk create
PARALLEL_BATCHES = 2  # the machine has 2 cores; more only queues up in the server
BATCH_TIMEOUT = 120.0
WARM_UPS = 3
VALIDATE = "validate_job_variables_for_deployment_flow_run"
FINAL_STATES: list[Callable[[], State[Any]]] = [
    lambda: Completed(),
    lambda: Completed(),
    lambda: Failed(message="LLM server unreachable"),
    lambda: Cancelled(message="cancelled by a user"),
    lambda: Cancelled(name=SKIPPED, message="upstream failed"),
]
QUEUE_RUNS = FlowRunFilter(tags=FlowRunFilterTags(all_=[QUEUE_TAG]))


def stop_on_sigterm() -> None:
    """SIGTERM acts as Ctrl-C: it becomes a SIGINT, which `asyncio.run` turns into cancelling
    its task and everything else into KeyboardInterrupt, so that `with Stack()` stops the
    stack and the database is dropped. Further SIGTERMs are ignored meanwhile: the clean-up
    takes up to a minute (the stack winds the queue down, then SIGKILLs a worker that is still
    there after 10 s)."""

    def handler(signum: int, _: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print(f"\n{signal.Signals(signum).name}: stopping the stack ...", file=sys.stderr)
        os.kill(os.getpid(), signal.SIGINT)

    # A shell starts background jobs with SIGINT ignored, and asyncio.run only handles
    # SIGINT when Python's default handler is in place: put it back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, handler)


def run_create(i: int, tasks: int, held: int) -> dict[str, Any]:
    """One run as `create_flow_run_from_deployment` sends it, in a queue task's shape."""
    state = held_state() if i >= tasks - held else FINAL_STATES[i % len(FINAL_STATES)]()
    config = {"n": 100 + i}
    return DeploymentFlowRunCreate(
        parameters={**config, "upstream": None, "priority": 0},
        context={},
        state=to_state_create(state),
        tags=[QUEUE_TAG],
        name=default_label("pool_gen", config),
        idempotency_key=None,
        parent_task_run_id=None,
        job_variables=None,
        labels={},
    ).model_dump(mode="json", exclude_unset=True)


async def populate(tasks: int, prefect_db: str, held: int = 50) -> None:
    """Prefect's bulk-create route, called in this process on the server's database."""
    async with get_client() as client:
        # Paused: the held tasks stay held while the manager keeps looking, as on a busy night.
        await control.set_paused(client, True)
        deployment = await client.read_deployment_by_name(deployment_name("pool_gen"))
    validated: set[UUID] = set()

    async def validate_once(session: Any, deployment: Any, flow_run: Any) -> None:
        # Our runs carry no job variables: the result depends on the deployment alone.
        if flow_run.job_variables or deployment.id not in validated:
            await validate_job_variables(session, deployment, flow_run)
            validated.add(deployment.id)

    settings = temporary_settings(updates={PREFECT_API_DATABASE_CONNECTION_URL: prefect_db})
    with settings, patch.object(deployments_api, VALIDATE, validate_once):
        db = provide_database_interface()
        semaphore = asyncio.Semaphore(PARALLEL_BATCHES)
        created = 0
        started = last_report = time.monotonic()

        async def one(batch: range) -> None:
            nonlocal created, last_report
            body = [ServerRunCreate.model_validate(run_create(i, tasks, held)) for i in batch]
            async with semaphore:
                create = deployments_api.bulk_create_flow_runs_from_deployment(
                    flow_runs=body,
                    deployment_id=deployment.id,
                    created_by=None,
                    db=db,
                    worker_lookups=WorkerLookups(),
                )
                try:
                    response = await asyncio.wait_for(create, BATCH_TIMEOUT)
                except TimeoutError:
                    raise RuntimeError(
                        f"populating stalled: runs {batch.start}-{batch.stop - 1} took over "
                        f"{BATCH_TIMEOUT:.0f} s ({created} created before)"
                    ) from None
            failed = [r for r in response.results if r.status != "CREATED"]
            if failed:
                raise RuntimeError(
                    f"{len(failed)} of runs {batch.start}-{batch.stop - 1} not created: "
                    f"{failed[0].error}"
                )
            created += len(batch)
            if time.monotonic() - last_report > 10 or created == tasks:
                last_report = time.monotonic()
                rate = created / (last_report - started)
                print(f"  {created} runs created ({rate:.0f} runs/s)", flush=True)

        batches = [range(start, min(start + BATCH, tasks)) for start in range(0, tasks, BATCH)]
        await asyncio.gather(*(one(b) for b in batches))


async def check_count(tasks: int) -> None:
    async with get_client() as client:
        if (count := await client.count_flow_runs(flow_run_filter=QUEUE_RUNS)) != tasks:
            raise RuntimeError(f"{count} queue runs in Prefect, {tasks} expected")


def serve_shim(db_url: str) -> tuple[str, uvicorn.Server]:
    port = free_port()
    app = create_app(ApiSettings(), Settings(db_url=db_url))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    # In this context: the thread then sees the stack's PREFECT_API_URL (a temporary setting,
    # held in a context variable); a bare thread would start an ephemeral Prefect server.
    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(server.run,), daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    result = await call()
    if isinstance(result, httpx.Response):
        result.raise_for_status()
    return time.perf_counter() - started


Samples = dict[str, tuple[list[float], list[float]]]
QUEUE = "GET /queue?limit=50"
STATS = "GET /queue/stats"
STATS_SAME_CALLS = "  vs the same reads, bare"


async def measure(base: str, db_url: str, requests: int, tasks: int) -> Samples:
    async with get_client() as client, httpx.AsyncClient(base_url=base, timeout=60) as http:

        async def stats_calls() -> None:  # what the shim asks Prefect for /queue/stats
            await asyncio.gather(
                gateway.count_by_status(client),
                gateway.count_scheduled_later(client, datetime.now(UTC)),
                control.queue_state(client),
            )
            await gateway.model_hosts(client)

        pairs = {
            QUEUE: (
                lambda: http.get("/queue", params={"limit": 50}),
                lambda: client.read_flow_runs(flow_run_filter=QUEUE_RUNS, limit=50),
            ),
            STATS: (
                lambda: http.get("/queue/stats"),
                lambda: client.count_flow_runs(flow_run_filter=QUEUE_RUNS),
            ),
            STATS_SAME_CALLS: (lambda: http.get("/queue/stats"), stats_calls),
        }
        print("first calls (task ids allocated, connections opened), milliseconds:")
        for name, (shim, bare) in list(pairs.items())[:2]:
            print(
                f"  {name:22} shim {await timed(shim) * 1000:7.1f}   "
                f"bare {await timed(bare) * 1000:7.1f}"
            )
        listed = (await http.get("/queue", params={"limit": 50})).json()
        stats = (await http.get("/queue/stats")).json()
        print(
            f"the shim lists {len(listed)} tasks ({listed[0]['label']!r}, {listed[0]['status']}); "
            f"stats: {stats}"
        )
        if len(listed) != 50 or stats["total"] != tasks:
            raise RuntimeError("the shim does not see the populated queue as expected")
        for _ in range(WARM_UPS):
            for shim, bare in pairs.values():
                await shim()
                await bare()
        results: Samples = {name: ([], []) for name in pairs}
        for i in range(requests):
            for name, (shim, bare) in pairs.items():
                if i % 2:
                    results[name][1].append(await timed(bare))
                    results[name][0].append(await timed(shim))
                else:
                    results[name][0].append(await timed(shim))
                    results[name][1].append(await timed(bare))
    return results


def p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument(
        "--bulk", type=int, default=5_000, help="runs made by Prefect's route code; the rest copies"
    )
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--profile", choices=("embedded", "cluster"), default="embedded")
    parser.add_argument(
        "--postgres", default="postgres@127.0.0.1:5432", help="user@host:port, trust auth"
    )
    parser.add_argument(
        "--redis", default="redis://127.0.0.1:6379/9", help="cluster: an empty Redis database"
    )
    parser.add_argument("--throughput", type=int, default=0, help="adds to measure (0: none)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.tasks < 50 or args.bulk < 51:
        parser.error("--tasks and --bulk: at least 50 (the held ones), --bulk some finished too")
    args.bulk = min(args.bulk, args.tasks)
    stop_on_sigterm()
    os.environ.pop("PREFECT_API_URL", None)
    name = f"api_latency_{os.getpid()}"
    with ExitStack() as cleanup:  # undone in reverse, whatever happened
        prefect_db = cleanup.enter_context(postgres(args.postgres, name))
        domain_db = None
        if args.profile == "cluster":
            domain_db = cleanup.enter_context(postgres(args.postgres, f"{name}_domain"))
            cleanup.enter_context(redis_database(args.redis))
        return run(args, prefect_db, domain_db)


@contextmanager
def postgres(server: str, name: str) -> Iterator[str]:
    """A fresh database (asyncpg URL), dropped on the way out whatever happened."""
    admin = create_engine(f"postgresql+psycopg://{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+asyncpg://{server}/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        print(f"database {name} dropped", file=sys.stderr)


@contextmanager
def redis_database(url: str) -> Iterator[None]:
    import redis

    client = redis.Redis.from_url(url)
    try:
        if client.dbsize():
            raise SystemExit(f"{url} holds keys: give --redis an empty database")
        os.environ["REDIS_URL"] = url
        yield
    finally:
        client.flushdb()
        client.close()
        print(f"redis {url} flushed", file=sys.stderr)


def run(args: argparse.Namespace, prefect_db: str, domain_db: str | None) -> int:
    began = time.monotonic()
    logs = PROJECT_DIR / ".stack-logs" / "api-latency"
    shutil.rmtree(logs, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="api-latency-") as tmp:
        os.environ["PREFECT_API_DATABASE_CONNECTION_URL"] = prefect_db
        if domain_db is None:
            db_url = f"sqlite:///{tmp}/biasbench.db"
        else:
            db_url = domain_db.replace("+asyncpg", "+psycopg")
        os.environ["DB_URL"] = db_url
        with Stack(port=PORT, api_port=None, logs=logs, profile=args.profile) as stack:
            print(f"stack ({args.profile}) up in {time.monotonic() - began:.0f} s", flush=True)
            started = time.monotonic()
            asyncio.run(populate(args.bulk, prefect_db))
            populated = time.monotonic() - started
            print(
                f"{args.bulk} tasks created in {populated:.0f} s "
                f"({args.bulk / populated:.0f} runs/s)",
                flush=True,
            )
            copied = 0.0
            if args.tasks > args.bulk:
                sync_db = prefect_db.replace("+asyncpg", "+psycopg")
                copied = multiply(sync_db, args.tasks - args.bulk)
                print(f"{args.tasks - args.bulk} copies written in {copied:.0f} s", flush=True)
            asyncio.run(check_count(args.tasks))
            base, server = serve_shim(db_url)
            load_before = os.getloadavg()
            started = time.monotonic()
            try:
                results = asyncio.run(measure(base, db_url, args.requests, args.tasks))
            finally:
                server.should_exit = True
            measured = time.monotonic() - started
            load_after = os.getloadavg()
            if args.throughput:
                started = time.monotonic()
                throughput = add_throughput.measure(
                    stack.env, logs, adds=args.throughput, clients=args.clients, rounds=args.rounds
                )
                throughput_took = time.monotonic() - started
                load_throughput = os.getloadavg()
    print(
        f"\n{args.tasks} tasks ({args.profile} profile), {args.requests} requests each, "
        "alternating; milliseconds"
    )
    print(f"{'':24} {'shim p50':>9} {'p95':>7} {'bare p50':>9} {'p95':>7} {'ratio p50':>10}")
    for name, (shim, bare) in results.items():
        ratio = statistics.median(shim) / statistics.median(bare)
        print(
            f"{name:24} {p(shim, 50):9.1f} {p(shim, 95):7.1f} {p(bare, 50):9.1f} "
            f"{p(bare, 95):7.1f} {ratio:10.2f}"
        )
    print("(target: ratio <= 2)")
    print(
        f"1-min load {load_before[0]:.2f} before measuring, {load_after[0]:.2f} after; "
        f"populating {populated:.0f} s + copies {copied:.0f} s, measuring {measured:.0f} s"
    )
    if args.throughput:
        add_throughput.report(throughput, args.clients)
        print(f"  {throughput_took:.0f} s, 1-min load {load_throughput[0]:.2f} after")
    print(f"{time.monotonic() - began:.0f} s in all (stack start and stop included)")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        print("interrupted: the stack is stopped and the databases dropped", file=sys.stderr)
        raise SystemExit(130) from None
