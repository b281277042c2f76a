"""Which LLM servers may receive the API key.

A task may name any `vllm_base_url`; the key must not follow it to a server the operator did not
allow (a typo, a colleague's box, a URL pasted from elsewhere). A server off the list is called
without the key rather than refused, so unauthenticated local servers stay usable."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def server_of(base_url: str) -> tuple[str, str, int, str] | None:
    """(scheme, host, port, path) naming one server root: `http://H:8000`, `http://h:8000/` and
    `http://h:8000/v1` are the same server. None for what is not an http(s) URL."""
    try:
        parts = urlsplit(base_url.strip())
        port = parts.port
    except ValueError:  # a malformed port or host
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    path = parts.path.rstrip("/").removesuffix("/v1").rstrip("/")
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme], path


def may_receive_key(base_url: str, allowed: Iterable[str]) -> bool:
    server = server_of(base_url)
    return server is not None and server in {server_of(url) for url in allowed}


def shown(base_url: str) -> str:
    """The URL for a log line: without any user:password part it may carry."""
    server = server_of(base_url)
    if server is None:
        return "(not an http(s) URL)"
    scheme, host, port, path = server
    return f"{scheme}://{host}:{port}{path}"
