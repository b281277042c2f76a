"""How an OpenAI-compatible server's error bodies read: a short detail for messages, and whether
the error is the GPU running out of memory.

vLLM answers errors as JSON in two shapes: `{"object": "error", "message": ..., "type": ...,
"code": ...}` (older releases) and `{"error": {"message": ..., "type": ..., "code": ...}}`
(newer ones, like OpenAI). A CUDA out-of-memory in the engine comes back as a 500 (sometimes a
400) whose `type` names the exception class (`OutOfMemoryError`) or whose `message` carries
torch's text ("CUDA out of memory. Tried to allocate ...")."""

from __future__ import annotations

import json
from typing import Any, Final

# torch.OutOfMemoryError and its alias torch.cuda.OutOfMemoryError, however the server names them.
_OOM_TYPES: Final = frozenset({"outofmemoryerror", "torch.outofmemoryerror"})
_OOM_TEXTS: Final = ("cuda out of memory", "outofmemoryerror")


def error_object(body: bytes) -> dict[str, Any] | None:
    """The error object of either shape, or None when the body is not such JSON."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    error = data.get("error", data)
    return error if isinstance(error, dict) else None


def error_detail(body: bytes) -> str:
    """A short, readable excerpt of an error body (its `message` where there is one)."""
    error = error_object(body)
    if error is not None and isinstance(error.get("message"), str):
        return str(error["message"])[:300]
    return body.decode("utf-8", "replace")[:300]


def is_out_of_memory(body: bytes) -> bool:
    """True when the error object says the GPU ran out of memory (by type, or torch's text)."""
    error = error_object(body)
    if error is None:
        return False
    kind = str(error.get("type") or "").lower()
    message = str(error.get("message") or "").lower()
    return kind.rsplit(".", 1)[-1] in _OOM_TYPES or any(text in message for text in _OOM_TEXTS)
