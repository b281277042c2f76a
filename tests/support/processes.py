"""Finding a flow run's processes the way an operator would: by the worker's record, or by the
`biasbench flow-run <id>` title the warm starter gives each flow process (see `ps`); and
crashing a benchmark flow mid-run the way a power cut would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from prefect.client.schemas.objects import FlowRun
from sqlalchemy import Engine

from tests.support.rows import count

REPO = Path(__file__).resolve().parents[2]


def launcher_pid(run: FlowRun) -> int:
    """The process the worker started (and will signal) for this run."""
    assert run.infrastructure_pid, "the worker did not record the flow process"
    return int(str(run.infrastructure_pid).rsplit(":", 1)[-1])


def flow_process_pids(run_id: str) -> list[int]:
    """The process running the flow's code, found by its title."""
    title = f"biasbench flow-run {run_id}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "cmdline").read_bytes().startswith(title):
                pids.append(int(proc.name))
        except OSError:  # it exited while we looked
            continue
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent has not collected it yet.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def kill_benchmark_after(
    config: Mapping[str, object],
    prefect_api_url: str,
    engine: Engine,
    table: type,
    rows: int,
    timeout: float = 120,
) -> None:
    """Run `benchmark(**config)` in its own process group and SIGKILL the group as soon as
    `table` holds `rows` rows: the flow dies without a chance to record anything."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import asyncio; from flows.benchmark import benchmark; "
            f"asyncio.run(benchmark(**{dict(config)!r}))",
        ],
        cwd=REPO,
        env={**os.environ, "PREFECT_API_URL": prefect_api_url},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while count(engine, table) < rows:
            assert process.poll() is None, "the flow process ended before it could be killed"
            assert time.monotonic() < deadline, (
                f"fewer than {rows} {table.__name__} rows in {timeout} s"
            )
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait(30)
