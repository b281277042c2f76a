"""The queue's processes, started for real against the test session's Prefect server: the GPU
worker (`prefect worker start --limit 1`) and the queue manager, in their own process groups."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.states import Crashed
from prefect.utilities.asyncutils import run_coro_as_sync

from biasbench.queue import gateway
from biasbench.queue.model import MANAGER_FLOW
from deployments.launcher import SOCKET_ENV
from deployments.process_tree import stop_process_group
from deployments.warm_start import wait_ready, warm_start_command

REPO = Path(__file__).resolve().parents[2]


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


MANAGER = [
    sys.executable,
    "-c",
    "import asyncio; from flows.queue_manager import queue_manager; asyncio.run(queue_manager())",
]


class RunningStack:
    """The worker and manager processes; `restart_manager` kills and replaces the manager."""

    def __init__(self, env: dict[str, str], logs: Path, gpu_slots: int) -> None:
        self.env, self.logs = env, logs
        socket = Path(env[SOCKET_ENV])
        warm = _start([sys.executable, "-m", *warm_start_command(socket)], env, logs / "warm.log")
        wait_ready(socket, warm)
        worker = ["prefect", "worker", "start", "--pool", "gpu", "--limit", str(gpu_slots)]
        self.processes = {
            "warm-start": warm,
            "worker": _start(
                [sys.executable, "-m", *worker, "--type", "process"], env, logs / "worker.log"
            ),
            "manager": _start(MANAGER, env, logs / "manager.log"),
        }

    def kill_manager(self) -> None:
        """SIGKILL the manager (if alive). Its run is marked Crashed, as the worker that runs
        the manager in production would."""
        manager = self.processes["manager"]
        if manager.poll() is None:
            os.killpg(manager.pid, signal.SIGKILL)
            manager.wait(10)
            run_coro_as_sync(_crash_running_managers())  # also from inside an event loop

    def restart_manager(self) -> None:
        """SIGKILL the manager (if alive) and start a new one."""
        self.kill_manager()
        self.processes["manager"] = _start(MANAGER, self.env, self.logs / "manager.log")

    def stop(self) -> None:
        for process in self.processes.values():
            stop_process_group(process)


@contextmanager
def queue_stack(
    api_url: str,
    db_url: str,
    logs: Path,
    *,
    gpu_slots: int = 1,
    extra_env: dict[str, str] | None = None,
) -> Iterator[RunningStack]:
    env = {
        **os.environ,
        **(extra_env or {}),
        "PREFECT_API_URL": api_url,
        "DB_URL": db_url,
        "PREFECT_WORKER_QUERY_SECONDS": "0.5",
        "PREFECT_LOGGING_LEVEL": "INFO",
        # Unix socket paths must stay short; the test's log directory may not be.
        SOCKET_ENV: f"{tempfile.mkdtemp(prefix='biasbench-')}/warm.sock",
    }
    command = [sys.executable, "-m", "deployments", "setup", "--gpu-slots", str(gpu_slots)]
    subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True)
    run_coro_as_sync(gateway.clear_stop())  # a stop left by an earlier test would end the manager
    stack = RunningStack(env, logs, gpu_slots)
    try:
        time.sleep(1)
        yield stack
    finally:
        stack.stop()


async def _crash_running_managers() -> None:
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[MANAGER_FLOW])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
            ),
        )
        for run in runs:
            await client.set_flow_run_state(
                run.id, Crashed(message="killed by the test"), force=True
            )
