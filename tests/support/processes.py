"""Finding a flow run's processes the way an operator would: by the worker's record, or by the
`biasbench flow-run <id>` title the warm starter gives each flow process (see `ps`)."""

from __future__ import annotations

import os
from pathlib import Path

from prefect.client.schemas.objects import FlowRun


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
