"""The one interface every LLM backend offers to the task flows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypedDict


class Message(TypedDict):
    """One chat message in the OpenAI format."""

    role: Literal["system", "user", "assistant"]
    content: str


@dataclass
class Usage:
    """Tokens the server reported (the OpenAI `usage` field), summed over a client's life: the
    task's rate records take the difference between two intervals."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens


class ChatClient(Protocol):
    """An LLM that answers chat prompts; temperature is always 0 (reproducible runs)."""

    model_name: str
    usage: Usage

    async def probe(self) -> None:
        """Fail fast: raise LLMUnreachable / LLMModelNotServed before any real work starts."""
        ...

    async def chat(self, messages: Sequence[Message], *, max_tokens: int) -> str:
        """Return the assistant's text. Transient errors are retried inside; raises LLMError."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
