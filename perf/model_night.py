"""A night of three models on one GPU: what the model host saves against kill-and-cold-start.

12 benchmark tasks over 3 models, submitted interleaved (A B C A B C ...), each about 20 s of
requests at a fixed latency; the model server (tests/support/openai_server.py, a real process
per model, started by a real model host from its catalogue) takes 15 s to load cold and 1 s
to wake from sleep level 1. The same night runs three ways on this machine:

1. model host + model grouping (this project): the order comes from the queue's own grouping
   rule (biasbench.queue.grouping, QUEUE_MAX_OVERTAKE=8); a swap puts the old model to sleep
   and wakes or starts the new one;
2. llama-swap's way: FIFO, and every model change kills the server and cold-starts the next;
3. the lower bound, today's way without hosts: all three servers started by hand before the
   night (all three in memory at once), then the tasks in FIFO order.

Printed: makespan, GPU busy share (time with a request in flight ÷ makespan), cold starts and
wakes, ratios to the lower bound, and the handoff between two same-model tasks (ensure → ready
of a reused model, which adds to perf/queue_idle_gap.py's gap between tasks).

    python perf/model_night.py            # the issue's night: about 15 minutes
    python perf/model_night.py --scale 0.25   # every duration a quarter: about 4 minutes

The queue itself (Prefect, the worker) is left out: its gap between tasks is measured by
perf/queue_idle_gap.py and is the same for all three ways."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from biasbench.llm.model_host import ModelHostClient
from biasbench.llm.openai_compat import OpenAICompatClient
from biasbench.queue.grouping import ModelGrouping, grouped
from biasbench.queue.model import QueueRun
from tests.support.model_host import model_host, write_catalogue
from tests.support.stack import REPO

MODELS = ("model-a", "model-b", "model-c")
TASKS = 12
LATENCY = 0.2
IN_FLIGHT = 4
SERVER = "{python} -m tests.support.openai_server --port {port} --workers 1 --answers echo"


@dataclass
class Night:
    makespan: float
    busy: float
    cold: int
    wakes: int
    reuse_handoffs: list[float]


def catalogue(path: Path, *, load: float, wake: float, sleep: bool) -> Path:
    entries = [
        f'[models.{m}]\nserve = "{SERVER} --model {m} --latency {LATENCY} '
        f'--load-seconds {load} --wake-seconds {wake}"\n'
        f"supports_sleep = {str(sleep).lower()}\nstart_timeout = {load * 4 + 30}\n\n"
        for m in MODELS
    ]
    return write_catalogue(path, *entries)


def interleaved() -> list[str]:
    return [MODELS[i % len(MODELS)] for i in range(TASKS)]


def grouped_order(models: list[str]) -> list[str]:
    """The order the queue's grouping rule gives, replayed one release at a time."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    queue = {
        f"t{i:02}": QueueRun(
            id=f"t{i:02}",
            name=f"task {i}",
            task_type="benchmark",  # type: ignore[arg-type]
            state_type="PAUSED",
            state_name="Queued",
            created=t0 + timedelta(seconds=i),
            parameters={"model_name": m},
        )
        for i, m in enumerate(models)
    }
    order: list[str] = []
    history: list[QueueRun] = []
    loaded: frozenset[str] = frozenset()
    now = t0 + timedelta(minutes=1)
    while queue:
        ready = sorted(queue.values(), key=lambda r: r.order)
        rule = ModelGrouping(loaded=loaded, started=tuple(history))
        (first, *_) = grouped(ready, queue, rule, picks=1, now=now)
        order.append(first.parameters["model_name"])
        loaded = frozenset({order[-1]})
        history.append(replace(queue.pop(first.id), started_at=now))
        now += timedelta(seconds=20)
    return order


async def task(base_url: str, model: str, requests: int) -> float:
    """`requests` chat requests, IN_FLIGHT at a time; returns the busy time."""
    async with OpenAICompatClient(
        base_url=base_url, model_name=model, in_flight=IN_FLIGHT, unreachable_after=120
    ) as client:
        started = time.monotonic()
        queue = list(range(requests))

        async def worker() -> None:
            while queue:
                queue.pop()
                await client.chat([{"role": "user", "content": "rate"}], max_tokens=4)

        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
        return time.monotonic() - started


async def hosted_night(socket: str, order: list[str], requests: int) -> Night:
    host = ModelHostClient(socket)
    busy, handoffs = 0.0, []
    started = time.monotonic()
    for model in order:
        asked = time.monotonic()
        async with host.model(model) as loaded:
            if loaded.how == "reused":
                handoffs.append(time.monotonic() - asked)
            busy += await task(loaded.base_url, model, requests)
    makespan = time.monotonic() - started
    loads = (await host.status())["loads"]
    cold = sum(1 for load in loads if load["how"] == "cold start")
    wakes = sum(1 for load in loads if load["how"] == "woken")
    return Night(makespan, busy, cold, wakes, handoffs)


def start_by_hand(model: str, load: float) -> tuple[subprocess.Popen[bytes], str]:
    """A server started the way a user does before bed: its URL once it answers."""
    command = SERVER.format(python=sys.executable, port=0).split()
    options = ["--model", model, "--latency", str(LATENCY), "--load-seconds", str(load)]
    process = subprocess.Popen(
        [*command, *options],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode().split()
    assert line[:1] == ["READY"], line
    return process, line[1]


async def all_loaded_night(order: list[str], requests: int, load: float) -> Night:
    """Three servers up before the night (started one after another, as by hand), all in
    memory at once; then the tasks in FIFO order."""
    started = time.monotonic()
    servers = {model: start_by_hand(model, load) for model in MODELS}
    try:
        busy = 0.0
        for model in order:
            busy += await task(servers[model][1], model, requests)
        return Night(time.monotonic() - started, busy, len(MODELS), 0, [])
    finally:
        for process, _ in servers.values():
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every duration")
    args = parser.parse_args()
    load, wake, task_seconds = 15 * args.scale, 1 * args.scale, 20 * args.scale
    requests = round(task_seconds / LATENCY * IN_FLIGHT)
    models = interleaved()
    order = grouped_order(models)
    print(f"submitted: {' '.join(m[-1].upper() for m in models)}")
    print(f"grouped:   {' '.join(m[-1].upper() for m in order)}")
    print(
        f"{TASKS} tasks x {requests} requests ({task_seconds:g} s at {LATENCY} s, "
        f"{IN_FLIGHT} in flight); cold load {load:g} s, wake {wake:g} s\n"
    )
    nights: dict[str, Night] = {}
    with tempfile.TemporaryDirectory(prefix="model-night-") as tmp:
        home = Path(tmp)
        ways = {
            "model host + grouping": (True, order),
            "llama-swap (FIFO, kill + cold start)": (False, models),
        }
        for name, (sleep, tasks) in ways.items():
            place = home / name.split()[0]
            place.mkdir()
            path = catalogue(place / "models.toml", load=load, wake=wake, sleep=sleep)
            with model_host(place, path, idle_ttl=3600) as (_, socket, _state):
                nights[name] = asyncio.run(hosted_night(socket, tasks, requests))
            print(f"  ran: {name}", flush=True)
        bound_name = "all loaded (lower bound)"
        nights[bound_name] = asyncio.run(all_loaded_night(models, requests, load))
        print(f"  ran: {bound_name}", flush=True)
    bound = nights["all loaded (lower bound)"].makespan
    print(f"\n{'':40} {'makespan':>9} {'x bound':>8} {'GPU busy':>9} {'cold':>5} {'wakes':>6}")
    for name, night in nights.items():
        print(
            f"{name:40} {night.makespan:8.1f}s {night.makespan / bound:8.2f} "
            f"{night.busy / night.makespan:8.0%} {night.cold:5} {night.wakes:6}"
        )
    handoffs = nights["model host + grouping"].reuse_handoffs
    if handoffs:
        print(
            f"\nsame-model handoff (ensure -> ready, reused): median "
            f"{statistics.median(handoffs) * 1000:.0f} ms, max {max(handoffs) * 1000:.0f} ms "
            f"over {len(handoffs)} handoffs"
        )


if __name__ == "__main__":
    main()
