"""One inference server process of a model host: start it, know when it is ready, put it to
sleep, wake it, stop it, and leave nothing behind.

- The server runs in its own process group (a vLLM server forks engine workers), with
  PR_SET_PDEATHSIG so it dies with its host even when the host is SIGKILLed; the stack's token
  in its environment lets the stack's reaper find what PDEATHSIG cannot reach (its children).
- A pid file (pid and start time) per model lets the next host stop a server that a crashed
  host left running, and not a process that reused its pid.
- Ready means the health endpoint answers and `/v1/models` lists the model, polled every
  0.2 s (llama-swap polls every 5 s; the gap is pure GPU idle time); then a 1-token request
  warms it up (vLLM's first request after a wake is 5-7 times slower).
- Its output goes to a log file: the last lines are what a failure reports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from biasbench.models_catalogue import ModelSpec
from deployments.process_tree import die_with, start_time

POLL_SECONDS = 0.2  # how often readiness is polled (the bound: 250 ms)
STOP_GRACE = 5.0  # SIGTERM, then SIGKILL: within the stack's own 10 s grace for the host
TAIL_LINES = 30


class StartFailed(Exception):
    """The server exited while starting, or was not ready in time; the message says which."""


@dataclass
class ModelServer:
    """A started server (awake or asleep) of one model on one port."""

    spec: ModelSpec
    port: int
    state_dir: Path
    process: subprocess.Popen[bytes] | None = None
    sleeping: int = 0  # 0 awake, else the sleep level
    log_start: int = 0
    started_at: float = field(default_factory=time.monotonic)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.state_dir / f"{self.spec.name}.log"

    @property
    def pid_path(self) -> Path:
        return self.state_dir / f"{self.spec.name}.pid"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exit_status(self) -> str:
        code = None if self.process is None else self.process.poll()
        if code is None:
            return "running"
        return f"killed by signal {-code}" if code < 0 else f"exit status {code}"

    def launch(self) -> None:
        """Start the process (not waiting for it to be ready)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.log_start = log.tell()
            log.write(f"--- {time.strftime('%H:%M:%S')} starting {self.spec.name}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.spec.command(self.port),
                env={**os.environ, **self.spec.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with(os.getpid()),
            )
        self.sleeping = 0
        self.started_at = time.monotonic()
        self.pid_path.write_text(f"{self.process.pid} {start_time(self.process.pid)}\n")

    async def wait_ready(self, timeout: float) -> None:
        """Until the health endpoint answers and the model is listed; StartFailed if the
        process exits or `timeout` passes first."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while True:
                if not self.alive():
                    raise StartFailed(f"the server exited while starting ({self.exit_status()})")
                if await self._ready(http):
                    break
                if time.monotonic() >= deadline:
                    raise StartFailed(f"the server was not ready within {timeout:g} s")
                await asyncio.sleep(POLL_SECONDS)
            await self._warm_up(http)

    async def _ready(self, http: aiohttp.ClientSession) -> bool:
        try:
            async with http.get(self.base_url + self.spec.health_path) as health:
                if health.status != 200:
                    return False
            async with http.get(self.base_url + "/v1/models") as models:
                listed = await models.json() if models.status == 200 else {}
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return False
        return any(m.get("id") == self.spec.name for m in listed.get("data", []))

    async def _warm_up(self, http: aiohttp.ClientSession) -> None:
        """One token, so the task's first requests are not the slow ones; a failure here is
        the task's to meet (and retry), not a failed start."""
        body = {"model": self.spec.name, "messages": [{"role": "user", "content": "hi"}]}
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with http.post(
                self.base_url + "/v1/chat/completions", json={**body, "max_tokens": 1}
            ) as reply:
                await reply.read()

    async def sleep(self, level: int) -> bool:
        """vLLM sleep mode: level 1 keeps the weights in CPU RAM, level 2 drops them."""
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http,
                http.post(f"{self.base_url}/sleep", params={"level": str(level)}) as reply,
            ):
                ok = reply.status == 200
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        if ok:
            self.sleeping = level
        return ok

    async def wake(self) -> None:
        """Wake, then wait until it serves again (StartFailed if it does not)."""
        timeout = self.spec.wake_timeout if self.sleeping == 1 else self.spec.start_timeout
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
                http.post(f"{self.base_url}/wake_up") as reply,
            ):
                if reply.status != 200:
                    raise StartFailed(f"the server refused to wake up (HTTP {reply.status})")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise StartFailed(f"the server did not wake up: {exc!r}") from None
        self.sleeping = 0
        await self.wait_ready(timeout)

    async def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after the grace period."""
        if self.process is not None:
            await asyncio.to_thread(stop_group, self.process.pid, self.process)
        self.pid_path.unlink(missing_ok=True)

    def output_tail(self, lines: int = TAIL_LINES) -> str:
        """The last lines this run of the server wrote."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self.log_start)
                text = log.read().decode(errors="replace")
        except OSError:
            return "(no output)"
        return "\n".join(text.splitlines()[-lines:]) or "(no output)"


def stop_group(pgid: int, process: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM a process group, SIGKILL it after STOP_GRACE, and wait for its leader."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    while time.monotonic() < deadline and _group_alive(pgid, process):
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)


def _group_alive(pgid: int, process: subprocess.Popen[bytes] | None) -> bool:
    if process is not None and process.poll() is None:
        return True
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop_leftovers(state_dir: Path) -> list[str]:
    """Stop the servers a crashed host left running (found by their pid files, and only if
    the process is the one that was started: same start time). Returns what was stopped."""
    stopped: list[str] = []
    for pid_file in sorted(state_dir.glob("*.pid")):
        try:
            pid_text, started = pid_file.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            pid_file.unlink(missing_ok=True)
            continue
        if str(start_time(pid)) == started:
            stop_group(pid)
            stopped.append(f"{pid_file.stem} (pid {pid})")
        pid_file.unlink(missing_ok=True)
    return stopped


def gpu_free_gb() -> float | None:
    """Free memory of the GPU this host owns (CUDA_VISIBLE_DEVICES' first, else GPU 0), in
    GB; None when no GPU or no NVML is present (nvidia-ml-py is optional)."""
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip() or "0"
            index = int(visible) if visible.isdigit() else 0
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            return float(pynvml.nvmlDeviceGetMemoryInfo(handle).free) / 1e9
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # NVMLError: no driver, no device
        return None


def host_ram_available_gb() -> float | None:
    """MemAvailable from /proc/meminfo: whether a level-1 sleep can keep weights in RAM."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / 1e9
    except (OSError, ValueError, IndexError):
        pass
    return None
