"""The GPU worker's job command: start the flow run in a process forked from the warm starter.

`prefect worker` spawns this instead of `python -m prefect.engine` (prefect.yaml sets it as the
deployments' `command`). It uses only the standard library, so it starts in milliseconds: it hands
its environment, working directory and stdio to the warm starter (deployments/warm_start.py),
which forks a process that has Prefect and the heavy libraries imported already, and then stands
in for that process towards the worker: signals are passed on, and the exit status (a signal
too) is passed back. Without a warm starter it becomes `python -m prefect.engine` itself.

If this process is SIGKILLed (cancellation that ran out of grace, the worker killed), the warm
starter sees the connection close and SIGKILLs the flow process's whole group.

The command is `python -m deployments.launcher` on every host, so deployments name no
interpreter or checkout: the worker's environment decides which `python` and which copy of the
code run (`interpreter_first`, `checkout_first`; the stack sets both for its workers)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys

SOCKET_ENV = "BIASBENCH_WARM_SOCKET"
HEADER_BYTES = 8


def interpreter_first(path: str | None) -> str:
    """PATH with this interpreter's directory first: the job command's `python` is then the
    interpreter the worker runs on (its virtualenv), whatever else is on the host's PATH."""
    first = os.path.dirname(sys.executable)
    rest = [p for p in (path or os.defpath).split(os.pathsep) if p and p != first]
    return os.pathsep.join([first, *rest])


def checkout_first(pythonpath: str | None, checkout: str) -> str:
    """PYTHONPATH with this host's checkout first: a flow process, which starts in a fresh
    temporary directory, imports the worker's copy of `flows` and `biasbench`."""
    rest = [p for p in (pythonpath or "").split(os.pathsep) if p and p != checkout]
    return os.pathsep.join([checkout, *rest])


def _fresh_engine(reason: str) -> None:
    print(f"warm starter {reason}; starting a fresh engine process", file=sys.stderr, flush=True)
    os.execv(sys.executable, [sys.executable, "-m", "prefect.engine", *sys.argv[1:]])


def _connect(path: str) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def _forward(flow_pid: int) -> None:
    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(flow_pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)


def _exit_like(code: int) -> None:
    """Exit as the flow process did; a signal death is re-raised so the worker reports a crash."""
    if code < 0:
        if -code != signal.SIGKILL:  # SIGKILL cannot be caught, so needs no reset
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


def main() -> None:
    path = os.environ.get(SOCKET_ENV)
    if not path:
        _fresh_engine(f"not configured ({SOCKET_ENV} is unset)")
        return
    sock = _connect(path)
    if sock is None:
        _fresh_engine(f"not reachable at {path}")
        return
    request = json.dumps(
        {"env": dict(os.environ), "cwd": os.getcwd(), "argv": sys.argv[1:]}
    ).encode()
    header = len(request).to_bytes(HEADER_BYTES, "big")
    socket.send_fds(sock, [header], [0, 1, 2])
    sock.sendall(request)
    replies = sock.makefile("r")
    started = replies.readline().split()
    if started[:1] != ["pid"]:
        print(f"warm starter refused the run: {' '.join(started)}", file=sys.stderr)
        sys.exit(1)
    _forward(int(started[1]))
    ended = replies.readline().split()
    # No exit line: the warm starter itself died, and took the flow process with it.
    _exit_like(int(ended[1]) if ended[:1] == ["exit"] else -signal.SIGKILL)


if __name__ == "__main__":
    main()
