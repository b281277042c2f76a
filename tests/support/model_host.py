"""A real model host process (deployments/model_host_channel.py) with a catalogue of test
model servers: each model is `tests.support.openai_server` started from its serve command, in a
process of its own, as vLLM would be."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.stack import REPO

# tests/support/gpu/pynvml.py: first on a host's PYTHONPATH, a GPU with TEST_GPU_FREE_GB free.
TEST_NVML = REPO / "tests" / "support" / "gpu"

SERVER = "{python} -m tests.support.openai_server --port {port} --workers 1 --answers fake"


def model_entry(
    name: str,
    *,
    load: float = 0.3,
    sleep: bool = False,
    options: str = "",
    start_timeout: float = 60,
    serve: str | None = None,
    gpu_memory_gb: float | None = None,
) -> str:
    """One `[models.<name>]` table of a catalogue."""
    command = serve or f"{SERVER} --model {name} --latency 0.02 --load-seconds {load} {options}"
    memory = "" if gpu_memory_gb is None else f"gpu_memory_gb = {gpu_memory_gb}\n"
    return (
        f"[models.\"{name}\"]\nserve = '{command}'\nsupports_sleep = {str(sleep).lower()}\n"
        f"start_timeout = {start_timeout}\n{memory}\n"
    )


def write_catalogue(path: Path, *entries: str) -> Path:
    path.write_text("".join(entries))
    return path


@contextmanager
def model_host(
    tmp: Path,
    catalogue: Path,
    *,
    idle_ttl: float = 600,
    env: dict[str, str] | None = None,
    publish_to: str | None = None,
    slot: int = 0,
) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """The host process, its socket and its state directory; stopped (SIGTERM) at the end.
    publish_to: a Prefect API URL where the host publishes its state, as GPU slot `slot`."""
    socket, state = tmp / "host.sock", tmp / "host-state"
    log = tmp / "model-host.log"
    environment = {
        **os.environ,
        "MODEL_CATALOGUE": str(catalogue),
        "MODEL_IDLE_TTL": str(idle_ttl),
        "PYTHONUNBUFFERED": "1",
        **({"PREFECT_API_URL": publish_to} if publish_to else {}),
        **(env or {}),
    }
    command = [sys.executable, "-m", "deployments.model_host_channel", "--slot", str(slot)]
    if publish_to:
        command.append("--publish")
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*command, "--socket", str(socket), "--state-dir", str(state)],
            cwd=REPO,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while not socket.exists():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield process, str(socket), state
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in "ZX"


def server_pid(state: Path, model: str) -> int:
    return int((state / f"{model}.pid").read_text().split()[0])
