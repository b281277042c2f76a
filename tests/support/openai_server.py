"""A real, scriptable HTTP server that speaks the OpenAI chat protocol, for tests and benchmarks.

Why a real server and not a mocked transport: the client's job is mostly about the wire —
connection pooling, timeouts, refused connections, status codes, `Retry-After`, bodies that are
not JSON. Only a real socket exercises those paths the way vLLM will.

The server runs in a background thread with its own event loop, so a sync pytest test (or a test
blocked in `asyncio.run`) and other processes can talk to it. Behaviour per request comes from a
queue of scripted steps (`Reply`, `Status`, `Malformed`, `EmptyChoices`, `Delay`, `Disconnect`)
consumed in arrival order; when the queue is empty, the `answer` callable produces the reply.
`on_prompt(text, step)` answers every request whose messages contain `text` with `step`, however
many arrive and in whatever order (a window of concurrent requests has no fixed order).

Standalone (for `perf/`): `python -m tests.support.openai_server --port 0 --latency 0.2
--workers 2` forks worker processes that share the port through SO_REUSEPORT (one event loop
per core, so the server is not the bottleneck) and prints `READY http://127.0.0.1:<port>`.

As a model server (what a model catalogue's serve command starts for the model host's tests and
the demo): `--workers 1 --model NAME --load-seconds S` loads for S seconds before it listens
(like vLLM, nothing answers meanwhile), then serves `/health` and vLLM's sleep endpoints with
their semantics (`POST /sleep?level=1|2`, `POST /wake_up`, `GET /is_sleeping`; a level-1 wake
takes `--wake-seconds`, a level-2 wake reloads and takes `--load-seconds`; a sleeping server
answers no completions). `--crash-after N` makes the process exit abruptly when its N-th chat
request arrives (with `--crash-marker PATH`: only if PATH does not exist yet, which it then
creates, so the restarted server lives).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from aiohttp import web

from tests.support.ports import free_port

Answer = Callable[[Sequence[dict[str, Any]], str], str]


@dataclass(frozen=True)
class Reply:
    """Answer this request with `text` (a normal 200 completion; None sends `content: null`)."""

    text: str | None


@dataclass(frozen=True)
class Status:
    """Answer with a vLLM-style error body and this HTTP status (e.g. 500, 429).

    `retry_after` is sent in seconds, `retry_after_date` as an HTTP date that many seconds after
    the response. `nested` sends the newer `{"error": {...}}` shape instead of the flat one."""

    code: int
    retry_after: float | None = None
    message: str = "scripted error"
    error_type: str = "BadRequestError"
    retry_after_date: float | None = None
    nested: bool = False


@dataclass(frozen=True)
class Malformed:
    """Answer 200 with a body that is not JSON."""


@dataclass(frozen=True)
class EmptyChoices:
    """Answer 200 with a well-formed completion whose `choices` list is empty."""


@dataclass(frozen=True)
class Delay:
    """Wait `seconds`, then answer normally (or with `then`, if given)."""

    seconds: float
    then: Reply | Status | Malformed | EmptyChoices | None = None


@dataclass(frozen=True)
class Disconnect:
    """Close the connection without sending any response."""


Step = Reply | Status | Malformed | EmptyChoices | Delay | Disconnect


@dataclass
class Record:
    """One received request, with server-side start and end times (time.monotonic)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    started: float
    finished: float | None = None


def _default_answer(messages: Sequence[dict[str, Any]], model: str) -> str:
    # Imported lazily: the deterministic fake is the domain's, and tests that pass their own
    # `answer` should not depend on it.
    from biasbench.llm.fake import answer_for

    return answer_for(messages, model)  # type: ignore[arg-type]


def _error_body(
    message: str, code: int, error_type: str = "BadRequestError", *, nested: bool = False
) -> dict[str, Any]:
    """vLLM's error shapes: flat `{"object": "error", ...}` (older), `{"error": {...}}` (newer)."""
    if nested:
        return {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    return {"object": "error", "message": message, "type": error_type, "param": None, "code": code}


def _completion(model: str, text: str | None, messages: Sequence[dict[str, Any]], n: int) -> dict:
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
    completion_tokens = len((text or "").split())
    return {
        "id": f"chatcmpl-{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class _App:
    """The request handlers and their shared state; used by both the threaded and forked modes."""

    def __init__(
        self,
        models: Sequence[str],
        answer: Answer | None,
        latency: float,
        api_key: str | None,
        record: bool = True,
    ) -> None:
        self.models = list(models)
        self.answer: Answer = answer or _default_answer
        self.latency = latency
        self.api_key = api_key
        self.record = record
        self.lock = threading.Lock()
        self.steps: collections.deque[Step] = collections.deque()
        self.prompt_steps: list[tuple[str, Step]] = []
        self.records: list[Record] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.count = 0

    # Model-server behaviour (standalone `--workers 1`), off by default.
    sleeping: int = 0  # 0 awake, else the level it was put to sleep with
    wake_seconds: float = 0.2
    load_seconds: float = 0.0
    crash_after: int | None = None
    crash_marker: str | None = None

    def build(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self.models_handler)
        app.router.add_post("/v1/chat/completions", self.chat_handler)
        app.router.add_get("/health", self.health_handler)
        app.router.add_post("/sleep", self.sleep_handler)
        app.router.add_post("/wake_up", self.wake_handler)
        app.router.add_get("/is_sleeping", self.is_sleeping_handler)
        return app

    async def health_handler(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=200)

    async def sleep_handler(self, request: web.Request) -> web.StreamResponse:
        level = int(request.query.get("level", "1"))
        if level not in (1, 2):
            return web.json_response(_error_body("level must be 1 or 2", 400), status=400)
        self.sleeping = level
        print(f"sleeping at level {level}", flush=True, file=sys.stderr)
        return web.Response(status=200)

    async def wake_handler(self, request: web.Request) -> web.StreamResponse:
        if self.sleeping:
            # Level 1 copies the weights back from CPU RAM; level 2 loads them again.
            await asyncio.sleep(self.wake_seconds if self.sleeping == 1 else self.load_seconds)
            print(f"woke up from level {self.sleeping}", flush=True, file=sys.stderr)
            self.sleeping = 0
        return web.Response(status=200)

    async def is_sleeping_handler(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"is_sleeping": bool(self.sleeping)})

    def _maybe_crash(self) -> None:
        if self.crash_after is None or self.count < self.crash_after:
            return
        if self.crash_marker is not None:
            if os.path.exists(self.crash_marker):
                return
            with open(self.crash_marker, "w") as marker:
                marker.write(str(os.getpid()))
        print(f"crashing at chat request {self.count} (--crash-after)", flush=True, file=sys.stderr)
        os._exit(70)

    def _authorized(self, request: web.Request) -> bool:
        if self.api_key is None:
            return True
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    def _start(self, request: web.Request, body: Any) -> Record:
        rec = Record(request.method, request.path, dict(request.headers), body, time.monotonic())
        with self.lock:
            self.count += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if self.record:
                self.records.append(rec)
        return rec

    def _finish(self, rec: Record) -> None:
        rec.finished = time.monotonic()
        with self.lock:
            self.in_flight -= 1

    async def models_handler(self, request: web.Request) -> web.StreamResponse:
        rec = self._start(request, None)
        try:
            if not self._authorized(request):
                return web.json_response(_error_body("invalid api key", 401), status=401)
            data = [{"id": m, "object": "model", "owned_by": "biasbench-test"} for m in self.models]
            return web.json_response({"object": "list", "data": data})
        finally:
            self._finish(rec)

    async def chat_handler(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        rec = self._start(request, body)
        self._maybe_crash()
        if self.sleeping:
            self._finish(rec)
            return web.json_response(_error_body("the model is sleeping", 503), status=503)
        try:
            with self.lock:
                step = self._prompt_step(body)
                if step is None and self.steps:
                    step = self.steps.popleft()
            if isinstance(step, Delay):
                await asyncio.sleep(step.seconds)
                step = step.then
            elif self.latency > 0:
                await asyncio.sleep(self.latency)
            return self._respond(request, body, step, rec)
        finally:
            self._finish(rec)

    def _prompt_step(self, body: Any) -> Step | None:
        if not self.prompt_steps or not isinstance(body, dict):
            return None
        text = json.dumps(body.get("messages"), ensure_ascii=False)
        return next((step for part, step in self.prompt_steps if part in text), None)

    def _respond(
        self, request: web.Request, body: Any, step: Step | None, rec: Record
    ) -> web.StreamResponse:
        if isinstance(step, Disconnect):
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)  # never reaches the client
        if isinstance(step, Status):
            headers = {}
            if step.retry_after is not None:
                headers["Retry-After"] = f"{step.retry_after:g}"
            if step.retry_after_date is not None:
                when = time.time() + step.retry_after_date
                headers["Retry-After"] = formatdate(when, usegmt=True)
            err = _error_body(step.message, step.code, step.error_type, nested=step.nested)
            return web.json_response(err, status=step.code, headers=headers)
        if isinstance(step, EmptyChoices):
            empty = {**_completion(str(body.get("model")), "", [], self.count), "choices": []}
            return web.json_response(empty)
        if isinstance(step, Malformed):
            return web.Response(
                status=200, body=b'{"choices": [ not json', content_type="application/json"
            )
        if not self._authorized(request):
            return web.json_response(_error_body("invalid api key", 401), status=401)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return web.json_response(_error_body("messages is required", 400), status=400)
        model = body.get("model")
        if model not in self.models:
            msg = f"The model `{model}` does not exist."
            return web.json_response(_error_body(msg, 404), status=404)
        messages = body["messages"]
        text = step.text if isinstance(step, Reply) else self.answer(messages, model)
        return web.json_response(_completion(model, text, messages, self.count))


class OpenAIServer:
    """An OpenAI-protocol server on 127.0.0.1 (ephemeral port), served from a background thread.

    Use as a context manager::

        with OpenAIServer(models=["m"], latency=0.05) as server:
            server.script([Status(500), Reply("ok")])
            ... talk to server.base_url ...
            assert server.max_in_flight <= 8
    """

    def __init__(
        self,
        models: Sequence[str] = ("m",),
        answer: Answer | None = None,
        latency: float = 0.0,
        api_key: str | None = None,
    ) -> None:
        self._app = _App(models, answer, latency, api_key)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        """Root URL without `/v1`, like a vLLM `--host/--port` pair gives."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def records(self) -> list[Record]:
        """A snapshot of every request received so far (GETs and POSTs)."""
        with self._app.lock:
            return list(self._app.records)

    @property
    def requests(self) -> list[Any]:
        """A snapshot of the bodies of the chat requests received so far, in arrival order."""
        return [r.body for r in self.records if r.path == "/v1/chat/completions"]

    @property
    def max_in_flight(self) -> int:
        """The largest number of requests the server was handling at the same time."""
        with self._app.lock:
            return self._app.max_in_flight

    @property
    def in_flight(self) -> int:
        """How many requests the server is handling right now."""
        with self._app.lock:
            return self._app.in_flight

    def script(self, steps: Iterable[Step]) -> None:
        """Queue behaviours for the next requests (in arrival order) before the default answer."""
        with self._app.lock:
            self._app.steps.extend(steps)

    def on_prompt(self, text: str, step: Step) -> None:
        """Answer every request whose messages contain `text` with `step` (before the script)."""
        with self._app.lock:
            self._app.prompt_steps.append((text, step))

    def chat_records(self) -> list[Record]:
        """The chat requests received so far, in arrival order, with their times."""
        return [r for r in self.records if r.path == "/v1/chat/completions"]

    def start(self) -> OpenAIServer:
        self._thread = threading.Thread(target=self._serve, name="openai-test-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the test server did not start within 10 s")
        if self._startup_error is not None:
            raise RuntimeError("the test server failed to start") from self._startup_error
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
        with contextlib.suppress(Exception):
            future.result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._startup())
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _startup(self) -> None:
        # handler_cancellation: a client that gives up (timeout, cancelled window) ends the
        # handler, so `in_flight` counts what the client really has outstanding.
        self._runner = web.AppRunner(
            self._app.build(), access_log=None, shutdown_timeout=0.5, handler_cancellation=True
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def closed_port_url() -> str:
    """The URL of a loopback port that nothing listens on (bound, then closed): refuses at once."""
    return f"http://127.0.0.1:{free_port()}"


# --- standalone, multi-process mode (for perf/) ---------------------------------------------


def _reuseport_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    return sock


def _worker(port: int, models: list[str], latency: float, answer: Answer, ready: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)  # clients hanging up are normal here

    async def main() -> None:
        app = _App(models, answer, latency, api_key=None, record=False)
        runner = web.AppRunner(
            app.build(), access_log=None, shutdown_timeout=0.5, handler_cancellation=True
        )
        await runner.setup()
        sock = _reuseport_socket(port)
        site = web.SockSite(runner, sock, backlog=1024)
        await site.start()
        ready.release()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())


def serve_model(
    port: int,
    latency: float,
    models: list[str],
    answer: Answer,
    *,
    load_seconds: float,
    wake_seconds: float,
    crash_after: int | None,
    crash_marker: str | None,
) -> None:
    """One process, one event loop: a stand-in for a vLLM server started by a model host."""
    print(f"loading {', '.join(models)} for {load_seconds:g} s", flush=True, file=sys.stderr)
    time.sleep(load_seconds)
    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)
    app = _App(models, answer, latency, api_key=None, record=False)
    app.load_seconds, app.wake_seconds = load_seconds, wake_seconds
    app.crash_after, app.crash_marker = crash_after, crash_marker

    async def main() -> None:
        runner = web.AppRunner(
            app.build(), access_log=None, shutdown_timeout=0.5, handler_cancellation=True
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        print(f"READY http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
        print("stopping", flush=True, file=sys.stderr)
        await runner.cleanup()

    asyncio.run(main())


def _echo_answer(messages: Sequence[dict[str, Any]], model: str) -> str:
    """A cheap answer for benchmarks: the server must not spend CPU on content."""
    return "A"


def serve_forever(
    port: int, latency: float, workers: int, models: list[str], answer: Answer = _echo_answer
) -> None:
    """Fork `workers` processes sharing `port` (0 = pick one); print READY; stop on SIGTERM/INT."""
    # The parent holds a bound (not listening) SO_REUSEPORT socket: it reserves the port number
    # that the workers then join, and never receives connections itself.
    anchor = _reuseport_socket(port)
    port = anchor.getsockname()[1]
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Semaphore(0)
    procs = [
        ctx.Process(target=_worker, args=(port, models, latency, answer, ready), daemon=True)
        for _ in range(workers)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        if not ready.acquire(timeout=20):
            raise RuntimeError("a server worker did not start")
    print(f"READY http://127.0.0.1:{port}", flush=True)

    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    while not stopping.is_set() and all(p.is_alive() for p in procs):
        stopping.wait(0.2)
    for proc in procs:
        if proc.is_alive() and proc.pid is not None:
            os.kill(proc.pid, signal.SIGTERM)
    for proc in procs:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
    anchor.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", action="append", dest="models")
    parser.add_argument(
        "--answers",
        choices=["echo", "fake"],
        default="echo",
        help="echo: a cheap constant (throughput benchmarks); fake: the fake backend's answers",
    )
    parser.add_argument("--load-seconds", type=float, default=0.0)
    parser.add_argument("--wake-seconds", type=float, default=0.2)
    parser.add_argument("--crash-after", type=int, default=None)
    parser.add_argument("--crash-marker", default=None)
    args = parser.parse_args(argv)
    answer = _default_answer if args.answers == "fake" else _echo_answer
    if args.workers == 1:
        serve_model(
            args.port,
            args.latency,
            args.models or ["m"],
            answer,
            load_seconds=args.load_seconds,
            wake_seconds=args.wake_seconds,
            crash_after=args.crash_after,
            crash_marker=args.crash_marker,
        )
        return
    serve_forever(args.port, args.latency, args.workers, args.models or ["m"], answer)


if __name__ == "__main__":
    main()
