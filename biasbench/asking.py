"""Ask one question until the answer parses: the attempt loop shared by attrgen and benchmark."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from biasbench.errors import LLMResponseError, ParseError, is_critical
from biasbench.llm.base import ChatClient, Message
from biasbench.parsing import snippet

T = TypeVar("T")

PARSE: Final = "parse"
"""Failure kind: the model answered, but never in the expected shape."""
LLM_ERROR: Final = "llm_error"
"""Failure kind: the server gave no usable answer to this request (after the client's retries)."""


@dataclass(frozen=True, slots=True)
class Answered(Generic[T]):
    value: T
    raw: str
    attempt: int


@dataclass(frozen=True, slots=True)
class Unanswered:
    """No usable answer after every attempt; stored as a failure and asked again on resume."""

    kind: str  # PARSE | LLM_ERROR
    snippet: str
    attempt: int


async def ask(
    client: ChatClient,
    build_messages: Callable[[int], Sequence[Message]],
    parse: Callable[[str], T],
    *,
    max_attempts: int,
    max_tokens: int,
) -> Answered[T] | Unanswered:
    """Later attempts get a stricter prompt (build_messages receives the attempt number).

    An error that condemns this request only (a refused prompt; a 429, 5xx or unusable body that
    outlasted the client's retries) makes an Unanswered item: the run goes on, and the caller's
    error budget decides when too many items failed. Critical errors (unreachable server, GPU
    out of memory) propagate: they end the run."""
    failure = Unanswered(PARSE, "", 0)
    for attempt in range(1, max_attempts + 1):
        try:
            raw = await client.chat(build_messages(attempt), max_tokens=max_tokens)
        except LLMResponseError as exc:
            if is_critical(exc):
                raise
            # Not asked again here: the client has already retried what retrying may cure.
            return Unanswered(LLM_ERROR, snippet(str(exc)), attempt)
        try:
            return Answered(parse(raw), raw, attempt)
        except ParseError as exc:
            failure = Unanswered(PARSE, snippet(f"{exc} | {raw}"), attempt)
    return failure
