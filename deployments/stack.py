"""The whole queue on one machine, supervised: Prefect server (SQLite), GPU worker, manager.

Used by `make serve` (foreground until Ctrl-C) and `make run` (the demo). Every child runs in
its own process group and is stopped with a timeout: `prefect worker` is known to ignore
SIGTERM for minutes, so it gets SIGKILL after the grace period."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType

import httpx
from prefect import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from biasbench.queue import control, gateway
from biasbench.queue.model import GPU_POOL, MANAGER_POOL
from deployments.launcher import SOCKET_ENV
from deployments.setup import PROJECT_DIR, setup
from deployments.warm_start import wait_ready, warm_start_command

DEFAULT_PORT = 4200
DEFAULT_API_PORT = 8765  # the original queue API's port, so existing clients need no change
STOP_GRACE_SECONDS = 10


class Stack:
    """Start with `with Stack() as stack:`; everything started is stopped on exit."""

    def __init__(
        self,
        *,
        gpu_slots: int = 1,
        port: int = DEFAULT_PORT,
        api_port: int | None = DEFAULT_API_PORT,
        logs: Path | None = None,
    ) -> None:
        """api_port: where the /queue REST API listens (None: not started)."""
        self.gpu_slots = gpu_slots
        self.api_port = api_port
        self.external_api = os.environ.get("PREFECT_API_URL")
        self.api_url = self.external_api or f"http://127.0.0.1:{port}/api"
        self.ui_url = self.api_url.removesuffix("/api")
        self.port = port
        self.logs = logs or PROJECT_DIR / ".stack-logs"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        # A short path: Unix socket paths are limited to about 100 bytes.
        self._sockets = tempfile.TemporaryDirectory(prefix="biasbench-")
        self.warm_socket = Path(self._sockets.name) / "warm.sock"
        self.env = {
            **os.environ,
            "PREFECT_API_URL": self.api_url,
            "PREFECT_UI_API_URL": self.api_url,
            "PREFECT_WORKER_QUERY_SECONDS": "0.5",
            # Queued runs wait on purpose: Prefect's "Late" renaming would only confuse.
            "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false",
            SOCKET_ENV: str(self.warm_socket),
        }
        # Every Prefect client of this process talks to the stack's server, never to an
        # ephemeral one (Prefect read its settings at import, before this object existed).
        self._context = ExitStack()

    def __enter__(self) -> Stack:
        self.logs.mkdir(parents=True, exist_ok=True)
        self._context.enter_context(temporary_settings(updates={PREFECT_API_URL: self.api_url}))
        try:
            if self.external_api is None:
                self._start_server()
            setup(gpu_slots=self.gpu_slots)
            self._start("warm-start", warm_start_command(self.warm_socket))
            wait_ready(self.warm_socket, self.processes["warm-start"])
            self.start_gpu_worker()
            manager_pool = ["--pool", MANAGER_POOL, "--limit", "1", "--type", "process"]
            self._start("manager-worker", ["prefect", "worker", "start", *manager_pool])
            asyncio.run(_start_manager())
            if self.api_port is not None:
                self.env["QUEUE_API_PORT"] = str(self.api_port)
                self._start("queue-api", ["queue_api"])
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
    ) -> None:
        self.stop()

    def _start_server(self) -> None:
        address = ["--host", "127.0.0.1", "--port", str(self.port)]
        self._start("server", ["prefect", "server", "start", *address])
        self._wait_healthy()

    def start_gpu_worker(self) -> None:
        """The one worker of the GPU pool: `--limit` keeps it to one run per GPU slot, also
        while a cancelled run's process is still exiting."""
        pool = ["--pool", GPU_POOL, "--limit", str(self.gpu_slots), "--type", "process"]
        self._start("gpu-worker", ["prefect", "worker", "start", *pool])

    def restart_server(self) -> None:
        """Stop the Prefect server and start it again on the same port and database. Workers,
        the manager and running flows retry their calls meanwhile."""
        if self.external_api is not None:
            raise RuntimeError("the stack does not run this server")
        stop_process_group(self.processes.pop("server"))
        self._start_server()

    def _start(self, name: str, args: list[str]) -> None:
        """`args` run as `python -m ...`, in their own process group, logging to logs/name.log."""
        log = (self.logs / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=PROJECT_DIR,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _wait_healthy(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.processes["server"].poll() is not None:
                raise RuntimeError(f"prefect server exited; see {self.logs / 'server.log'}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(
            f"prefect server not healthy after {timeout} s; see {self.logs / 'server.log'}"
        )

    def stop(self) -> None:
        """Manager first, then the running task (requeued, so the next start resumes it), then
        the workers, the server last."""
        if self.processes.get("gpu-worker") is not None:
            try:
                asyncio.run(wind_down())
            except Exception as exc:
                print(f"warning: could not wind the queue down cleanly: {exc}", file=sys.stderr)
        for name in ("queue-api", "manager-worker", "gpu-worker", "warm-start", "server"):
            if (process := self.processes.pop(name, None)) is not None:
                stop_process_group(process)
        self._context.close()
        self._sockets.cleanup()


def stop_process_group(process: subprocess.Popen[bytes], grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM the process group, SIGKILL it after `grace` seconds."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    except ProcessLookupError:
        pass


async def wind_down(timeout: float = 20) -> None:
    """Cancel the manager and the running task (their processes are stopped by the workers),
    then put the task back in the queue: nothing submitted is lost, and a retry resumes."""
    async with get_client() as client:
        await gateway.wind_down(client, timeout)


async def _start_manager() -> None:
    async with get_client() as client:
        await control.start(client, after_reboot=True)
