"""The task's side of the model host's channel: "ensure model X", then hold it while the task
runs (the process side is deployments/model_host.py; the protocol is in its channel module).

`async with ModelHostClient(socket).model("mistral-24b") as loaded:` waits until the host has
the model ready (calling `on_wait(elapsed)` every few seconds, for a progress line), yields
where to send requests, renews the lease in the background, and releases it at the end. When
the host loses the server for good mid-task (it died four times), the renewal is told so: the
body is cancelled and `ModelServerFailed` (critical) rises in its place, with the server's last
output lines. The domain owns this client because the flows may talk to the host only over its
channel (design.md §8), and both ends must agree on one protocol."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from biasbench.errors import InvalidConfig, ModelDoesNotFit, ModelServerFailed

HOST_VARIABLE_PREFIX = "model-host-"  # the Prefect variables where the hosts publish their state
RENEW_SECONDS = 2.0  # well inside the host's LEASE_SECONDS
WAIT_REPORT_SECONDS = 5.0  # how often `on_wait` hears how long the load takes
CONNECT_PATIENCE = 30.0  # a host being restarted by the stack comes back within this


@dataclass(frozen=True)
class LoadedModel:
    """Where the model is served, and how the host got it ready ("reused", "woken", "cold
    start") in how many seconds."""

    model: str
    base_url: str
    how: str
    seconds: float


class ModelHostClient:
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path

    async def status(self) -> dict[str, Any]:
        async with self._session() as http, http.get("http://host/status") as reply:
            result: dict[str, Any] = await reply.json()
            return result

    @contextlib.asynccontextmanager
    async def model(
        self,
        name: str,
        *,
        task: str | None = None,
        on_wait: Callable[[float], Awaitable[None]] | None = None,
    ) -> AsyncIterator[LoadedModel]:
        """task: the flow-run id, which the host shows as loading the model."""
        lease = uuid.uuid4().hex
        failure: list[str] = []
        owner = asyncio.current_task()
        async with self._session() as http:
            renewing = asyncio.create_task(self._renew(http, lease, failure, owner))
            try:
                loaded = await self._ensure(
                    http, {"model": name, "lease": lease, "task": task}, on_wait
                )
                try:
                    yield loaded
                except asyncio.CancelledError:
                    if failure and owner is not None and owner.uncancel() == 0:
                        raise ModelServerFailed(failure[0]) from None
                    raise
                if failure:
                    raise ModelServerFailed(failure[0])
            finally:
                renewing.cancel()
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.post("http://host/release", json={"lease": lease}):
                        pass

    async def _ensure(
        self,
        http: aiohttp.ClientSession,
        asked: dict[str, Any],
        on_wait: Callable[[float], Awaitable[None]] | None,
    ) -> LoadedModel:
        asking = asyncio.create_task(self._ask_ensure(http, asked))
        waited = 0.0
        while True:
            done, _ = await asyncio.wait({asking}, timeout=WAIT_REPORT_SECONDS)
            if done:
                return asking.result()
            waited += WAIT_REPORT_SECONDS
            if on_wait is not None:
                await on_wait(waited)

    async def _ask_ensure(self, http: aiohttp.ClientSession, asked: dict[str, Any]) -> LoadedModel:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONNECT_PATIENCE
        while True:
            try:
                async with http.post("http://host/ensure", json=asked) as reply:
                    body = await reply.json()
                    status = reply.status
                break
            except aiohttp.ClientConnectionError:
                if loop.time() >= deadline:
                    raise ModelServerFailed(
                        f"the model host at {self.socket_path} does not answer"
                    ) from None
                await asyncio.sleep(1)
        if status == 404:
            raise InvalidConfig("model_name", body["error"])
        if status == 507:
            raise ModelDoesNotFit(body["error"])
        if status != 200:
            raise ModelServerFailed(body.get("error", f"the model host answered HTTP {status}"))
        return LoadedModel(asked["model"], body["base_url"], body["how"], float(body["seconds"]))

    async def _renew(
        self,
        http: aiohttp.ClientSession,
        lease: str,
        failure: list[str],
        owner: asyncio.Task[Any] | None,
    ) -> None:
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            try:
                async with http.post("http://host/renew", json={"lease": lease}) as reply:
                    answer = await reply.json()
            except (aiohttp.ClientError, TimeoutError, ValueError):
                continue  # the host restarts: the task's requests wait it out meanwhile
            if "failed" in answer:
                failure.append(str(answer["failed"]))
                if owner is not None:
                    owner.cancel()
                return

    def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=self.socket_path),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
        )


async def pick_host(sockets: Sequence[str], model: str) -> str:
    """The host for a task, when the worker has several GPU slots (a run does not know its
    slot): one with the model loaded and no task, else one with no task, else the first.
    Two tasks starting at the same moment may pick the same host; the second then waits for
    the first's lease, which costs time, never correctness."""
    if not sockets:
        raise InvalidConfig("model_name", "no model host is configured on this worker")
    if len(sockets) == 1:
        return sockets[0]
    free: list[str] = []
    for socket in sockets:
        try:
            status = await ModelHostClient(socket).status()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            continue
        if not status.get("leases") and not status.get("loading"):
            if status.get("active") == model:
                return socket
            free.append(socket)
    return free[0] if free else sockets[0]
