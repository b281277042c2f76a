"""The whole queue on one machine, supervised: Prefect server (SQLite), GPU worker, manager.

That is the "embedded" profile; the "cluster" profile runs the Prefect server as several
processes on PostgreSQL and Redis instead (cluster.py), the rest of the stack unchanged.

A role splits the stack across machines (README "Scaling out"): "control" runs everything but
the GPU side (server unless PREFECT_API_URL names one, setup, manager, /queue API); "gpu" runs
only the GPU side (warm starter, model hosts, GPU worker) against the control host's
PREFECT_API_URL and the shared DB_URL; "all" (the default) runs both.

Used by `make serve` (foreground until Ctrl-C) and `make run` (the demo). The stack starts its
machine's processes in order and stops them in reverse; in between it is their supervisor
(design.md §8, supervisor.py): what dies is restarted with backoff and announced, and a child
that keeps dying makes the stack give up and say why. Nothing of the stack outlives it, even
when it is SIGKILLed (process_tree.py): every process carries the stack's token in its
environment, children get PR_SET_PDEATHSIG, and the reaper, started first so that it sees every
session, kills what is left.

Every child runs in its own process group and is stopped with a timeout (`prefect worker` is
known to ignore SIGTERM for minutes)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType

import httpx
from prefect import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from biasbench.db.engine import migrate
from biasbench.queue import control, gateway
from biasbench.queue.model import GPU_POOL, MANAGER_POOL
from biasbench.settings import Settings
from deployments import cluster
from deployments.automations import finish_silent_runs
from deployments.launcher import SOCKET_ENV, checkout_first, interpreter_first
from deployments.process_tree import (
    STACK_ENV,
    close_reaper,
    die_with,
    stack_processes,
    start_time,
    stop_process_group,
)
from deployments.recovery import end_orphans, gpu_worker_name, requeue_left_runs
from deployments.settings import DeploymentSettings
from deployments.setup import PROJECT_DIR, gpus_for_slots, setup
from deployments.supervisor import RESTART_DELAY, Supervisor
from deployments.warm_start import wait_ready, warm_start_command

DEFAULT_PORT = 4200
DEFAULT_API_PORT = 8765  # the original queue API's port, so existing clients need no change

# The children in reverse start order (see __enter__), without the reaper: it is closed last,
# after everything it might have to kill. The model hosts ("model-host-<slot>") stop right
# after the GPU worker: no task uses their servers any more.
STOP_ORDER = ("queue-api", "manager-worker", "gpu-worker", "warm-start", "services", "server")
MODEL_HOST = "model-host-"
ROLES = ("all", "control", "gpu")
GPU_WORKER = "gpu-worker"  # with several GPUs, one per GPU: "gpu-worker-<slot>"


class Stack(Supervisor):
    """Start with `with Stack() as stack:`; everything started is stopped on exit."""

    def __init__(
        self,
        *,
        gpu_slots: int | None = None,
        gpus: Sequence[str] | None = None,
        port: int = DEFAULT_PORT,
        api_port: int | None = DEFAULT_API_PORT,
        logs: Path | None = None,
        restart_delay: float = RESTART_DELAY,
        on_give_up: Callable[[str], None] | None = None,
        profile: str | None = None,
        role: str = "all",
    ) -> None:
        """gpus: the GPUs to serve (CUDA device ids); gpu_slots N: GPUs 0..N-1; neither: as
        the last set-up kept them (setup.py). With two or more, each GPU gets a worker of its
        own (gpu_worker.py) and a model host, both seeing only that GPU.
        api_port: where the /queue REST API listens (None: not started).
        profile: "embedded" or "cluster" (cluster.py); default STACK_PROFILE, else embedded.
        role: one of ROLES (see the module's docstring); "gpu" needs PREFECT_API_URL.
        on_give_up: called (from the watcher thread) with the reason when a child keeps dying;
        the stack then stops watching, and its owner is expected to leave the `with` block."""
        super().__init__(restart_delay=restart_delay, on_give_up=on_give_up)
        self.gpu_slots = gpu_slots
        self.gpus: list[str] = list(gpus) if gpus is not None else []
        self._gpus_given = gpus is not None
        self.api_port = api_port
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
        self.role = role
        self.external_api = os.environ.get("PREFECT_API_URL")
        if role == "gpu" and not self.external_api:
            raise ValueError(
                "the gpu role runs no Prefect server: set PREFECT_API_URL to the control "
                "host's (and DB_URL to the shared domain database)"
            )
        self.api_url = self.external_api or f"http://127.0.0.1:{port}/api"
        self.ui_url = self.api_url.removesuffix("/api")
        self.port = port
        # Loopback unless asked (Prefect's own setting): a control host whose GPU hosts are
        # other machines sets it to an address they reach (README "Scaling out").
        self.server_host = os.environ.get("PREFECT_SERVER_API_HOST", "127.0.0.1")
        settings = DeploymentSettings()
        self.profile = profile or settings.stack_profile
        if self.profile not in cluster.PROFILES:
            raise ValueError(f"unknown stack profile {self.profile!r}: one of {cluster.PROFILES}")
        self.api_processes = settings.api_processes
        # The server processes' own settings (cluster: PostgreSQL, Redis); checked up front.
        self.server_env: dict[str, str] = {}
        if self.profile == "cluster":
            cluster.check_domain_db(Settings().db_url)
            if self.external_api is None:
                self.server_env = cluster.server_env(settings)
        self.logs = logs or PROJECT_DIR / ".stack-logs"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.token = uuid.uuid4().hex
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
            # The deployments' `python -m deployments.launcher` runs this interpreter and
            # imports this checkout, in the temporary directory the worker gives each run.
            "PATH": interpreter_first(os.environ.get("PATH")),
            "PYTHONPATH": checkout_first(os.environ.get("PYTHONPATH"), str(PROJECT_DIR)),
            # Logs complete up to a crash: their last lines are what a restart reports.
            "PYTHONUNBUFFERED": "1",
        }
        if api_port is not None:
            self.env["QUEUE_API_PORT"] = str(api_port)
        # Every Prefect client of this process talks to the stack's server, never to an
        # ephemeral one (Prefect read its settings at import, before this object existed).
        self._context = ExitStack()
        self._lock = threading.RLock()  # held while children are started, restarted or stopped
        self._stopping = threading.Event()  # no more restarts
        self._started_at: dict[str, float] = {}
        self._log_starts: dict[str, int] = {}  # where each child's run began in its log
        # Sessions of the children (session id -> its leader's start time), told to the reaper;
        # a dead child's session is forgotten once nothing is left in it.
        self._sessions: dict[int, int | None] = {}
        self._draining: set[int] = set()

    def __enter__(self) -> Stack:
        self.logs.mkdir(parents=True, exist_ok=True)
        self._context.enter_context(temporary_settings(updates={PREFECT_API_URL: self.api_url}))
        try:
            self._start_reaper()
            if self.role == "gpu":
                # This host's GPUs; the pool's limit (set on the control host) counts them all.
                self.gpus = self.gpus or gpus_for_slots(self.gpu_slots or 1)
                self.gpu_slots = len(self.gpus)
            else:
                self._start_control_side()
            if self.role != "control":
                asyncio.run(_end_orphans())  # what the last stack left running is over
                self._start_warm_starter()
                self._start_model_hosts()
                self.start_gpu_worker()
            if self.role != "gpu":
                self._start_manager_worker()
                if self.api_port is not None:
                    self._start("queue-api", ["queue_api"])
        except BaseException:
            self.stop()
            raise
        self._start_watching()
        return self

    def __exit__(
        self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
    ) -> None:
        self.stop()

    # --- starting children ---------------------------------------------------------------

    def _start_control_side(self) -> None:
        """The domain schema, Prefect's server (unless PREFECT_API_URL names one), and setup."""
        if self.profile == "cluster":
            # Once, before any process of the queue opens the domain database.
            migrate(Settings().db_url)
        if self.external_api is None:
            if self.profile == "cluster":
                self._migrate_prefect()
            self._start_server()
            if self.profile == "cluster":
                self._start_services()
        # The GPUs (and the pool's limit) as given, else as the last set-up kept them.
        done = setup(gpu_slots=self.gpu_slots, gpus=self.gpus if self._gpus_given else None)
        self.gpu_slots, self.gpus = done.gpu_slots, done.gpus

    def _start_reaper(self) -> None:
        """Without PDEATHSIG and the stack's token: it must outlive the stack, and not kill
        itself. It waits for its stdin, the stack's end of a pipe, to close."""
        env = {k: v for k, v in os.environ.items() if k != STACK_ENV}
        with (self.logs / "reaper.log").open("ab") as log:
            self._log_starts["reaper"] = log.tell()
            self.processes["reaper"] = subprocess.Popen(
                [sys.executable, "-m", "deployments", "reap", "--token", self.token],
                cwd=PROJECT_DIR,
                env=env,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._started_at["reaper"] = time.monotonic()
        for session, started in self._sessions.items():
            self._tell_reaper(f"+ {session} {started}")

    def _start_server(self) -> None:
        if self.profile == "cluster":
            command = cluster.api_command(self.server_host, self.port, self.api_processes)
        else:
            address = ["--host", self.server_host, "--port", str(self.port)]
            command = ["prefect", "server", "start", *address]
        self._start("server", command, extra_env=self.server_env)
        self._wait_healthy()

    def _migrate_prefect(self) -> None:
        """The one migration of Prefect's database (and registration of its block types): no
        server process does either when it starts."""
        with (self.logs / "server.log").open("ab") as log:
            subprocess.run(
                [sys.executable, "-m", *cluster.prepare_command()],
                cwd=PROJECT_DIR,
                env={**self.env, **self.server_env},
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
            )

    def _start_services(self) -> None:
        self._start("services", cluster.services_command(), extra_env=self.server_env)

    def _start_warm_starter(self) -> None:
        self._start("warm-start", warm_start_command(self.warm_socket))
        wait_ready(self.warm_socket, self.processes["warm-start"])

    @property
    def model_hosts(self) -> list[str]:
        """The model hosts' child names, one per GPU slot; none without a model catalogue."""
        if Settings().model_catalogue is None:
            return []
        return [f"{MODEL_HOST}{slot}" for slot in range(len(self.gpus) or self.gpu_slots or 1)]

    def model_host_socket(self, name: str) -> Path:
        return Path(self._sockets.name) / f"{name}.sock"

    def _start_model_hosts(self) -> None:
        """One model host per GPU slot, beside the GPU worker, which learns their sockets."""
        hosts = self.model_hosts
        if hosts:
            Settings().catalogue  # noqa: B018 - a broken catalogue stops the start, naming it
            sockets = [str(self.model_host_socket(name)) for name in hosts]
            self.env["BIASBENCH_MODEL_HOSTS"] = os.pathsep.join(sockets)
        for name in hosts:
            self._start_model_host(name)

    def _start_model_host(self, name: str) -> None:
        socket = self.model_host_socket(name)
        slot = name.removeprefix(MODEL_HOST)
        state = ["--state-dir", str(self.logs / name), "--slot", slot, "--publish"]
        command = ["deployments.model_host_channel", "--socket", str(socket), *state]
        self._start(name, command, extra_env=self._gpu_env(int(slot)))
        deadline = time.monotonic() + 60
        while not socket.exists():
            if self.processes[name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the {name} did not start; see {self.logs / name}.log")
            time.sleep(0.1)

    @property
    def gpu_workers(self) -> list[str]:
        """The GPU workers' child names: one plain worker for one GPU, else one per GPU
        ("gpu-worker-<slot>"). Never both in one pool: a plain worker takes any run."""
        if len(self.gpus) < 2:
            return [GPU_WORKER]
        return [f"{GPU_WORKER}-{slot}" for slot in range(len(self.gpus))]

    def _gpu_env(self, slot: int) -> dict[str, str]:
        """With several GPUs, what runs for a slot (its worker and flows, its model host and
        servers) sees only that slot's GPU ("0+1": a group of GPUs for one model), and the
        worker's flows only that slot's host. One GPU is pinned only if it is not the first
        (`--gpus 1`): the first leaves the environment as it is, as before `--gpus` existed,
        so a model may still span every GPU the stack sees."""
        if len(self.gpus) < 2:
            if self.gpus and self.gpus != gpus_for_slots(1):
                return {"CUDA_VISIBLE_DEVICES": self.gpus[0].replace("+", ",")}
            return {}
        env = {"CUDA_VISIBLE_DEVICES": self.gpus[slot].replace("+", ",")}
        if self.model_hosts:
            env["BIASBENCH_MODEL_HOSTS"] = str(self.model_host_socket(f"{MODEL_HOST}{slot}"))
        return env

    def start_gpu_worker(self, name: str | None = None) -> None:
        """The GPU pool's worker(s) (each started unless it runs). One GPU: `prefect worker`
        with `--limit 1`, which holds also while a cancelled run's process is still exiting;
        several: one worker per GPU, each limited to one run (gpu_worker.py)."""
        with self._lock:
            for child in [name] if name is not None else self.gpu_workers:
                if (worker := self.processes.get(child)) is not None and worker.poll() is None:
                    continue
                if child == GPU_WORKER:
                    pool = ["--pool", GPU_POOL, "--limit", str(self.gpu_slots), "--type", "process"]
                    named = ["--name", gpu_worker_name()]  # recovery.py knows its runs by it
                    command = ["prefect", "worker", "start", *pool, *named]
                    self._start(child, command, extra_env=self._gpu_env(0))
                else:
                    slot = int(child.removeprefix(f"{GPU_WORKER}-"))
                    command = ["deployments.gpu_worker", "--slot", str(slot)]
                    self._start(child, command, extra_env=self._gpu_env(slot))

    def _start_manager_worker(self, *, restart: bool = False) -> None:
        """The manager's worker, and a manager run. On a restart, only if the manager was
        running: it died with the worker (it is marked Crashed); a queue the user stopped stays
        stopped."""
        manager_pool = ["--pool", MANAGER_POOL, "--limit", "1", "--type", "process"]
        self._start("manager-worker", ["prefect", "worker", "start", *manager_pool])
        asyncio.run(_restart_manager() if restart else _start_manager())

    def restart_server(self) -> None:
        """Stop the Prefect server and start it again on the same port and database. Workers,
        the manager and running flows retry their calls meanwhile."""
        if self.external_api is not None:
            raise RuntimeError("the stack does not run this server")
        with self._lock:
            server = self.processes.pop("server")
            stop_process_group(server)
            self._draining.add(server.pid)
            self._start_server()

    def _start(self, name: str, args: list[str], extra_env: dict[str, str] | None = None) -> None:
        """`args` run as `python -m ...`, in their own process group, logging to logs/name.log,
        marked as this stack's, and killed when the thread that started them ends."""
        with (self.logs / f"{name}.log").open("ab") as log:
            self._log_starts[name] = log.tell()
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", *args],
                cwd=PROJECT_DIR,
                env={**self.env, **(extra_env or {}), STACK_ENV: f"{self.token}/{name}"},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with(os.getpid()),
            )
        self._started_at[name] = time.monotonic()
        # Its session: what it starts stays in it unless it starts a session of its own.
        started = start_time(self.processes[name].pid)
        self._sessions[self.processes[name].pid] = started
        self._tell_reaper(f"+ {self.processes[name].pid} {started}")

    def _tell_reaper(self, line: str) -> None:
        reaper = self.processes.get("reaper")
        if reaper is None or reaper.stdin is None:
            return
        try:
            reaper.stdin.write(f"{line}\n".encode())
            reaper.stdin.flush()
        except (BrokenPipeError, ValueError):  # it died: its restart is told everything again
            pass

    def _forget_session(self, session: int) -> None:
        self._sessions.pop(session, None)
        self._draining.discard(session)
        self._tell_reaper(f"- {session}")

    def _forget_empty_sessions(self) -> None:
        for session in list(self._draining):
            if not stack_processes(self.token, "", {session: self._sessions.get(session)}):
                self._forget_session(session)

    def _restart(self, name: str) -> None:
        """Start a child again as it was first started; raises if it does not come up."""
        if name == "reaper":
            self._start_reaper()
        elif name == "server":
            self._start_server()
            # After a long outage the server drops the watchdogs' open windows unevaluated:
            # finish the runs that went silent meanwhile, as setup does.
            asyncio.run(_finish_silent_runs())
        elif name == "services":
            self._start_services()
        elif name == "warm-start":
            self._start_warm_starter()
        elif name == GPU_WORKER or name.startswith(f"{GPU_WORKER}-"):
            self.start_gpu_worker(name)
            asyncio.run(_end_orphans())  # the runs it had started died with it
        elif name == "manager-worker":
            self._start_manager_worker(restart=True)
        elif name == "queue-api":
            self._start("queue-api", ["queue_api"])
        elif name.startswith(MODEL_HOST):
            self.model_host_socket(name).unlink(missing_ok=True)
            self._start_model_host(name)

    def _wait_healthy(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stopping.is_set():
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

    # --- stopping ------------------------------------------------------------------------

    def stop(self) -> None:
        """Manager first, then the running task (requeued, so the next start resumes it), then
        the workers, the server, and last the reaper, which kills anything left over. A GPU
        host leaves the manager and other hosts' tasks alone: it kills its worker, and puts
        the tasks that were running on it back in the queue, for another host or its restart."""
        self._stopping.set()
        with self._lock:
            workers = [p for n, p in self.processes.items() if n.startswith(GPU_WORKER)]
            if self.role == "control":
                workers = [p for n, p in self.processes.items() if n == "manager-worker"]
            if self.role != "gpu" and any(worker.poll() is None for worker in workers):
                try:
                    asyncio.run(wind_down())
                except Exception as exc:
                    print(f"warning: could not wind the queue down cleanly: {exc}", file=sys.stderr)
            gpu_workers = [n for n in self.processes if n.startswith(GPU_WORKER)]
            for name in gpu_workers if self.role == "gpu" else ():
                # SIGKILL: a worker or flow stopped by a signal would report its runs Crashed
                # (a retry used up); killed, they are simply gone, and requeued below.
                worker = self.processes.pop(name)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(10)
            hosts = sorted(name for name in self.processes if name.startswith(MODEL_HOST))
            per_gpu = sorted(n for n in self.processes if n.startswith(f"{GPU_WORKER}-"))
            order = [*STOP_ORDER[:3], *per_gpu, *hosts, *STOP_ORDER[3:]]
            for name in order:
                if (process := self.processes.pop(name, None)) is not None:
                    stop_process_group(process)
            if self.role == "gpu":
                try:
                    asyncio.run(_requeue_left_runs())
                except Exception as exc:
                    print(f"warning: could not put this host's tasks back: {exc}", file=sys.stderr)
            if (reaper := self.processes.pop("reaper", None)) is not None:
                close_reaper(reaper)
        self._stop_watching()
        self._context.close()
        self._sockets.cleanup()


async def wind_down(timeout: float | None = None) -> None:
    """Cancel the manager and the running tasks (their processes are stopped by the workers),
    then put the tasks it stopped back in the queue: nothing submitted is lost, a retry
    resumes, and what a user did meanwhile (cancel) stays done."""
    async with get_client() as client:
        await gateway.wind_down(client, timeout)


async def _end_orphans() -> None:
    async with get_client() as client:
        if ended := await end_orphans(client):
            print(f"stack: {len(ended)} task(s) lost their process; the queue puts them back")


async def _requeue_left_runs() -> None:
    async with get_client() as client:
        if requeued := await requeue_left_runs(client):
            print(f"stack: {len(requeued)} task(s) of this host put back in the queue")


async def _finish_silent_runs() -> None:
    async with get_client() as client:
        await finish_silent_runs(client, DeploymentSettings().queue_heartbeat_timeout)


async def _start_manager() -> None:
    async with get_client() as client:
        await control.start(client, after_reboot=True)


async def _restart_manager() -> None:
    """Not control.start: that would also cancel a stop the user asked for."""
    async with get_client() as client:
        if await gateway.manager_running(client):
            await gateway.start_manager(client, after_reboot=True)
