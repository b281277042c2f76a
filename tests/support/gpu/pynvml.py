"""A stand-in for NVIDIA's NVML bindings (`nvidia-ml-py`, imported as `pynvml`) for machines
without a GPU: put this directory first on PYTHONPATH and set TEST_GPU_FREE_GB to the free
memory of each device, comma-separated ("40,12": GPU 0 has 40 GB free, GPU 1 12 GB). Only
what the model host reads is here: the device by index and its memory info."""

from __future__ import annotations

import os
from dataclasses import dataclass


class NVMLError(Exception):
    pass


@dataclass(frozen=True)
class _Memory:
    total: int
    free: int
    used: int


def _free_bytes() -> list[int]:
    return [int(float(gb) * 1e9) for gb in os.environ["TEST_GPU_FREE_GB"].split(",")]


def nvmlInit() -> None:
    if "TEST_GPU_FREE_GB" not in os.environ:
        raise NVMLError("no test GPU configured")


def nvmlShutdown() -> None:
    pass


def nvmlDeviceGetHandleByIndex(index: int) -> int:
    if not 0 <= index < len(_free_bytes()):
        raise NVMLError(f"no GPU {index}")
    return index


def nvmlDeviceGetMemoryInfo(handle: int) -> _Memory:
    free = _free_bytes()[handle]
    return _Memory(total=80 * 10**9, free=free, used=80 * 10**9 - free)
