"""Ask one question until the answer parses: the attempt loop shared by attrgen and benchmark."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from biasbench.errors import LLMResponseError, ParseError
from biasbench.llm.base import ChatClient, Message
from biasbench.parsing import snippet

T = TypeVar("T")

# Status codes that condemn one prompt (e.g. longer than the context), not the server.
PROMPT_REJECTED = frozenset({400, 413, 422})


@dataclass(frozen=True, slots=True)
class Answered(Generic[T]):
    value: T
    raw: str
    attempt: int


@dataclass(frozen=True, slots=True)
class Unanswered:
    """No usable answer after every attempt; stored as a failure and asked again on resume."""

    kind: str  # "parse" | "llm_error"
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

    Server-level errors (unreachable, 5xx after the client's retries) propagate: they end the run;
    a prompt the server refuses becomes an Unanswered item."""
    failure = Unanswered("parse", "", 0)
    for attempt in range(1, max_attempts + 1):
        try:
            raw = await client.chat(build_messages(attempt), max_tokens=max_tokens)
        except LLMResponseError as exc:
            if exc.status_code not in PROMPT_REJECTED:
                raise
            return Unanswered("llm_error", snippet(str(exc)), attempt)
        try:
            return Answered(parse(raw), raw, attempt)
        except ParseError as exc:
            failure = Unanswered("parse", snippet(f"{exc} | {raw}"), attempt)
    return failure
