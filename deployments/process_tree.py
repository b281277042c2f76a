"""Ending a stack's processes, whatever became of their parents: children that die with the
stack, leftovers found by their marks, process groups stopped with a timeout, and the reaper.

Standard library only: the reaper (`python -m deployments reap`) imports this module alone, so
that it starts as fast and stays as small as a bare interpreter while it waits.

- Every process of the stack carries `BIASBENCH_STACK=<token>/<child>` in its environment, and
  so does everything it starts (workers' flow processes, the warm starter's forks): that is how
  leftovers are found whatever became of their parents.
- Children die with the stack even when it is SIGKILLed: each gets PR_SET_PDEATHSIG (SIGKILL),
  and the reaper, a small child that waits for the stack's end of a pipe to close, then kills
  every process still carrying the token (PDEATHSIG reaches only direct children).

Every child runs in its own process group and is stopped with a timeout: `prefect worker` is
known to ignore SIGTERM for minutes, so it gets SIGKILL after the grace period."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from pathlib import Path

STOP_GRACE_SECONDS = 10
STACK_ENV = "BIASBENCH_STACK"  # <token>/<child name>, inherited by every process of the stack

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def die_with(parent: int) -> Callable[[], None] | None:
    """A child's last step before exec: SIGKILL it when its parent thread ends (Linux)."""
    if _libc is None:
        return None
    prctl = _libc.prctl

    def die_with_parent() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)

    return die_with_parent


def stop_process_group(process: subprocess.Popen[bytes], grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM the process group, SIGKILL it after `grace` seconds. A process that is already
    gone may have left its group behind: that is killed too."""
    if process.poll() is not None:
        _kill_group(process.pid)
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(grace)
    except subprocess.TimeoutExpired:
        _kill_group(process.pid)
        process.wait(10)
    except ProcessLookupError:
        pass


def _kill_group(pgid: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


# --- finding and killing the stack's processes -------------------------------------------
# Two marks find them, whatever became of their parents: the session of a child (everything it
# starts stays in it, unless it starts a session of its own), and the BIASBENCH_STACK variable
# of the environment a process was started with (read from /proc; the warm starter's title
# overwrites its own, hence the sessions too).

Sessions = Mapping[int, int | None]  # session id -> its first leader's start time


def stack_processes(
    token: str, child: str | None = None, sessions: Sessions | None = None
) -> list[int]:
    """Pids of the stack's live processes: in one of `sessions`, or marked with the token
    (of `child`; of any child when None; "" matches no mark)."""
    marker = f"{STACK_ENV}={token}/{child or ''}".encode()
    sessions = sessions or {}
    seen = {
        int(entry.name): stat
        for entry in os.scandir("/proc")
        if entry.name.isdigit()
        and int(entry.name) != os.getpid()
        and (stat := _stat(entry.name)) is not None
    }
    # A session id is reused only after the session has ended: its new leader started later.
    reused = {
        pid
        for pid, (_, started) in seen.items()
        if pid in sessions and sessions[pid] not in (None, started)
    }
    in_session = {pid for pid, (session, _) in seen.items() if session in sessions}
    return [
        pid
        for pid in seen
        if (pid in in_session and seen[pid][0] not in reused)
        or (child != "" and _marked(pid, marker, exact=child is not None))
    ]


def kill_leftovers(
    token: str, child: str | None = None, sessions: Sessions | None = None, attempts: int = 20
) -> list[int]:
    """SIGKILL the stack's processes (see stack_processes) until none is left; a process that
    was forking meanwhile is caught by the next look. Returns the pids killed."""
    killed: set[int] = set()
    for _ in range(attempts):
        pids = stack_processes(token, child, sessions)
        if not pids:
            break
        for pid in pids:
            with suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
        time.sleep(0.1)
    return sorted(killed)


def _stat(pid: int | str) -> tuple[int, int] | None:
    """(session id, start time) of a live process; None when it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # Fields after the command: state, ppid, pgrp, session, ... starttime (the 20th).
    return None if fields[0] in "ZX" else (int(fields[3]), int(fields[19]))


def start_time(pid: int) -> int | None:
    """When a process started (clock ticks after boot): tells a session from a later one that
    reuses its id."""
    return None if (stat := _stat(pid)) is None else stat[1]


def _marked(pid: int, marker: bytes, *, exact: bool) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone, or not ours
        return False
    return any(v == marker if exact else v.startswith(marker) for v in environ.split(b"\0"))


# --- the reaper ----------------------------------------------------------------------------


def reap(token: str) -> None:
    """The reaper's life: note the sessions the stack tells us about (`+ id start`, `- id`) until
    the stack closes our stdin (it stops, or it died: the kernel closes its end of the pipe
    either way), then kill whatever of the stack is left."""
    sessions: dict[int, int | None] = {}
    for line in sys.stdin:
        sign, session, *started = line.split()
        if sign == "+":
            sessions[int(session)] = int(started[0]) if started and started[0] != "None" else None
        else:
            sessions.pop(int(session), None)
    killed = kill_leftovers(token, None, sessions)
    print(f"reaper: the stack is gone; killed {len(killed)} leftover process(es): {killed}")


def close_reaper(reaper: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Close the reaper's stdin, which tells it the stack is gone, and wait for its kills."""
    if reaper.stdin is not None:
        reaper.stdin.close()
    try:
        reaper.wait(timeout)
    except subprocess.TimeoutExpired:
        reaper.kill()
        reaper.wait()
