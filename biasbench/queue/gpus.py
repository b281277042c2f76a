"""Which GPU a released task goes to, when each GPU has a worker of its own (issue 16).

Pure, like decide(): the GPUs are a snapshot (their workers' names, whether their heartbeats
are fresh, the model their host has loaded), and the answer is a worker's name, written on the
run as the tag `gpu:<worker>` in the same update that releases it. Each per-GPU worker
(deployments/gpu_worker.py) starts only the runs tagged with its own name, or untagged ones, and
runs one at a time (`--limit 1`), so a GPU never runs two tasks.

Why tags rather than a work queue per GPU: a work queue is chosen when a run is created, and
moving a run between queues means re-creating it or patching its deployment's queue; a tag is a
plain field of the run that the release already writes, visible in the UI, and a run without
one (a plain `prefect deployment run`) is still taken by whichever worker is free."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

GPU_TAG = "gpu:"  # + the worker's name: the GPU a run was released to
WORKER_NAME = re.compile(r"^gpu-(?P<slot>\d+)@(?P<host>.+)$")


@dataclass(frozen=True)
class Gpu:
    """One GPU as the manager sees it."""

    worker: str  # its worker's name, "gpu-<slot>@<host>": what a released run's tag names
    alive: bool = True  # the worker's heartbeats are fresh
    model: str | None = None  # the model its host has loaded (None: none, or no host)


def worker_name(slot: int, host: str) -> str:
    """The name of the worker of GPU slot `slot` on `host`: the same across restarts."""
    return f"gpu-{slot}@{host}"


def parse_worker_name(name: str) -> tuple[int, str] | None:
    """(slot, host) of a per-GPU worker's name; None for any other worker (a plain one)."""
    if (found := WORKER_NAME.match(name)) is None:
        return None
    return int(found["slot"]), found["host"]


def machine_slug(host: str) -> str:
    """The host name as Prefect variable names allow it (lowercase, digits, - and _)."""
    return re.sub(r"[^a-z0-9_-]", "-", host.lower())


def gpu_tag(worker: str) -> str:
    return GPU_TAG + worker


def gpu_of(tags: Iterable[str]) -> str | None:
    """The worker a run was released to, from its tags; None if it was not sent to one."""
    return next((t.removeprefix(GPU_TAG) for t in tags if t.startswith(GPU_TAG)), None)


def retagged(tags: Iterable[str], worker: str | None) -> list[str]:
    """The run's tags sent to `worker` (None: to no GPU in particular)."""
    kept = [t for t in tags if not t.startswith(GPU_TAG)]
    return [*kept, gpu_tag(worker)] if worker is not None else kept


def assign(models: Sequence[str | None], free: Sequence[Gpu]) -> list[Gpu | None]:
    """A free GPU for each task about to be released (in their order; `models`: the model each
    needs, None when it needs none): first the tasks whose model a free GPU has loaded get that
    GPU, then the others, in order, an empty GPU before one holding another model (that model
    may serve a later task without a swap). None where no free GPU is left."""
    left = list(free)
    chosen: list[Gpu | None] = [None] * len(models)
    for index, model in enumerate(models):
        if model is not None and (same := next((g for g in left if g.model == model), None)):
            chosen[index] = same
            left.remove(same)
    for index in range(len(models)):
        if chosen[index] is not None or not left:
            continue
        pick = next((g for g in left if g.model is None), left[0])
        chosen[index] = pick
        left.remove(pick)
    return chosen
