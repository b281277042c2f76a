"""`ChatClient` for any OpenAI-compatible server (vLLM in production), on one aiohttp session.

Why aiohttp and not httpx: throughput is a hard requirement (keep the GPU server saturated with
`in_flight` requests), and httpx's connection pool does not scale to 64 in flight on one event
loop. Measured on the 2-core machine against the fake server of `tests/support` (fixed 200 ms
latency, 2 server processes, 8-10 s worth of requests, no warm-up, ratio = achieved / ideal):

    in_flight  ideal   httpx, 1 pool   httpx, 4 pools   aiohttp, 1 session   + uvloop
    32         160/s   146 (0.92)      146 (0.91)       153-155 (0.96-0.97)  0.96-0.97
    64         320/s    47 (0.15)      280 (0.88)       302-307 (0.94-0.96)  0.95

One `aiohttp.ClientSession` with `TCPConnector(limit=in_flight)` is the simplest design that
meets the target; uvloop brought nothing measurable (the remaining ~3 % are per-request
loopback syscalls and the first wave's connection set-up), so it is not a dependency. The
end-to-end numbers, driven through `in_window`, are in `perf/README.md`.

Failure semantics (see `biasbench.errors`): connection errors, timeouts, 5xx and 429 are
retried with exponential backoff and jitter; a `Retry-After` (seconds or HTTP date) replaces the
backoff, capped at the request timeout. When the server has been unreachable for
`unreachable_after` seconds in a row (shared by all requests of this client, so 64 stuck
requests fail together rather than one by one), `LLMUnreachable` (critical) is raised:
connection errors are retried by time, never by count, so a server restarting mid-task is
waited out. Other 4xx raise
`LLMResponseError` at once; 5xx, 429 and 2xx bodies that are not a completion (malformed JSON)
do after the retries. An error body naming CUDA out of memory raises `LLMOutOfMemory`
(critical) at once, whatever its status. The API key is sent as a bearer token and kept out of
logs and exception messages.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from biasbench.errors import (
    InvalidConfig,
    LLMModelNotServed,
    LLMOutOfMemory,
    LLMResponseError,
    LLMUnreachable,
)
from biasbench.llm.base import Message, Usage
from biasbench.llm.server_errors import error_detail, is_out_of_memory

log = logging.getLogger(__name__)

#: `probe()` gives up (LLMUnreachable) after this many seconds in total, whatever the timeouts.
PROBE_BUDGET = 15.0
#: Attempts `probe()` makes on connection errors before declaring the server unreachable.
PROBE_ATTEMPTS = 4
#: Idle pooled connections are dropped before uvicorn's (vLLM's) 5 s keep-alive closes them,
#: so a request rarely lands on a connection the server has just hung up.
KEEPALIVE_TIMEOUT = 4.0

_TRANSPORT_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)


def normalize_base_url(base_url: str) -> str:
    """`http://h:8000`, `http://h:8000/` and `http://h:8000/v1` all name the same server root."""
    root = base_url.strip().rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    if not root.startswith(("http://", "https://")):
        raise InvalidConfig("base_url", f"must start with http:// or https://, got {base_url!r}")
    return root


def _retry_after(headers: Any) -> float | None:
    """The `Retry-After` header in seconds from now: either form of RFC 9110, delay-seconds or
    an HTTP-date (a date in the past means "now"); None when absent or unreadable."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 850 / asctime forms carry no zone: HTTP dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class _Retryable(Exception):
    """Internal: an HTTP answer worth retrying (5xx, 429, a 2xx body that is not a completion)."""

    def __init__(self, message: str, status: int, retry_after: float | None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class OpenAICompatClient:
    """Chat with one model of an OpenAI-compatible server, `in_flight` requests at a time.

    Bind it to one event loop: the aiohttp session is created on first use and belongs to the
    loop that was running then. Close it with `aclose()` (or use `async with`).
    """

    def __init__(
        self,
        *,
        base_url: str,
        model_name: str,
        api_key: str | None = None,
        in_flight: int,
        request_timeout: float = 600,
        connect_timeout: float = 5,
        max_retries: int = 6,
        backoff_base: float = 0.5,
        backoff_max: float = 30,
        unreachable_after: float = 90,
    ) -> None:
        if in_flight < 1:
            raise InvalidConfig("in_flight", f"must be at least 1, got {in_flight}")
        if max_retries < 0:
            raise InvalidConfig("max_retries", f"must not be negative, got {max_retries}")
        self.base_url = normalize_base_url(base_url)
        self.model_name = model_name
        self.in_flight = in_flight
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.unreachable_after = unreachable_after
        self._api_key = api_key
        self._chat_url = f"{self.base_url}/v1/chat/completions"
        self._models_url = f"{self.base_url}/v1/models"
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None
        self._failing_since: float | None = None  # start of the current run of transport errors
        self.usage = Usage()

    def __repr__(self) -> str:
        return f"OpenAICompatClient(base_url={self.base_url!r}, model_name={self.model_name!r})"

    async def __aenter__(self) -> OpenAICompatClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- ChatClient -------------------------------------------------------------------------

    async def probe(self) -> None:
        """Check, within `PROBE_BUDGET` seconds, that the server is up and serves our model."""
        try:
            async with asyncio.timeout(PROBE_BUDGET):
                served = await self._served_models()
        except TimeoutError as exc:
            raise LLMUnreachable(
                f"LLM server at {self.base_url} did not answer GET /v1/models "
                f"within {PROBE_BUDGET:g} s"
            ) from exc
        if self.model_name not in served:
            raise LLMModelNotServed(
                f"model {self.model_name!r} is not served by {self.base_url}; "
                f"served models: {', '.join(served) or '(none)'}"
            )

    async def chat(self, messages: Sequence[Message], *, max_tokens: int) -> str:
        """POST one chat completion at temperature 0; transient failures are retried inside."""
        payload = json.dumps(
            {
                "model": self.model_name,
                "messages": list(messages),
                "max_tokens": max_tokens,
                "temperature": 0,
            }
        ).encode()
        attempt = 0
        while True:
            try:
                return await self._chat_once(payload)
            except _TRANSPORT_ERRORS as exc:
                reason = self._transport_failure(exc)
                # By time, not by count: a server restarting for a minute (vLLM reloading a
                # model) is waited out; one that stays away fails every request together.
                if self._unreachable_for() >= self.unreachable_after:
                    raise LLMUnreachable(
                        f"LLM server at {self.base_url} unreachable after {attempt + 1} "
                        f"attempt(s): {reason}"
                    ) from exc
                delay = min(self._backoff(attempt), self._until_unreachable())
            except _Retryable as exc:
                if attempt >= self.max_retries:
                    raise LLMResponseError(
                        f"{exc} (gave up after {attempt + 1} attempts)", exc.status
                    ) from None
                reason = str(exc)
                delay = self._backoff(attempt, exc.retry_after)
            attempt += 1
            log.warning(
                "LLM request failed (%s); retry %d/%d in %.1f s",
                reason,
                attempt,
                self.max_retries,
                delay,
            )
            await asyncio.sleep(delay)

    async def aclose(self) -> None:
        """Close the pooled connections; the client may be used again afterwards (new pool)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # --- one attempt ------------------------------------------------------------------------

    async def _chat_once(self, payload: bytes) -> str:
        session, slots = self._ensure_session()
        async with (
            slots,
            session.post(self._chat_url, data=payload, headers=self._headers(json_body=True)) as r,
        ):
            body = await r.read()
            status = r.status
            retry_after = _retry_after(r.headers)
        self._failing_since = None  # the server answered: it is reachable
        self._check_status(status, body, retry_after, "POST /v1/chat/completions")
        return self._content(body, status)

    async def _served_models(self) -> list[str]:
        session, _ = self._ensure_session()
        timeout = aiohttp.ClientTimeout(
            total=self.connect_timeout + 5, sock_connect=self.connect_timeout
        )
        attempt = 0
        while True:
            try:
                async with session.get(
                    self._models_url, headers=self._headers(), timeout=timeout
                ) as r:
                    body = await r.read()
                    status = r.status
                    retry_after = _retry_after(r.headers)
                self._failing_since = None
                self._check_status(status, body, retry_after, "GET /v1/models")
                return self._model_ids(body, status)
            except _TRANSPORT_ERRORS as exc:
                reason = self._transport_failure(exc)
                if attempt + 1 >= PROBE_ATTEMPTS:
                    raise LLMUnreachable(
                        f"LLM server at {self.base_url} unreachable after {attempt + 1} "
                        f"attempt(s): {reason}"
                    ) from exc
                delay = min(self._backoff(attempt), 2.0)
            except _Retryable as exc:
                if attempt + 1 >= PROBE_ATTEMPTS:
                    raise LLMResponseError(str(exc), exc.status) from None
                delay = min(self._backoff(attempt, exc.retry_after), 2.0)
            attempt += 1
            await asyncio.sleep(delay)

    def _ensure_session(self) -> tuple[aiohttp.ClientSession, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.in_flight,
                limit_per_host=0,
                keepalive_timeout=KEEPALIVE_TIMEOUT,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=self.request_timeout, sock_connect=self.connect_timeout
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
                raise_for_status=False,
            )
            self._loop = loop
            self._slots = asyncio.Semaphore(self.in_flight)
        elif loop is not self._loop:
            raise RuntimeError(
                "OpenAICompatClient is bound to the event loop it was first used on; "
                "create one client per event loop"
            )
        assert self._slots is not None
        return self._session, self._slots

    def _headers(self, *, json_body: bool = False) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if json_body:
            headers["Content-Type"] = "application/json"
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    # --- classification ---------------------------------------------------------------------

    def _check_status(self, status: int, body: bytes, retry_after: float | None, what: str) -> None:
        if 200 <= status < 300:
            return
        message = self._redact(
            f"{what} on {self.base_url} returned HTTP {status}: {error_detail(body)}"
        )
        if is_out_of_memory(body):
            # Not retried: the same requests would fill the same GPU again, and every item of
            # the run would fail the same way; a human lowers batch_size or max_new_tokens.
            raise LLMOutOfMemory(message, status)
        if status == 429 or status >= 500:
            raise _Retryable(message, status, retry_after)
        raise LLMResponseError(message, status)

    def _content(self, body: bytes, status: int) -> str:
        """The assistant's text; an unusable 2xx body is retried (a proxy or server glitch)."""
        try:
            data = json.loads(body)
            content = data["choices"][0]["message"]["content"]
            if content is not None and not isinstance(content, str):
                raise TypeError("content is not text")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            excerpt = body[:200].decode("utf-8", "replace")
            raise _Retryable(
                self._redact(
                    f"POST /v1/chat/completions on {self.base_url} returned an unusable body "
                    f"({type(exc).__name__}): {excerpt!r}"
                ),
                status,
                None,
            ) from None
        self._count_usage(data.get("usage"))
        return content or ""

    def _count_usage(self, usage: Any) -> None:
        """Servers that report no (or odd) usage count as zero tokens: rates still count
        requests."""
        if isinstance(usage, dict):
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
            self.usage.add(
                prompt if isinstance(prompt, int) else 0,
                completion if isinstance(completion, int) else 0,
            )

    def _model_ids(self, body: bytes, status: int) -> list[str]:
        try:
            data = json.loads(body)
            return [str(m["id"]) for m in data["data"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise LLMResponseError(
                f"GET /v1/models on {self.base_url} returned an unusable body "
                f"({type(exc).__name__})",
                status,
            ) from None

    def _transport_failure(self, exc: BaseException) -> str:
        """Start (or continue) the unreachable clock; a short reason for messages and logs."""
        if self._failing_since is None:
            self._failing_since = time.monotonic()
        kind = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
        detail = str(exc)
        return self._redact(f"{kind}: {detail}" if detail else kind)

    def _unreachable_for(self) -> float:
        if self._failing_since is None:
            return 0.0
        return time.monotonic() - self._failing_since

    def _until_unreachable(self) -> float:
        """Seconds left before the unreachable deadline (so the last retry lands on it)."""
        return max(0.0, self.unreachable_after - self._unreachable_for())

    def _backoff(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            # The server knows when it can take work again; only a wait longer than a request
            # may take is cut short (it would look like a hang, and the server may be wrong).
            return min(retry_after, self.request_timeout)
        ceiling = min(self.backoff_max, self.backoff_base * 2**attempt)
        return random.uniform(ceiling / 2, ceiling)  # jitter: spread retries of a full window

    def _redact(self, text: str) -> str:
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return text
