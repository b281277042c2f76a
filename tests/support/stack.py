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
from uuid import UUID

from prefect import get_client
from prefect.client.schemas.actions import WorkPoolUpdate
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.states import Cancelled
from prefect.utilities.asyncutils import run_coro_as_sync

from biasbench.queue import control, gateway
from biasbench.queue.model import MANAGER_FLOW, MANAGER_POOL
from deployments.launcher import SOCKET_ENV, checkout_first, interpreter_first
from deployments.process_tree import stop_process_group
from deployments.warm_start import wait_ready, warm_start_command
from tests.support.processes import launcher_pid

REPO = Path(__file__).resolve().parents[2]


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


MANAGER_WORKER = [
    *(sys.executable, "-m", "prefect", "worker", "start"),
    *("--pool", MANAGER_POOL, "--limit", "1", "--type", "process"),
]


class RunningStack:
    """The worker processes, and a manager run of the manager's deployment that its worker
    runs, as under `serve`; `kill_manager` and `restart_manager` take the real paths."""

    def __init__(self, env: dict[str, str], logs: Path, gpu_slots: int) -> None:
        self.env, self.logs = env, logs
        socket = Path(env[SOCKET_ENV])
        warm = _start([sys.executable, "-m", *warm_start_command(socket)], env, logs / "warm.log")
        wait_ready(socket, warm)
        worker = ["prefect", "worker", "start", "--pool", "gpu", "--limit", str(gpu_slots)]
        run_coro_as_sync(_pause_manager_pool(False))
        self.processes = {
            "warm-start": warm,
            "worker": _start(
                [sys.executable, "-m", *worker, "--type", "process"], env, logs / "worker.log"
            ),
            # The manager's output goes to its worker's log.
            "manager-worker": _start(MANAGER_WORKER, env, logs / "manager.log"),
        }
        run_coro_as_sync(_start_manager())

    def kill_manager(self) -> None:
        """SIGKILL the manager's process, as the OOM killer would; its worker reports the run
        Crashed. The manager's pool stays paused, so the server's revival of the manager waits
        until `restart_manager`: meanwhile no manager watches the queue."""
        run_coro_as_sync(_pause_manager_pool(True))
        if (run := run_coro_as_sync(_running_manager())) is None:
            return
        os.kill(launcher_pid(run), signal.SIGKILL)
        deadline = time.monotonic() + 60
        while run_coro_as_sync(_state_type(run.id)) != StateType.CRASHED:
            assert time.monotonic() < deadline, "the manager's worker did not report the crash"
            time.sleep(0.2)

    def restart_manager(self) -> None:
        """SIGKILL the manager (if alive); the server's automation starts a new one
        (deployments/manager_revival.py), which its worker runs once the pool is unpaused."""
        killed = run_coro_as_sync(_running_manager())
        self.kill_manager()
        run_coro_as_sync(_pause_manager_pool(False))
        deadline = time.monotonic() + 120
        while (new := run_coro_as_sync(_running_manager())) is None or (
            killed is not None and new.id == killed.id
        ):
            assert time.monotonic() < deadline, "no new manager runs"
            time.sleep(0.5)

    def stop(self) -> None:
        for process in self.processes.values():
            stop_process_group(process)
        run_coro_as_sync(_end_managers())  # the next module's stack starts its own


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
        # As the stack sets them: the job command's `python` and code are this checkout's.
        "PATH": interpreter_first(os.environ.get("PATH")),
        "PYTHONPATH": checkout_first(os.environ.get("PYTHONPATH"), str(REPO)),
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


_MANAGERS = FlowFilter(name=FlowFilterName(any_=[MANAGER_FLOW]))


async def _running_manager() -> FlowRun | None:
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_filter=_MANAGERS,
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
            ),
        )
        return runs[0] if runs else None


async def _state_type(run_id: UUID) -> StateType | None:
    async with get_client() as client:
        state = (await client.read_flow_run(run_id)).state
        return state.type if state else None


async def _pause_manager_pool(paused: bool) -> None:
    async with get_client() as client:
        await client.update_work_pool(MANAGER_POOL, WorkPoolUpdate(is_paused=paused))


async def _start_manager() -> None:
    async with get_client() as client:
        await control.start(client)


async def _end_managers() -> None:
    """Test clean-up: the manager runs of this stack, whose processes are gone, end as
    Cancelled (not Crashed, which the server would revive)."""
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_filter=_MANAGERS,
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(
                        any_=[StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING]
                    )
                )
            ),
        )
        for run in runs:
            await client.set_flow_run_state(
                run.id, Cancelled(message="test stack stopped"), force=True
            )
