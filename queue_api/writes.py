"""The shim's changes to Prefect go through one queue: one write request at a time.

Why: the Prefect server on SQLite answers 503 ("database is locked") when write transactions
collide (SQLite has one writer; a transaction that read before another committed cannot become a
writer, and fails at once whatever the busy timeout). Its client retries a 503 up to 5 times with
backoff: under 50 concurrent clients that made a 34 s tail, and 2-3 % of the requests still
failed (perf/README.md). Taking turns removes the collisions between the shim's own writes; reads
(GETs and the POST filters) stay concurrent.

What is left are collisions with the server's own writers (its event persister, triggers, worker
heartbeats): with one writer alone, 50 concurrent creates still had a 34 s tail (perf/README.md),
because the client backs off 2, 4, 8, 16 s. A write the server answers 503 (its transaction was
rolled back, nothing was written) is therefore sent again within its turn after a short pause
(for `RETRY_SECONDS`), before the next write goes; only if that fails too does the Prefect client's
own backoff take over.

The turn is taken per HTTP request, below the Prefect client's retries, so that a retry's backoff
never holds the queue. A request that waits longer than `max_wait` for its turn raises
`WritesBusy`, which the app answers with a 503 and Retry-After: the shim says it is full instead
of letting every client wait on."""

from __future__ import annotations

import asyncio
import time

import httpx

from biasbench.queue.collisions import collision_pauses

# How long a write the server refused with a 503 (SQLite was locked by one of its own writers) is
# sent again within its turn (biasbench/queue/collisions.py).
RETRY_SECONDS = 3.0

# POST routes of the Prefect API that only read.
_READ_SUFFIXES = ("/filter", "/count", "/history", "/paginate")


class WritesBusy(Exception):
    """More writes are waiting than the shim can carry out within `max_wait`."""

    def __init__(self, waited: float) -> None:
        super().__init__(
            f"the queue is busy: this change waited {waited:.0f} s for its turn to be written "
            "to Prefect and was not made; try again in a few seconds"
        )


def is_write(request: httpx.Request) -> bool:
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return False
    return not (request.method == "POST" and request.url.path.endswith(_READ_SUFFIXES))


class OneWriterTransport(httpx.AsyncBaseTransport):
    """Passes reads straight on, and writes one at a time, in arrival order (asyncio.Lock is
    FIFO)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, max_wait: float) -> None:
        self.inner, self.max_wait = inner, max_wait
        self._turn = asyncio.Lock()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not is_write(request):
            return await self.inner.handle_async_request(request)
        began = time.monotonic()
        try:
            await asyncio.wait_for(self._turn.acquire(), self.max_wait)
        except TimeoutError:
            raise WritesBusy(time.monotonic() - began) from None
        try:
            response = await self._send(request)
            pauses = collision_pauses(RETRY_SECONDS)
            while response.status_code == 503 and (pause := next(pauses, None)) is not None:
                await asyncio.sleep(pause)
                response = await self._send(request)
            return response
        finally:
            self._turn.release()

    async def _send(self, request: httpx.Request) -> httpx.Response:
        """The answer read whole: the server has answered (committed) before the next write goes.
        The bytes are passed on as they came (still encoded, if they were)."""
        response = await self.inner.handle_async_request(request)
        try:
            body = b"".join([chunk async for chunk in response.stream])  # type: ignore[union-attr]
        finally:
            await response.aclose()
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=httpx.ByteStream(body),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


def one_writer_transport(*, max_wait: float, http2: bool = False) -> OneWriterTransport:
    """Over the transport the Prefect client would build itself (its pool limits and
    connection retries)."""
    inner = httpx.AsyncHTTPTransport(
        retries=3,
        http2=http2,
        limits=httpx.Limits(max_connections=16, max_keepalive_connections=8, keepalive_expiry=25),
    )
    return OneWriterTransport(inner, max_wait=max_wait)
