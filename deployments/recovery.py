"""Runs whose process is gone, found on the stack's own host without waiting for heartbeats.

When the GPU worker dies, or the whole stack (`serve` SIGKILLed, host rebooted), Prefect still
shows its runs as Running. The heartbeat watchdog would crash them after its timeout (45 s and
up to 30 s more); the stack knows better at once: its GPU workers have fixed names per host
(`gpu@<host>`, or `gpu-<slot>@<host>` with a worker per GPU), a worker labels every run it
starts with its name and records the process id, and the flow's
process carries the run's id in its environment. A run of this host's worker with no such
process is over, and is ended (Crashed, so that the manager puts it back; Cancelled if the user
was cancelling it) as soon as the stack starts or restarts its worker. Runs of other hosts'
workers are left to their heartbeats.

A GPU host that stops on purpose (`serve --role gpu`, SIGTERM) kills its worker and then puts
the runs it leaves behind back in the queue at their place, as if never started: nothing is
lost, no crash retry is used up, and the task resumes on another host or after the restart."""

from __future__ import annotations

import socket
from collections.abc import Collection
from pathlib import Path

from prefect.client.orchestration import PrefectClient

from biasbench.queue import gateway
from biasbench.queue.gpus import parse_worker_name
from biasbench.queue.model import GPU_POOL, HELD_QUEUED

STOPPED = "Its GPU host stopped; the task goes back in the queue."
GONE = "Its process is gone: the GPU worker or the whole stack died (found when it restarted)."


def gpu_worker_name() -> str:
    """The name of this host's GPU worker: the same across restarts, different per host."""
    return f"{GPU_POOL}@{socket.gethostname()}"


def this_hosts_worker(name: str | None) -> bool:
    """Whether `name` is one of this host's GPU workers: the plain one or a per-GPU one."""
    if name is None:
        return False
    parsed = parse_worker_name(name)
    return name == gpu_worker_name() or (parsed is not None and parsed[1] == socket.gethostname())


def runs_process(pid: int, run_id: str) -> bool:
    """Whether the process `pid` on this host is one of the run's (not a reused pid)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone (or not ours to read: then it is not the run's either)
        return False
    return f"PREFECT__FLOW_RUN_ID={run_id}".encode() in environ.split(b"\0")


async def end_orphans(client: PrefectClient, worker: str | None = None) -> list[str]:
    """End the runs of this host's GPU workers (or of `worker` only) whose process is gone;
    returns their ids."""
    ended = []
    for run in await gateway.started_runs(client):
        ours = run.worker == worker if worker is not None else this_hosts_worker(run.worker)
        if not ours or run.pid is None or runs_process(run.pid, run.run_id):
            continue
        await gateway.end_orphan(client, run, GONE)
        ended.append(run.run_id)
    return ended


async def requeue_left_runs(client: PrefectClient, workers: Collection[str] = ()) -> list[str]:
    """Put back in the queue the runs of this host's GPU workers (or of `workers` only) whose
    process is gone; one a user was cancelling ends Cancelled. Returns the ids of the runs put
    back."""
    requeued = []
    for run in await gateway.started_runs(client):
        ours = run.worker in workers if workers else this_hosts_worker(run.worker)
        if not ours or (run.pid is not None and runs_process(run.pid, run.run_id)):
            continue
        if run.state_type == "CANCELLING":
            await gateway.end_orphan(client, run, STOPPED)
            continue
        await gateway.requeue(client, await gateway.run_by_id(client, run.run_id), HELD_QUEUED)
        requeued.append(run.run_id)
    return requeued
