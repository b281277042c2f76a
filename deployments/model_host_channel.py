"""The model host's process: its local channel (HTTP over a Unix socket) and its command line.

`python -m deployments.model_host_channel --socket PATH --state-dir DIR [--slot N] [--publish]`

A Unix socket rather than a TCP port: only processes of this machine (and user) reach it, and
the stack names it in its private socket directory, so two stacks never collide. The protocol
(JSON bodies; the client side is biasbench/llm/model_host.py):

    POST /ensure  {"model", "lease", "task"?} -> 200 {"base_url", "model", "how", "seconds"}
                                        404 unknown model, 507 does not fit, 503 failed
    POST /renew   {"lease"}          -> 200 {"ok"} | {"gone"} | {"failed": why}
    POST /release {"lease"}          -> 200
    GET  /status                     -> 200 {"active", "servers", "leases", "loads"}

SIGTERM or SIGINT stops every server (process group, SIGKILL after a grace) and, with
--publish, deletes the host's Prefect variable before it exits. A host killed with SIGKILL
cannot: its variable shows its last state until a host of the same machine and slot starts
again and publishes over it (the stack restarts a killed host at once)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from biasbench.errors import InvalidConfig, ModelDoesNotFit, ModelServerFailed
from biasbench.llm.model_host import HOST_VARIABLE_PREFIX
from biasbench.queue.gpus import machine_slug
from biasbench.settings import Settings
from deployments.model_host import ModelHost


def build_app(host: ModelHost) -> web.Application:
    async def ensure(request: web.Request) -> web.Response:
        body = await request.json()
        try:
            task = body.get("task")
            loaded = await host.ensure(str(body["model"]), str(body["lease"]), task)
        except InvalidConfig as exc:
            return web.json_response({"error": exc.message, "kind": "unknown"}, status=404)
        except ModelDoesNotFit as exc:
            return web.json_response({"error": str(exc), "kind": "does_not_fit"}, status=507)
        except ModelServerFailed as exc:
            return web.json_response({"error": str(exc), "kind": "failed"}, status=503)
        return web.json_response(loaded)

    async def renew(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(host.renew(str(body["lease"])))

    async def release(request: web.Request) -> web.Response:
        body = await request.json()
        await host.release(str(body["lease"]))
        return web.json_response({"ok": True})

    async def status(request: web.Request) -> web.Response:
        return web.json_response(host.status())

    app = web.Application()
    app.router.add_post("/ensure", ensure)
    app.router.add_post("/renew", renew)
    app.router.add_post("/release", release)
    app.router.add_get("/status", status)
    return app


def variable_name(slot: int) -> str:
    """Prefect variable names allow lowercase letters, digits, dashes and underscores."""
    return f"{HOST_VARIABLE_PREFIX}{machine_slug(socket.gethostname())}-{slot}"


def prefect_publisher(slot: int) -> Any:
    """Write the host's state to its Prefect variable, where the manager reads it; delete the
    variable when the host is gone (state None)."""
    from prefect.variables import Variable

    name = variable_name(slot)

    async def publish(state: dict[str, Any] | None) -> None:
        if state is None:
            await Variable.aunset(name)
            return
        await Variable.aset(name, {**state, "slot": slot, "at": time.time()}, overwrite=True)

    return publish


def say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} model host: {text}", flush=True)


async def serve(socket_path: Path, state_dir: Path, slot: int, publish: bool) -> None:
    settings = Settings()
    catalogue = settings.catalogue
    if catalogue is None:
        raise SystemExit("model host: MODEL_CATALOGUE is not set; nothing to host")
    host = ModelHost(
        catalogue,
        state_dir=state_dir,
        idle_ttl=settings.model_idle_ttl,
        publish=prefect_publisher(slot) if publish else None,
        say=say,
    )
    runner = web.AppRunner(build_app(host), access_log=None, shutdown_timeout=1)
    await runner.setup()
    socket_path.unlink(missing_ok=True)
    await web.UnixSite(runner, str(socket_path)).start()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    watching = asyncio.create_task(host.watch())
    say(f"serving {', '.join(catalogue.names)} on {socket_path}")
    print("READY", flush=True)
    await stop.wait()
    watching.cancel()
    say("stopping every server")
    await host.close()
    await runner.cleanup()
    socket_path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--slot", type=int, default=0)
    parser.add_argument("--publish", action="store_true", help="publish through Prefect")
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.socket, args.state_dir, args.slot, args.publish))
    except InvalidConfig as exc:
        print(f"model host: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
