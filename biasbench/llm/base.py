"""The one interface every LLM backend offers to the task flows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, TypedDict


class Message(TypedDict):
    """One chat message in the OpenAI format."""

    role: Literal["system", "user", "assistant"]
    content: str


class ChatClient(Protocol):
    """An LLM that answers chat prompts; temperature is always 0 (reproducible runs)."""

    model_name: str

    async def probe(self) -> None:
        """Fail fast: raise LLMUnreachable / LLMModelNotServed before any real work starts."""
        ...

    async def chat(self, messages: Sequence[Message], *, max_tokens: int) -> str:
        """Return the assistant's text. Transient errors are retried inside; raises LLMError."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
