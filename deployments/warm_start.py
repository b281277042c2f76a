"""The warm starter: flow-run processes forked from a process that has imported Prefect already.

A fresh `python -m prefect.engine` spends seconds importing Prefect, SQLAlchemy, Alembic and
aiohttp before the flow can start, and on a GPU queue that time is idle GPU between every two
tasks (perf/queue_idle_gap.py measures it). This process imports those libraries once, then
listens on a Unix socket; for each `deployments.launcher` that connects it forks:

    warm starter ─fork→ supervisor (one per run) ─fork→ flow process (`prefect.engine` as __main__)

The flow process takes over the launcher's stdio, working directory and environment (so the
worker's settings, the flow-run id and the cancellation channel all arrive as they would), leads
its own process group, and is named `biasbench flow-run <id>` in `ps`. The supervisor reports its
pid and exit status to the launcher, and SIGKILLs its group if the launcher disappears; the flow
process dies with its supervisor. Our own packages (`flows`, `biasbench`) are not preloaded, so
an edited flow takes effect at its next run, as it would without the warm starter.

    python -m deployments.warm_start --socket PATH     (the stack starts it; see stack.py)"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import importlib
import json
import os
import runpy
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from deployments.launcher import HEADER_BYTES

# Third-party modules a task flow imports; about 2 s of every cold start on this machine.
PRELOAD = (
    "prefect.engine",
    "prefect.flow_engine",
    "prefect.deployments.steps",
    "prefect.artifacts",
    "prefect.flow_runs",
    "sqlalchemy.orm",
    "sqlalchemy.dialects.sqlite",
    "alembic.command",
    "alembic.config",
    "alembic.runtime.migration",
    "aiohttp",
    "setproctitle",
)
PR_SET_PDEATHSIG = 1


def preload() -> None:
    for module in PRELOAD:
        importlib.import_module(module)
    # fork() copies only the calling thread: a thread started by an import would be missing,
    # with whatever lock it held, in every flow process.
    if threading.active_count() != 1:
        raise RuntimeError(f"an import started threads: {threading.enumerate()}")


def serve(path: Path) -> None:
    preload()
    # Titled before any fork: setproctitle must set itself up while the environment is intact.
    from setproctitle import setproctitle

    setproctitle(f"biasbench warm starter {path}")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path.unlink(missing_ok=True)
    listener.bind(str(path))
    path.chmod(0o600)
    listener.listen(16)
    listener.settimeout(1.0)
    owner = os.getpid()
    # Only the starter itself removes the socket; forked children inherit this handler.
    atexit.register(_remove_socket, path, owner)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"warm starter ready on {path}", flush=True)
    while True:
        _reap_supervisors()
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        if os.fork() == 0:
            listener.close()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _supervise(conn)  # returns only in the flow process
            return
        conn.close()


def _remove_socket(path: Path, owner: int) -> None:
    if os.getpid() == owner:
        path.unlink(missing_ok=True)


def _reap_supervisors() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _supervise(conn: socket.socket) -> None:
    """One run: fork the flow process, report its pid and exit status to the launcher."""
    header, fds, _, _ = socket.recv_fds(conn, HEADER_BYTES, 3)
    body = _read_exact(conn, int.from_bytes(header, "big"))
    request: dict[str, Any] = json.loads(body)
    flow_pid = os.fork()
    if flow_pid == 0:
        conn.close()
        _become_flow_process(request, fds)
        return
    for fd in fds:
        os.close(fd)
    status = 0
    try:
        conn.sendall(f"pid {flow_pid}\n".encode())
        status = _wait(flow_pid, conn)
        conn.sendall(f"exit {os.waitstatus_to_exitcode(status)}\n".encode())
    except OSError:
        pass
    finally:
        os._exit(0)


def _read_exact(conn: socket.socket, length: int) -> bytes:
    chunks: list[bytes] = []
    while length:
        chunk = conn.recv(min(length, 65536))
        if not chunk:
            raise ConnectionError("the launcher went away mid-request")
        chunks.append(chunk)
        length -= len(chunk)
    return b"".join(chunks)


def _wait(flow_pid: int, conn: socket.socket) -> int:
    """The flow process's wait status; if the launcher vanishes first, the group is killed."""
    selector = selectors.DefaultSelector()
    pidfd = os.pidfd_open(flow_pid)
    selector.register(pidfd, selectors.EVENT_READ, "exited")
    selector.register(conn, selectors.EVENT_READ, "launcher")
    try:
        while True:
            for key, _ in selector.select():
                if key.data == "exited":
                    return os.waitpid(flow_pid, 0)[1]
                if not conn.recv(1):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(flow_pid, signal.SIGKILL)
                    selector.unregister(conn)
    finally:
        os.close(pidfd)


def _become_flow_process(request: dict[str, Any], fds: list[int]) -> None:
    """Turn this fork into what `python -m prefect.engine` would have been, then run it. The
    SystemExit it ends with unwinds to the interpreter, so Prefect's exit hooks flush logs."""
    from setproctitle import setproctitle

    os.setsid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    setproctitle(f"biasbench flow-run {request['env'].get('PREFECT__FLOW_RUN_ID', '?')}")
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # Expected: the starter imported prefect.engine on purpose before running it as __main__.
    warnings.filterwarnings("ignore", "'prefect.engine' found in sys.modules", RuntimeWarning)
    from prefect.context import refresh_global_settings_context
    from prefect.logging.configuration import setup_logging

    refresh_global_settings_context()  # settings were read from the starter's environment
    setup_logging(incremental=False)
    sys.argv = ["prefect.engine", *request["argv"]]
    runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
    sys.exit(0)


def warm_start_command(path: Path) -> list[str]:
    """The arguments after `python -m` that start a warm starter on `path`."""
    return ["deployments.warm_start", "--socket", str(path)]


def wait_ready(path: Path, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Until the starter listens; runs launched before that would start cold, not fail."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise RuntimeError(f"the warm starter exited with status {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the warm starter is not listening on {path} after {timeout} s")
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", type=Path, required=True, help="Unix socket to listen on")
    serve(parser.parse_args().socket)


if __name__ == "__main__":
    main()
