"""A user's night under `python -m deployments serve`, for the fault matrix (tests/faults/).

The stack runs exactly as a user starts it: `serve` with its own Prefect server (SQLite in the
test's PREFECT_HOME), GPU worker, manager, warm starter and `/queue` API, messages going to a
Bot API test server. The night is a small pipeline with every shape the queue wires: a chain
of four levels that fans out into two benchmarks, and an independent task. One benchmark is
slow (the fault lands in it); the rest are quick.

What the matrix checks afterwards is read back from Prefect (state histories), from the
domain database (result rows) and from the Bot API server (messages), never from the stack."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from itertools import combinations, pairwise
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
from prefect import get_client
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy import func, select

from biasbench.db.engine import ready_engine, session_scope
from biasbench.db.models import AttrgenRun, BenchmarkResult, BenchmarkRun, PersonaAttribute
from biasbench.queue.submit import SubmitRequest, submit
from deployments.process_tree import STACK_ENV
from tests.support.ports import free_port
from tests.support.process_tree import command_line, descendants
from tests.support.processes import alive, flow_process_pids
from tests.support.stack import REPO
from tests.support.telegram_server import CHAT_ID, TOKEN, TelegramServer

# The slow benchmark: 4 personas x 15 traits = 60 questions, 0.4 s each, about 25 s of work.
SLOW_SECONDS = 0.4
DRAINED = "🏁 <b>All queued tasks processed</b>"


@dataclass(frozen=True)
class Task:
    label: str
    task_type: str
    config: dict[str, Any]
    upstream: tuple[str, ...] = ()


def pipeline(llm: dict[str, Any]) -> list[Task]:
    """In submission order, which is also the order they must run in. `llm` configures the
    slow benchmark (the fake backend, or a real OpenAI-compatible server)."""
    fake = {"llm": "fake", "model_name": "fake-model", "batch_size": 4}
    return [
        Task("night-pool", "pool_gen", {"n": 40, "seed": 5}),
        Task("night-balanced", "balanced_gen", {"n": 4, "seed": 1}, ("night-pool",)),
        Task("night-attrgen", "attrgen", fake, ("night-balanced",)),
        Task("night-slow-bench", "benchmark", {**llm, "batch_size": 1}, ("night-attrgen",)),
        Task("night-quick-bench", "benchmark", fake, ("night-attrgen",)),
        Task("night-lone-pool", "pool_gen", {"n": 10, "seed": 9}),
    ]


FAKE_SLOW = {"llm": "fake", "model_name": f"fake-model@slow={SLOW_SECONDS}"}


@dataclass
class Night:
    home: Path
    telegram: TelegramServer
    port: int = field(default_factory=free_port)  # the Prefect server's
    api_port: int = field(default_factory=free_port)  # the /queue API's
    serve: subprocess.Popen[bytes] | None = None
    ids: dict[str, str] = field(default_factory=dict)  # label -> flow-run id
    seen: set[int] = field(default_factory=set)  # every process of the stack ever seen
    serve_args: tuple[str, ...] = ()  # more options for `serve` (e.g. --role control)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def queue_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/queue"

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.home / 'queue.db'}"

    def env(self) -> dict[str, str]:
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TELEGRAM_", "SMTP_", "PREFECT_API_URL", STACK_ENV))
        }
        return {
            **inherited,
            "PREFECT_HOME": str(self.home / "prefect"),
            "DB_URL": self.db_url,
            "PREFECT_LOGGING_LEVEL": "INFO",  # the logs say what each process did
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_CHAT_ID": CHAT_ID,
            "TELEGRAM_API_BASE": self.telegram.base_url,
        }

    # --- the stack ---------------------------------------------------------------------------

    def start_serve(self, timeout: float = 240) -> None:
        """`serve`, until its /queue API answers and a manager runs."""
        log = (self.home / "serve.log").open("ab")
        command = [sys.executable, "-m", "deployments", "serve"]
        ports = ["--port", str(self.port), "--api-port", str(self.api_port)]
        ports += ["--logs", str(self.home / "logs")]
        self.serve = subprocess.Popen(
            [*command, *ports, *self.serve_args],
            cwd=REPO,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not self._manager_runs():
            if self.serve.poll() is not None:
                raise AssertionError(f"serve exited {self.serve.returncode}:\n{self.serve_log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the stack did not come up in {timeout} s")
            time.sleep(0.5)
        self.note_processes()

    def _manager_runs(self) -> bool:
        try:
            stats = httpx.get(f"{self.queue_url}/stats", timeout=5)
        except httpx.TransportError:
            return False
        return stats.status_code == 200 and bool(stats.json()["executor_running"])

    def serve_log(self) -> str:
        return (self.home / "serve.log").read_text(errors="replace")

    def note_processes(self) -> None:
        """Remember the stack's processes as they are now (checked for leftovers at the end)."""
        if self.serve is not None and self.serve.poll() is None:
            self.seen.update(descendants(self.serve.pid))

    def child(self, name: str) -> int:
        """The pid of the stack's child `name` (server, gpu-worker, queue-api, ...)."""
        assert self.serve is not None
        for pid in descendants(self.serve.pid):
            if _stack_name(pid) == name and _stack_name(_parent(pid)) != name:
                return pid
        raise AssertionError(f"no {name} process under serve")

    def stop_serve(self, timeout: float = 180) -> None:
        """Ctrl-C, as a user stops it; every process of the stack must then be gone."""
        assert self.serve is not None
        self.note_processes()
        self.serve.send_signal(signal.SIGINT)
        try:
            self.serve.wait(timeout)
        finally:
            if self.serve.poll() is None:
                os.killpg(self.serve.pid, signal.SIGKILL)

    def kill_serve(self) -> None:
        assert self.serve is not None
        self.note_processes()
        self.serve.send_signal(signal.SIGKILL)
        self.serve.wait(10)

    def leftovers(self, timeout: float = 60) -> list[str]:
        """The stack's processes still alive `timeout` s after it stopped (none, we hope)."""
        deadline = time.monotonic() + timeout
        while (left := [p for p in self.seen if alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.5)
        flows = [p for run in self.ids.values() for p in flow_process_pids(run)]
        return [command_line(p) for p in {*left, *flows} if alive(p)]

    # --- the night's work -----------------------------------------------------------------

    @contextmanager
    def prefect(self) -> Iterator[None]:
        """This process's Prefect client talks to the night's server."""
        with temporary_settings(updates={PREFECT_API_URL: self.api_url}):
            yield

    def submit(self, tasks: list[Task]) -> None:
        async def submit_all() -> None:
            async with get_client() as client:
                for task in tasks:
                    upstream = [self.ids[label] for label in task.upstream]
                    self.ids[task.label] = await submit(
                        client,
                        SubmitRequest(
                            task.task_type, task.config, upstream=upstream, label=task.label
                        ),
                    )

        with self.prefect():
            asyncio.run(submit_all())

    def results_of(self, label: str) -> int:
        """Benchmark rows stored so far by the task with this label."""
        with session_scope(ready_engine(self.db_url)) as session:
            return (
                session.scalar(
                    select(func.count())
                    .select_from(BenchmarkResult)
                    .join(BenchmarkRun, BenchmarkRun.id == BenchmarkResult.run_id)
                    .where(BenchmarkRun.prefect_flow_run_id == self.ids[label])
                )
                or 0
            )

    def wait_for_results(self, label: str, at_least: int, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while self.results_of(label) < at_least:
            assert time.monotonic() < deadline, f"{label} stored no {at_least} results"
            time.sleep(0.3)

    def wait_all_final(self, timeout: float = 420) -> list[FlowRun]:
        with self.prefect():
            return asyncio.run(_wait_final(list(self.ids.values()), timeout))


def _stack_name(pid: int) -> str | None:
    """The child name in a process's BIASBENCH_STACK variable (the stack's processes carry it)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for entry in environ:
        if entry.startswith(f"{STACK_ENV}=".encode()):
            return entry.decode().rsplit("/", 1)[-1]
    return None


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _settled(run: FlowRun) -> bool:
    """Final, and not Crashed: the queue puts a crashed task back, or fails it, within seconds."""
    return run.state is not None and run.state.is_final() and run.state.type != StateType.CRASHED


async def _wait_final(ids: list[str], timeout: float) -> list[FlowRun]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            async with get_client() as client:
                runs = [await client.read_flow_run(UUID(i)) for i in ids]
            if all(_settled(r) for r in runs):
                return runs
        except httpx.HTTPError:  # the server may be down: that is the fault under test
            runs = []
        if time.monotonic() > deadline:
            states = [(r.name, r.state_name) for r in runs]
            raise AssertionError(f"not all final after {timeout} s: {states}")
        await asyncio.sleep(1)


# --- what the matrix checks ------------------------------------------------------------------


@dataclass(frozen=True)
class Timeline:
    """Each task's spans in a Running state, from Prefect's state histories."""

    running: dict[str, list[tuple[datetime, datetime]]]
    history: dict[str, list[str]]  # label -> its state names, oldest first

    def overlaps(self) -> list[tuple[str, str]]:
        spans = [(label, s) for label, ss in self.running.items() for s in ss]
        return [
            (a, b)
            for (a, (a0, a1)), (b, (b0, b1)) in combinations(spans, 2)
            if a != b and a0 < b1 and b0 < a1
        ]

    def order(self) -> list[str]:
        """The labels by first start."""
        started = {label: min(s[0] for s in spans) for label, spans in self.running.items()}
        return sorted(started, key=started.__getitem__)


async def timeline(labels_by_id: dict[str, str]) -> Timeline:
    running: dict[str, list[tuple[datetime, datetime]]] = {}
    history: dict[str, list[str]] = {}
    async with get_client() as client:
        for run_id, label in labels_by_id.items():
            states: list[State] = sorted(
                await client.read_flow_run_states(UUID(run_id)), key=lambda s: s.timestamp
            )
            running[label] = [
                (state.timestamp, after.timestamp)
                for state, after in pairwise(states)
                if state.type == StateType.RUNNING
            ]
            history[label] = [str(state.name) for state in states]
    return Timeline(running, history)


def stood_still(night: Night, tl: Timeline) -> float:
    """The longest time in the night with no progress at all: no task starting or ending and
    no result stored. On a healthy queue it is the gap between two tasks (about 2 s)."""
    moments = [t for spans in tl.running.values() for span in spans for t in span]
    engine = ready_engine(night.db_url)
    with session_scope(engine) as session:
        moments += [
            t.replace(tzinfo=moments[0].tzinfo) if t.tzinfo is None else t
            for t in session.scalars(select(BenchmarkResult.created_at))
        ]
    moments.sort()
    return max((b - a).total_seconds() for a, b in pairwise(moments))


@dataclass(frozen=True)
class Stored:
    """What the night left in the domain database, per task label."""

    benchmark_runs: dict[str, int]  # label -> benchmark runs recorded for its flow run
    planned: dict[str, int]  # label -> questions its plan holds
    answered: dict[str, int]  # label -> result rows (one per key: the schema's unique key)
    attrgen_runs: int
    attributes: int


def stored(night: Night, benchmarks: list[str], attrgen: str) -> Stored:
    """Exactly once means: one domain run per task, however often it was started, and every
    planned question answered (a lost result would show as fewer rows than planned)."""
    with session_scope(ready_engine(night.db_url)) as session:
        runs = {
            label: list(
                session.scalars(
                    select(BenchmarkRun).where(BenchmarkRun.prefect_flow_run_id == night.ids[label])
                )
            )
            for label in benchmarks
        }
        attrgen_runs = list(
            session.scalars(
                select(AttrgenRun).where(AttrgenRun.prefect_flow_run_id == night.ids[attrgen])
            )
        )
        attributes = session.scalar(
            select(func.count())
            .select_from(PersonaAttribute)
            .where(PersonaAttribute.attrgen_run_id.in_([r.id for r in attrgen_runs]))
        )
        return Stored(
            benchmark_runs={label: len(rs) for label, rs in runs.items()},
            planned={label: sum(r.planned for r in rs) for label, rs in runs.items()},
            answered={label: night.results_of(label) for label in benchmarks},
            attrgen_runs=len(attrgen_runs),
            attributes=attributes or 0,
        )
