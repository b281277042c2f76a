"""The fault matrix (README, "What survives what"): a user's night under `python -m deployments
serve`, with one real fault injected while the slow benchmark is half-way. Whatever the fault,
the user expects the same morning: every task completed, one domain run per task with every
planned result stored once, no two tasks running at the same time, the submission order kept,
every task end announced exactly once, and nothing of the stack left once it stopped.

Each night prints how long the queue stood still (the longest time without any progress),
the figure README's matrix keeps; nothing here asserts a duration."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType

from biasbench.queue.model import MANAGER_FLOW
from tests.support.night import (
    DRAINED,
    FAKE_SLOW,
    SLOW_SECONDS,
    Night,
    pipeline,
    stood_still,
    stored,
    timeline,
)
from tests.support.notifications import wait_for_message
from tests.support.ports import free_port
from tests.support.processes import flow_process_pids, launcher_pid
from tests.support.stack import REPO
from tests.support.telegram_server import TelegramServer

SLOW_BENCH, QUICK_BENCH, ATTRGEN = "night-slow-bench", "night-quick-bench", "night-attrgen"


class LLMServer:
    """An OpenAI-compatible server in a process of its own, that a fault can SIGKILL and start
    again on the same port (as vLLM restarted by systemd would come back)."""

    def __init__(self, home: Path) -> None:
        self.port = free_port()
        self.log = home / "llm-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [sys.executable, "-m", "tests.support.openai_server", "--port", str(self.port)]
        options = ["--latency", str(SLOW_SECONDS), "--workers", "1", "--answers", "fake"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*command, *options, "--model", "served-model"],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().startswith(b"READY"), self.log.read_text()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()


@dataclass
class Fault:
    name: str
    inject: Callable[[Night], str]  # does it, while the slow benchmark runs; says what it did
    llm: dict[str, Any] = field(default_factory=lambda: dict(FAKE_SLOW))
    says: str | None = None  # the critical message the supervisor sends about it


@dataclass(frozen=True)
class Morning:
    runs: dict[str, str]  # label -> state name
    what_happened: str
    stood_still: float


@pytest.fixture
def night(tmp_path: Path) -> Iterator[Night]:
    with TelegramServer() as telegram:
        night = Night(tmp_path, telegram)
        try:
            yield night
        finally:
            if night.serve is not None and night.serve.poll() is None:
                os.killpg(night.serve.pid, signal.SIGKILL)


def live_through(night: Night, fault: Fault) -> Morning:
    """Start the stack, queue the night, inject the fault half-way through the slow benchmark,
    wait for the end and the "all processed" message, stop the stack as a user would."""
    night.start_serve()
    tasks = pipeline(fault.llm)
    night.submit(tasks)
    night.wait_for_results(SLOW_BENCH, at_least=10)
    what_happened = fault.inject(night)
    runs = night.wait_all_final()
    # The end message comes after every task's: once it is there, no task message is pending.
    wait_for_message(night.telegram, DRAINED, timeout=120)
    with night.prefect():
        tl = asyncio.run(timeline({v: k for k, v in night.ids.items()}))
    night.stop_serve()
    leftovers = night.leftovers()

    assert not leftovers, f"processes of the stack left after it stopped: {leftovers}"
    assert tl.overlaps() == [], "two tasks ran at the same time"
    assert tl.order() == [t.label for t in tasks], "the queue's order was not kept"
    result = stored(night, [SLOW_BENCH, QUICK_BENCH], ATTRGEN)
    assert result.benchmark_runs == {SLOW_BENCH: 1, QUICK_BENCH: 1}
    assert result.answered == result.planned, "a planned result is missing"
    assert all(n > 0 for n in result.planned.values())
    assert (result.attrgen_runs, result.attributes) == (1, 4 * 3)  # name, appearance, biography
    texts = night.telegram.texts()
    if fault.says is not None:
        assert [t for t in texts if fault.says in t], f"no message saying {fault.says!r}"
    for task in tasks:
        announced = [t for t in texts if f"“{task.label}”" in t]
        assert len(announced) == 1, f"{task.label} announced {len(announced)} times: {texts}"

    still = stood_still(night, tl)
    print(
        f"\n{fault.name}: {what_happened}; the queue stood still {still:.1f} s at most; "
        f"the slow benchmark went {' → '.join(tl.history[SLOW_BENCH])}"
    )
    return Morning({r.name: str(r.state_name) for r in runs}, what_happened, still)


# --- the faults ------------------------------------------------------------------------------


def kill_flow_process(night: Night) -> str:
    pids = flow_process_pids(night.ids[SLOW_BENCH])
    assert pids, "the slow benchmark has no flow process to kill"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return "the slow benchmark's flow process SIGKILLed"


def kill_worker_and_flow(night: Night) -> str:
    flow = flow_process_pids(night.ids[SLOW_BENCH])
    assert flow, "the slow benchmark has no flow process to kill"
    os.killpg(night.child("gpu-worker"), signal.SIGKILL)
    for pid in flow:  # (it may already have gone with the worker)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return "the GPU worker and the benchmark's flow process SIGKILLed"


def kill_server(night: Night) -> str:
    os.killpg(night.child("server"), signal.SIGKILL)
    return "the Prefect server SIGKILLed"


def stop_server_for_two_minutes(night: Night) -> str:
    server = night.child("server")
    os.killpg(server, signal.SIGSTOP)
    time.sleep(120)
    os.killpg(server, signal.SIGCONT)
    return "the Prefect server SIGSTOPped for 120 s, then SIGCONTed"


def kill_manager(night: Night) -> str:
    async def manager_pid() -> int:
        async with get_client() as client:
            (run,) = await client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[MANAGER_FLOW])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
                ),
            )
            return launcher_pid(run)

    with night.prefect():
        os.kill(asyncio.run(manager_pid()), signal.SIGKILL)
    return "the queue manager's process SIGKILLed"


def kill_queue_api(night: Night) -> str:
    os.killpg(night.child("queue-api"), signal.SIGKILL)
    killed = time.monotonic()
    while True:
        try:
            if httpx.get(f"{night.queue_url}/stats", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() - killed < 120, "the /queue API did not come back"
        time.sleep(0.2)
    return f"the /queue API SIGKILLed (answering again after {time.monotonic() - killed:.1f} s)"


def kill_serve_and_serve_again(night: Night) -> str:
    night.kill_serve()
    assert not night.leftovers(), "serve's processes outlived it"
    night.start_serve()
    return "serve SIGKILLed (its whole stack went with it), then a new serve started"


def restarted(process: str) -> str:
    return f"⚠️ <b>CRITICAL</b>: the {process} died (exit -9, SIGKILL) and was restarted."


FAULTS = [
    Fault("Prefect server SIGKILLed", kill_server, says=restarted("Prefect server")),
    Fault("Prefect server SIGSTOPped", stop_server_for_two_minutes),
    Fault("GPU worker and flow SIGKILLed", kill_worker_and_flow, says=restarted("GPU worker")),
    Fault("flow process SIGKILLed", kill_flow_process),
    Fault("queue manager SIGKILLed", kill_manager, says="CRITICAL: queue manager Crashed"),
    Fault("/queue API SIGKILLed", kill_queue_api, says=restarted("/queue API")),
    Fault("serve SIGKILLed, then served again", kill_serve_and_serve_again),
]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.inject.__name__ for f in FAULTS])
def test_the_night_survives(night: Night, fault: Fault) -> None:
    morning = live_through(night, fault)
    assert set(morning.runs.values()) == {"Completed"}, morning.runs


def test_the_night_survives_its_llm_server_dying_for_30_seconds(night: Night) -> None:
    llm = LLMServer(night.home)
    llm.start()

    def kill_llm_for_30_seconds(night: Night) -> str:
        llm.kill()
        time.sleep(30)
        llm.start()
        return "the LLM server SIGKILLed, back on its port 30 s later"

    config = {"llm": "vllm", "vllm_base_url": llm.base_url, "model_name": "served-model"}
    try:
        morning = live_through(
            night, Fault("LLM server down 30 s", kill_llm_for_30_seconds, config)
        )
    finally:
        llm.kill()
    assert set(morning.runs.values()) == {"Completed"}, morning.runs
