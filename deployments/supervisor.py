"""The stack's supervision (design.md §8): restart what dies, say so, give up on what keeps dying.

- A watcher thread looks at every child twice a second. A dead child is restarted with backoff
  (1 s, 2 s, 4 s, ...), its exit status and the end of its log are printed, and once it has
  stayed up a few seconds a critical message is sent (a `biasbench.stack.restarted` event that
  the notification automation forwards). A child that dies again after 5 restarts within
  10 minutes makes the stack give up: it reports why and its owner stops everything.
- A dead child's leftovers are killed before it is restarted (not the warm starter's runs:
  their launchers still own them).

A mixin of Stack rather than an object of its own: the watcher restarts children under the
stack's lock, stops at its stopping flag, and drains the sessions it tells its reaper about, so
a separate supervisor would need all of that handed back. What it uses of the stack is declared
on the class; how each child is started again is the stack's `_restart`."""

from __future__ import annotations

import asyncio
import contextvars
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from prefect import get_client
from prefect.events import Event

from biasbench.queue import gateway
from biasbench.queue.messages import (
    STACK_GAVE_UP,
    STACK_RESOURCE,
    STACK_RESTARTED,
    gave_up_text,
    restart_text,
    subject,
)
from deployments.process_tree import kill_leftovers, stop_process_group

WATCH_SECONDS = 0.5  # how often every child is looked at
RESTART_DELAY = 1.0  # the first restart's delay; it doubles with each restart in the window
MAX_RESTART_DELAY = 30.0
GIVE_UP_RESTARTS = 5  # a child that dies again after this many restarts within the window ...
GIVE_UP_WINDOW = 600.0  # ... makes the stack give up (seconds)
SETTLED_SECONDS = 10.0  # a restarted child alive this long is announced as restarted
LOG_TAIL_LINES = 10

# How messages name each child.
CHILDREN = {
    "reaper": "process reaper",
    "server": "Prefect server",
    "services": "Prefect server's services",  # the cluster profile's (cluster.py)
    "warm-start": "warm starter",
    "gpu-worker": "GPU worker",
    "manager-worker": "queue manager's worker",
    "queue-api": "/queue API",
}


def child_label(name: str) -> str:
    """How messages name a child; model hosts are one per GPU slot ("model-host-0"), and so are
    GPU workers when there are several GPUs ("gpu-worker-1")."""
    if name.startswith("model-host-"):
        return f"model host of GPU slot {name.removeprefix('model-host-')}"
    if name.startswith("gpu-worker-"):
        return f"GPU worker of GPU slot {name.removeprefix('gpu-worker-')}"
    return CHILDREN[name]


class Supervisor:
    """Mixed into Stack: restarts, messages and the give-up rule for its children."""

    # The stack's (see Stack.__init__), shared with its supervision.
    processes: dict[str, subprocess.Popen[bytes]]
    token: str
    logs: Path
    _lock: threading.RLock
    _stopping: threading.Event
    _started_at: dict[str, float]
    _log_starts: dict[str, int]
    _sessions: dict[int, int | None]
    _draining: set[int]

    def __init__(self, *, restart_delay: float, on_give_up: Callable[[str], None] | None) -> None:
        self.restart_delay = restart_delay
        self.on_give_up = on_give_up
        self.failure: str | None = None  # why the stack gave up, once it has
        self._finished = threading.Event()  # every child is stopped: the watcher may end
        self._watcher: threading.Thread | None = None
        self._restarts: dict[str, list[float]] = {}  # child -> when it was restarted
        self._unannounced: dict[str, list[int | str]] = {}  # child -> exits not yet announced

    def _restart(self, name: str) -> None:
        """Start a child again as it was first started; raises if it does not come up."""
        raise NotImplementedError  # the stack's

    def _forget_empty_sessions(self) -> None:
        """Tell the reaper to forget dead children's sessions once they are empty."""
        raise NotImplementedError  # the stack's

    def _start_watching(self) -> None:
        """The watcher restarts children: PDEATHSIG follows the thread that started a child,
        so the watcher lives until the stack has stopped them all (`_stop_watching`). It sees
        this thread's settings (the stack's server)."""
        run = contextvars.copy_context().run
        self._watcher = threading.Thread(
            target=run, args=(self._watch,), name="stack-watcher", daemon=True
        )
        self._watcher.start()

    def _stop_watching(self) -> None:
        """Once every child is stopped."""
        self._finished.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join()

    def _watch(self) -> None:
        while not self._finished.wait(WATCH_SECONDS):
            if self._stopping.is_set() or self.failure is not None:
                continue
            with self._lock:
                self._forget_empty_sessions()
                for name, process in list(self.processes.items()):
                    if self._stopping.is_set() or self.failure is not None:
                        break
                    try:
                        if process.poll() is not None:
                            self._recover(name, process)
                        elif name in self._unannounced and self._settled(name):
                            self._announce_restart(name)
                    except Exception as exc:  # the watcher must go on watching
                        self._say(f"could not look after the {child_label(name)}: {exc!r}")

    def _recover(self, name: str, process: subprocess.Popen[bytes]) -> None:
        """Restart a dead child with backoff, or give up when it keeps dying."""
        status: int | str = process.returncode
        label = child_label(name)
        self._say(f"the {label} died ({_status(status)}).{self._log_tail(name)}")
        # What it started dies with it; not the warm starter's forks: they still serve running
        # flows' launchers, and end with them.
        if name != "warm-start":
            session = {process.pid: self._sessions.get(process.pid)}
            if killed := kill_leftovers(self.token, name, session):
                self._say(f"killed what the {label} left behind: pids {killed}")
        self._draining.add(process.pid)
        while not self._stopping.is_set():
            self._unannounced.setdefault(name, []).append(status)
            now = time.monotonic()
            recent = [t for t in self._restarts.get(name, []) if now - t < GIVE_UP_WINDOW]
            if len(recent) >= GIVE_UP_RESTARTS:
                self._give_up(name, len(recent), status)
                return
            delay = min(self.restart_delay * 2 ** len(recent), MAX_RESTART_DELAY)
            self._say(f"restarting the {label} in {delay:g} s")
            if self._stopping.wait(delay):
                return
            self._restarts[name] = [*recent, time.monotonic()]
            try:
                self._restart(name)
                return
            except Exception as exc:
                status = f"did not start: {exc}"
                self._say(f"the {label} {status}")
                self._discard(name, process)

    def _discard(self, name: str, dead: subprocess.Popen[bytes]) -> None:
        """Stop what a failed restart left running (a server that never became healthy must
        not hold the port against the next try)."""
        started = self.processes.get(name)
        if started is not None and started is not dead:
            stop_process_group(started)
            kill_leftovers(self.token, name, {started.pid: self._sessions.get(started.pid)})
            self._draining.add(started.pid)

    def _settled(self, name: str) -> bool:
        process = self.processes[name]
        return (
            process.poll() is None and time.monotonic() - self._started_at[name] >= SETTLED_SECONDS
        )

    def _announce_restart(self, name: str) -> None:
        exits = self._unannounced.pop(name)
        text = restart_text(child_label(name), deaths=len(exits), last_exit=exits[-1])
        self._say(f"the {child_label(name)} runs again")
        self._emit(STACK_RESTARTED, text)

    def _give_up(self, name: str, restarts: int, status: int | str) -> None:
        self.failure = (
            f"the {child_label(name)} died again after {restarts} restarts within "
            f"{GIVE_UP_WINDOW / 60:g} minutes ({_status(status)}); its log: "
            f"{self.logs / (name + '.log')}"
        )
        self._say(f"giving up: {self.failure}")
        minutes = int(GIVE_UP_WINDOW // 60)
        self._emit(
            STACK_GAVE_UP,
            gave_up_text(child_label(name), restarts=restarts, minutes=minutes, last_exit=status),
        )
        if self.on_give_up is not None:
            self.on_give_up(self.failure)

    def _emit(self, event: str, text: str) -> None:
        """A message for the automations to forward, sent straight to the server (a failure is
        printed: the restart itself has happened)."""
        try:
            asyncio.run(_post_event(event, text))
        except Exception as exc:
            self._say(f"could not send the message ({exc!r}): {subject(text)}")

    def _log_tail(self, name: str) -> str:
        """The last lines this run of the child wrote (its log is shared by all its runs)."""
        path = self.logs / f"{name}.log"
        try:
            with path.open("rb") as log:
                log.seek(max(log.seek(0, os.SEEK_END) - 8192, self._log_starts.get(name, 0)))
                lines = log.read().decode(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        except OSError:
            lines = []
        if not lines:
            return f" It wrote nothing to {path}."
        return f" The end of {path}:\n" + "\n".join(f"    | {line}" for line in lines)

    @staticmethod
    def _say(text: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} stack: {text}", flush=True)


def _status(status: int | str) -> str:
    return status if isinstance(status, str) else f"exit status {status}"


async def _post_event(event: str, text: str) -> None:
    payload = {"text": text, "subject": subject(text), "critical": "Process died"}
    body = Event(event=event, resource=STACK_RESOURCE, payload=payload)
    async with get_client() as client:
        await gateway.publish_events(client, [body])
