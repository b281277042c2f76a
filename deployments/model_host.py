"""The model host of one GPU slot: owns that GPU's inference servers, and starts, reuses, wakes,
swaps and heals them for the task flows that ask (design.md §8).

A task flow asks "ensure model X" over the host's channel (deployments/model_host_channel.py)
and gets the server's base URL once it is ready, with a lease it renews while it runs:

- the same model as loaded: reused; another one: the loaded one is put to sleep (level 1 when
  host RAM can hold its weights, else level 2) when its catalogue entry supports sleep, else
  stopped, and the asked one is woken (if asleep) or started;
- a server in use (leased) is never evicted: a request for another model waits for the lease;
  a task that is cancelled or killed stops renewing, and its lease lapses after LEASE_SECONDS,
  leaving the server running for the next task;
- a server that dies is seen within WATCH_SECONDS and restarted on its port (backoff 1, 2, 4 s,
  3 tries); the fourth failure, or a server not ready within its start timeout, is
  ModelServerFailed with the server's last output lines, told to the task's next renewal;
- after MODEL_IDLE_TTL without a lease every server is stopped, so the GPU is free in the
  morning;
- what it has loaded is published (a Prefect variable per host and slot) for the manager's
  model-aware scheduling, and for /queue/stats; a host that stops cleanly takes it back
  (`close`), so a host that is gone shows no model.

Why a process of its own rather than the flow starting vLLM: a server outlives the task that
started it (that is the point of reuse), and a cancelled task's process group must not take
the server with it."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biasbench.errors import ModelDoesNotFit, ModelServerFailed
from biasbench.models_catalogue import Catalogue, ModelSpec
from deployments.model_server import (
    ModelServer,
    StartFailed,
    gpu_free_gb,
    host_ram_available_gb,
    stop_leftovers,
)

LEASE_SECONDS = 10.0  # a lease not renewed this long is over: its task's process is gone
WATCH_SECONDS = 0.25  # how often servers, leases and the idle time are looked at
RESTART_BACKOFF = (1.0, 2.0, 4.0)  # before each of the 3 restarts of a server that died
GPU_RELEASE_SECONDS = 60.0  # how long a stopped server's GPU memory may take to be freed
PUBLISHED_LOADS = 20  # the latest loads in the published state, for the done messages
PUBLISH_RETRY_SECONDS = 1.0  # a publish the server refused (busy, restarting) is sent again,
MAX_PUBLISH_WAIT = 30.0  # doubling the wait each time up to this
KEPT_LOADS = 500  # the latest loads the host remembers (its status)
WITHDRAW_SECONDS = 3.0  # how long a stopping host tries to delete its published state
PUBLISH_BEFORE_USE_SECONDS = 20.0  # how long a task waits for its new model to be published

Publish = Callable[[dict[str, Any] | None], Awaitable[None]]  # None: the host is gone


@dataclass
class Lease:
    model: str
    renewed: float


class ModelHost:
    """The host's state and rules; the channel and the process around it are in
    model_host_channel.py, one server's process handling in model_server.py."""

    def __init__(
        self,
        catalogue: Catalogue,
        *,
        state_dir: Path,
        idle_ttl: float,
        publish: Publish | None = None,
        say: Callable[[str], None] = print,
    ) -> None:
        self.catalogue = catalogue
        self.state_dir = state_dir
        self.idle_ttl = idle_ttl
        self.publish = publish
        self.say = say
        self.servers: dict[str, ModelServer] = {}
        self.active: str | None = None
        self.leases: dict[str, Lease] = {}
        self.failed: dict[str, str] = {}  # lease -> why its server is gone for good
        self.loads: list[dict[str, Any]] = []  # every start, wake and reuse, for status/tests
        self.loading: dict[str, str] | None = None  # {"model", "task"} while a load runs
        self._made_room: str | None = None  # what the current load did to the old model
        self._cond = asyncio.Condition()
        self._busy = False  # a load, swap or restart is under way
        self._last_used = time.monotonic()
        self._nvml_said = False
        self._publishing = asyncio.Lock()
        self._publishes: set[asyncio.Task[None]] = set()
        self._closed = False
        self._publish_failures = 0  # in a row
        self._publish_retrying = False

    # --- what the channel asks -----------------------------------------------------------

    async def ensure(self, model: str, lease_id: str, task: str | None = None) -> dict[str, Any]:
        """Make `model` ready and lease it to `lease_id`; its base URL and how it got ready.
        `task` (a flow-run id) is published while the model loads: /queue shows its phase."""
        spec = self.catalogue.get(model)
        async with self._cond:
            await self._cond.wait_for(lambda: not self._busy and self._free_for(model))
            self._busy = True
            self.leases[lease_id] = Lease(model, time.monotonic())
        self.loading = {"model": model, "task": task or ""}
        self._made_room = None
        self._publish_soon()
        try:
            started = time.monotonic()
            how = await self._load(spec)
            seconds = round(time.monotonic() - started, 3)
        except BaseException:
            self.leases.pop(lease_id, None)
            raise
        finally:
            self.loading = None
            async with self._cond:
                self._busy = False
                self._cond.notify_all()
        self.leases[lease_id] = Lease(model, time.monotonic())
        load = {"model": model, "how": how, "seconds": seconds, "at": time.time(), "task": task}
        if self._made_room is not None:
            load["swapped"] = self._made_room
        self._remember(load)
        self.say(f"{model}: {how} in {seconds:.1f} s")
        if how == "reused":
            self._publish_soon()
        else:
            await self._publish_before_use()
        return {"base_url": self.servers[model].base_url, **load}

    def renew(self, lease_id: str) -> dict[str, Any]:
        if (why := self.failed.pop(lease_id, None)) is not None:
            return {"failed": why}
        if (lease := self.leases.get(lease_id)) is None:
            return {"gone": True}
        lease.renewed = self._last_used = time.monotonic()
        return {"ok": True}

    async def release(self, lease_id: str) -> None:
        self.failed.pop(lease_id, None)
        if self.leases.pop(lease_id, None) is not None:
            self._last_used = time.monotonic()
            async with self._cond:
                self._cond.notify_all()

    def status(self) -> dict[str, Any]:
        servers = {
            name: (f"asleep (level {s.sleeping})" if s.sleeping else "ready")
            if s.alive()
            else "dead"
            for name, s in self.servers.items()
        }
        leases = {lease_id: lease.model for lease_id, lease in self.leases.items()}
        return {
            "active": self.active,
            "loading": self.loading,
            "servers": servers,
            "leases": leases,
            "loads": self.loads,
        }

    def _remember(self, load: dict[str, Any]) -> None:
        """Keep the latest loads only: a host that runs for weeks must not grow without end."""
        self.loads = [*self.loads[-KEPT_LOADS + 1 :], load]

    def _free_for(self, model: str) -> bool:
        """No task uses another model's server."""
        return all(lease.model == model for lease in self.leases.values())

    # --- loading ---------------------------------------------------------------------------

    async def _load(self, spec: ModelSpec) -> str:
        current = self.servers.get(spec.name)
        if self.active == spec.name and current is not None and current.alive():
            return "reused"  # the active server is awake: only others are put to sleep
        loaded = self.servers.get(self.active) if self.active is not None else None
        if loaded is not None and loaded is not current:
            await self._evict(loaded, spec)
        self.active = None
        if current is not None and current.alive() and current.sleeping:
            try:
                await current.wake()
                self.active = spec.name
                return "woken"
            except StartFailed as exc:
                self.say(f"{spec.name}: {exc}; starting it afresh")
                await self._drop(current)
        elif current is not None:
            await self._drop(current)
        await self._start(spec, attempts=1 + len(RESTART_BACKOFF))
        self.active = spec.name
        return "cold start"

    async def _evict(self, old: ModelServer, new: ModelSpec) -> None:
        """Make room for `new`: sleep the old server if it can, else stop it and wait until its
        GPU memory is released."""
        if old.alive() and old.spec.supports_sleep:
            ram = host_ram_available_gb()
            needs = old.spec.gpu_memory_gb or 0.0
            level = 1 if ram is None or ram > needs * 1.1 else 2
            if await old.sleep(level):
                self.say(f"{old.spec.name}: put to sleep (level {level}) for {new.name}")
                self._made_room = f"{old.spec.name} put to sleep (level {level})"
                return
            self.say(f"{old.spec.name}: did not go to sleep; stopping it")
        else:
            self.say(f"{old.spec.name}: stopping it for {new.name}")
        await self._drop(old)
        self._made_room = f"{old.spec.name} stopped"
        await self._wait_gpu_released(new)

    async def _wait_gpu_released(self, spec: ModelSpec) -> None:
        if spec.gpu_memory_gb is None:
            return
        deadline = time.monotonic() + GPU_RELEASE_SECONDS
        while (free := gpu_free_gb()) is not None and free < spec.gpu_memory_gb:
            if time.monotonic() >= deadline:
                return  # _start's check says what does not fit
            await asyncio.sleep(0.5)

    async def _start(self, spec: ModelSpec, *, attempts: int, port: int | None = None) -> None:
        """Start the server, retrying with backoff when it exits while starting; a server that
        is not ready within its start timeout is not retried (it would take as long again)."""
        self._check_fits(spec)
        port = port or _free_port()
        for attempt in range(attempts):
            if attempt:
                delay = RESTART_BACKOFF[min(attempt, len(RESTART_BACKOFF)) - 1]
                self.say(f"{spec.name}: starting again in {delay:g} s")
                await asyncio.sleep(delay)
            server = ModelServer(spec, port, self.state_dir)
            self.servers[spec.name] = server
            server.launch()
            self.say(f"{spec.name}: starting on port {port} (pid {server.pid})")
            try:
                await server.wait_ready(spec.start_timeout)
                return
            except StartFailed as exc:
                tail = server.output_tail()
                await self._drop(server)
                failure = f"{spec.name}: {exc}"
                self.say(failure)
                if "not ready within" in str(exc):
                    break
        raise ModelServerFailed(
            f"Model server failed to start: {failure}. Its last output lines:\n{tail}"
        )

    def _check_fits(self, spec: ModelSpec) -> None:
        free = gpu_free_gb()
        if free is None:
            if not self._nvml_said:
                self.say("no GPU visible through NVML: the free GPU memory check is skipped")
                self._nvml_said = True
            return
        if spec.gpu_memory_gb is not None and spec.gpu_memory_gb > free:
            raise ModelDoesNotFit(
                f"{spec.name} needs {spec.gpu_memory_gb:g} GB of GPU memory; {free:.1f} GB are free"
            )

    async def _drop(self, server: ModelServer) -> None:
        await server.stop()
        if self.servers.get(server.spec.name) is server:
            del self.servers[server.spec.name]
        if self.active == server.spec.name:
            self.active = None

    # --- watching --------------------------------------------------------------------------

    async def watch(self) -> None:
        """Servers that died, leases that lapsed, and the idle time; forever."""
        self.say(f"stopped what a previous host left running: {stop_leftovers(self.state_dir)}")
        self._publish_soon()
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            try:
                await self._look()
            except Exception as exc:  # the host must go on watching
                self.say(f"could not look after the servers: {exc!r}")

    async def _look(self) -> None:
        now = time.monotonic()
        lapsed = [i for i, lease in self.leases.items() if now - lease.renewed > LEASE_SECONDS]
        for lease_id in lapsed:
            self.say(f"lease {lease_id} lapsed: its task is gone; the server stays")
            await self.release(lease_id)
        if self._busy:
            return
        for name, server in list(self.servers.items()):
            if not server.alive():
                await self._heal(name, server)
        idle = now - self._last_used
        if self.servers and not self.leases and not self._busy and idle > self.idle_ttl:
            self.say(f"idle for {idle:.0f} s: stopping {', '.join(self.servers)}")
            await self.stop_all()

    async def _heal(self, name: str, dead: ModelServer) -> None:
        """Restart a dead server on its port, if it was the loaded one; a sleeping one is
        forgotten (the next request for it starts it)."""
        self.say(f"{name}: the server died ({dead.exit_status()})")
        if name != self.active:
            await self._drop(dead)
            return
        self._busy = True
        try:
            await self._drop(dead)
            await self._start(dead.spec, attempts=len(RESTART_BACKOFF), port=dead.port)
            self.active = name
            self._remember({"model": name, "how": "restart", "seconds": 0, "at": time.time()})
        except (ModelServerFailed, ModelDoesNotFit) as exc:
            for lease_id, lease in self.leases.items():
                if lease.model == name:
                    self.failed[lease_id] = str(exc)
        finally:
            async with self._cond:
                self._busy = False
                self._cond.notify_all()
            self._publish_soon()

    async def stop_all(self) -> None:
        for server in list(self.servers.values()):
            await self._drop(server)
        self.active = None
        self._publish_soon()

    async def close(self) -> None:
        """Stop every server, then take the published state back once the last publish is
        sent: a host that is gone must not show a loaded model in /queue/stats, nor draw the
        manager's model grouping to its GPU."""
        await self.stop_all()
        self._closed = True
        if self.publish is None:
            return
        try:  # bounded: an unreachable Prefect server must not hold up the stack's shutdown
            await asyncio.wait_for(self._withdraw(self.publish), WITHDRAW_SECONDS)
        except Exception as exc:
            self.say(f"could not take back the published model: {exc!r}")

    async def _withdraw(self, publish: Publish) -> None:
        await asyncio.gather(*self._publishes, return_exceptions=True)
        async with self._publishing:
            await publish(None)

    # --- publishing ------------------------------------------------------------------------

    def _publish_soon(self) -> asyncio.Task[None] | None:
        if self.publish is None or self._closed:
            return None
        task = asyncio.get_running_loop().create_task(self._publish())
        self._publishes.add(task)  # close() waits for it, and a task kept is not collected
        task.add_done_callback(self._publishes.discard)
        return task

    async def _publish_before_use(self) -> None:
        """A new model is published before its task gets the server: the manager picks the
        next task by the model the GPU holds, and the task cannot end before it is told (CI: a
        publish that lagged behind a 5 s task had it group by the old model, A A B A B B).
        A server that does not take it in time only delays grouping, not the task."""
        if (task := self._publish_soon()) is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), PUBLISH_BEFORE_USE_SECONDS)
        except TimeoutError:
            self.say("the new model is not published yet; the task goes on meanwhile")

    async def _publish(self) -> None:
        """The state at the time it is sent (not when asked), one at a time."""
        assert self.publish is not None
        async with self._publishing:
            try:
                status = self.status()
                await self.publish(
                    {
                        "model": self.active,
                        "loading": self.loading,
                        "servers": status["servers"],
                        "loads": self.loads[-PUBLISHED_LOADS:],  # for the done messages
                    }
                )
                self._publish_failures = 0
                return
            except Exception as exc:
                self._publish_failures += 1
                if self._publish_failures == 1:
                    self.say(f"could not publish the loaded model ({exc!r}); trying again")
        # Until a state gets through, the manager reads the one before: it would group tasks
        # for the wrong model, and a task's load would be missing from its message. So once
        # more later, with the state as it is then (one retry waiting at a time).
        if self._publish_retrying:
            return
        self._publish_retrying = True
        try:
            await asyncio.sleep(
                min(PUBLISH_RETRY_SECONDS * 2 ** (self._publish_failures - 1), MAX_PUBLISH_WAIT)
            )
        finally:
            self._publish_retrying = False
        self._publish_soon()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
