"""What every request must be before the API reads it: for one of this machine's host names
(no DNS rebinding), from no browser origin or an allowed one, and, when it changes something,
JSON or nothing at all (a cross-site form or text body is what a page can send without a CORS
preflight), of a bounded size. A pure ASGI middleware, so a refused body is never read whole."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("queue_api")

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class RequestGuard:
    def __init__(
        self, app: ASGIApp, *, hosts: Iterable[str], origins: Iterable[str], max_body: int
    ) -> None:
        self.app, self.max_body = app, max_body
        self.hosts = {h.lower() for h in hosts}
        self.origins = set(origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._refusal(scope, headers)
        if refusal is None and scope["method"] in MUTATING:
            body, refusal = await self._body(scope, headers, receive)
            receive = _replaying(body, receive)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope, headers: Headers) -> JSONResponse | None:
        host = headers.get("host", "")
        if _host_name(host) not in self.hosts:
            return _refuse(
                400, "the Host header names no host this API serves (see QUEUE_API_ALLOWED_HOSTS)"
            )
        origin = headers.get("origin")
        if (
            origin is not None
            and origin not in self.origins
            and origin != f"{scope['scheme']}://{host}"
        ):
            return _refuse(
                403, f"origin {origin[:100]!r} is not allowed (see QUEUE_API_CORS_ORIGINS)"
            )
        if scope["method"] not in MUTATING:
            return None
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
        if (media or has_body) and not (media == "application/json" or media.endswith("+json")):
            return _refuse(415, "content-type: send JSON (application/json), or no body at all")
        return None

    async def _body(
        self, scope: Scope, headers: Headers, receive: Receive
    ) -> tuple[bytes, JSONResponse | None]:
        """The whole body, or a refusal once it is known to be too big."""
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            return b"", self._too_big(scope, declared)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return b"", self._too_big(scope, f"more than {size}")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks), None

    def _too_big(self, scope: Scope, size: str) -> JSONResponse:
        log.warning(
            "refused %s %s: a body of %s bytes (QUEUE_API_MAX_BODY_BYTES=%s)",
            scope["method"], scope["path"], size[:30], self.max_body,
        )  # fmt: skip
        return _refuse(413, f"body: larger than {self.max_body:,} bytes")


def _host_name(host: str) -> str:
    """The name in a Host header, without its port: `[::1]:8765` → `[::1]`."""
    host = host.lower()
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _refuse(status: int, detail: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail})


def _replaying(body: bytes, server: Receive) -> Receive:
    """A receive that hands the app the body already read, then passes on what the server
    sends next (a disconnect)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await server()

    return receive
